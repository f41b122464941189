#include "engine/backend/cpu/cpu_backend.h"

#include <utility>

#include "engine/backend/cpu/forward_pass.h"

namespace vg::engine {

class CpuBackend::Impl {
 public:
  explicit Impl(std::unique_ptr<cpu::ForwardPass> pass) : pass_(std::move(pass)) {}
  cpu::ForwardPass& pass() { return *pass_; }
  const cpu::ForwardPass& pass() const { return *pass_; }

 private:
  std::unique_ptr<cpu::ForwardPass> pass_;
};

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(const Checkpoint& checkpoint,
                                                               const CpuBackendOptions& options) {
  absl::StatusOr<std::unique_ptr<cpu::ForwardPass>> pass =
      cpu::ForwardPass::Create(checkpoint.config(), checkpoint.weights(), options);
  if (!pass.ok()) return pass.status();
  return std::unique_ptr<CpuBackend>(new CpuBackend(std::make_unique<Impl>(std::move(*pass))));
}

CpuBackend::CpuBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CpuBackend::~CpuBackend() = default;

absl::Status CpuBackend::Forward(const BatchPlan& plan, Logits* logits) {
  return impl_->pass().Forward(plan, logits);
}
int32_t CpuBackend::num_blocks() const { return impl_->pass().num_blocks(); }
int32_t CpuBackend::block_size() const { return impl_->pass().block_size(); }
int64_t CpuBackend::vocab_size() const { return impl_->pass().vocab_size(); }
size_t CpuBackend::KvCacheBytes() const { return impl_->pass().KvCacheBytes(); }

}  // namespace vg::engine
