// Generator: one sequence at a time, in process, from a checkpoint directory.
//
// The offline path behind `vaultgemma-run` (the counterpart of `transformers run`): it opens the
// checkpoint, the tokenizer and the CPU backend, prefills the prompt into paged KV blocks and
// decodes until an EOS id, `max_new_tokens` or the end of the context. The batching engine
// (engine/engine.h) serves many sequences over the same pieces; this class stays the simplest
// correct use of them and the reference the engine is compared against.
//
// Thread-safety: one Generate call at a time.
#ifndef VG_ENGINE_RUNNER_GENERATOR_H_
#define VG_ENGINE_RUNNER_GENERATOR_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/kv/block_pool.h"
#include "engine/model/checkpoint.h"
#include "engine/request.h"
#include "engine/sampling/sampler.h"
#include "engine/tokenizer/tokenizer.h"

namespace vg::engine {

struct GeneratorOptions {
  int num_threads = 0;  // 0 = one per hardware thread
};

struct GenerateOptions {
  int32_t max_new_tokens = 64;
  SamplingParams sampling;
};

struct GenerationResult {
  std::vector<int32_t> prompt_token_ids;
  std::vector<int32_t> token_ids;  // generated ids, the EOS that ended generation included
  std::vector<float> logprobs;     // log-softmax of each generated id under the soft-capped logits
  FinishReason finish_reason = FinishReason::kLength;  // kLength or kEos
};

class Generator {
 public:
  // Opens `model_dir` (a checkpoint directory holding config.json, the safetensors weights and
  // tokenizer.model). NOT_FOUND / INVALID_ARGUMENT from the loaders, naming the file at fault.
  static absl::StatusOr<std::unique_ptr<Generator>> Create(const std::filesystem::path& model_dir,
                                                           const GeneratorOptions& options);

  const ModelConfig& config() const { return checkpoint_->config(); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  int64_t context_length() const { return checkpoint_->config().max_position_embeddings; }

  // Checks a prompt can run: INVALID_ARGUMENT when it is empty, has ids outside the vocabulary,
  // or leaves no room in the context for a single new token.
  absl::Status ValidatePrompt(const std::vector<int32_t>& prompt_ids) const;

  // Generates from `prompt_ids` (used as given: add BOS with the tokenizer before if wanted).
  // `on_token(id, logprob)` runs after each new token. INVALID_ARGUMENT for a bad prompt or bad
  // options; other errors come from the backend.
  absl::StatusOr<GenerationResult> Generate(
      const std::vector<int32_t>& prompt_ids, const GenerateOptions& options,
      const std::function<void(int32_t, float)>& on_token = nullptr);

 private:
  Generator() = default;

  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<CpuBackend> backend_;
};

// Emits text as tokens arrive without ever printing half a UTF-8 character: Push() returns the
// newly complete text. A byte-fallback character split across tokens decodes to U+FFFD until its
// last byte arrives, so a trailing U+FFFD is held back until more tokens (or Finish()) come.
class TextStreamer {
 public:
  explicit TextStreamer(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string Push(int32_t token_id);
  std::string Finish();

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;
  size_t emitted_ = 0;  // bytes of Decode(ids_) already returned
};

}  // namespace vg::engine

#endif  // VG_ENGINE_RUNNER_GENERATOR_H_
