// The plugin's exported entry point (plugin_api.h): a static table over cuda_backend.h.
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/cuda/plugin_api.h"

namespace vg::engine {
namespace {

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const Checkpoint& checkpoint,
                                                       const CudaBackendOptions& options) {
  auto backend = CudaBackend::Create(checkpoint, options);
  if (!backend.ok()) return backend.status();
  return std::unique_ptr<Backend>(*std::move(backend));
}

constexpr VgCudaPluginApi kApi = {
    .abi_version = kVgCudaPluginAbiVersion,
    .list_devices = &ListCudaDevices,
    .create_backend = &CreateBackend,
};

}  // namespace
}  // namespace vg::engine

extern "C" __attribute__((visibility("default"))) const vg::engine::VgCudaPluginApi*
VgCudaPluginGetApi() {
  return &vg::engine::kApi;
}
