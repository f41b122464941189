// Engine: the facade server/ and the tools use. Continuous batching of many requests over one set
// of weights and one paged KV-cache pool.
//
// Submit() hands a request to the engine loop thread, the only owner of the scheduler, the KV
// pool and all sequence state (../shared/DESIGN.md). Each step the loop takes new requests and
// cancellations from its intake queue, asks the scheduler for a BatchPlan (decodes first, then
// chunks of waiting prompts within a token budget), runs Backend::Forward once for all of them,
// samples, detokenizes, matches stops and pushes TokenEvents into each request's sink. A backend
// that samples on its device gets each row's sampling instead (Backend::ForwardAndSample,
// row_sampling.h) and returns the tokens; each request's Sampler still owns its random stream and
// penalty history, so both paths choose the same tokens up to the device's float rounding.
//
// Thread-safety: every public method may be called from any thread.
#ifndef VG_ENGINE_ENGINE_H_
#define VG_ENGINE_ENGINE_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/clock.h"
#include "engine/model/config.h"
#include "engine/model/dtype.h"
#include "engine/model/matrix_layout.h"
#include "engine/request.h"

namespace vg::engine {

class Backend;
class Checkpoint;
class Tokenizer;

// Makes the backend an engine runs on, from the checkpoint Engine::Create opened (which outlives
// the backend). The server's --device cuda passes the CUDA plugin's create_backend through one.
using BackendFactory =
    std::function<absl::StatusOr<std::unique_ptr<Backend>>(const Checkpoint& checkpoint)>;

// What one engine step computed, given to a StepObserver.
struct StepInfo {
  int32_t num_sequences = 0;  // sequences in the batch
  int32_t num_tokens = 0;     // tokens computed: prompt chunks plus one per decoding sequence
  int32_t num_prefill_sequences = 0;  // sequences whose chunk is (part of) their prompt
  double seconds = 0;                 // wall time of the step
  double forward_seconds = 0;         // of which inside the backend's forward pass
};

// Told about every step that ran a batch (metrics: the batch-size histogram). Called on the engine
// loop thread, so it must be cheap, must not block and must not call into the Engine.
class StepObserver {
 public:
  virtual ~StepObserver() = default;
  virtual void OnStep(const StepInfo& step) = 0;
};

// The --kv-cache-dtype values: "float32" (also "auto", the default: exact) and "bfloat16" (half
// the KV memory and the bytes attention reads). INVALID_ARGUMENT names the accepted values.
absl::StatusOr<DType> ParseKvCacheDType(std::string_view name);

struct EngineOptions {
  std::filesystem::path model_dir;     // a checkpoint directory (resolve ids with ResolveModelPath)
  int num_threads = 0;                 // CPU backend compute threads; 0 = all cores
  int32_t block_size = 16;             // KV positions per block
  int64_t kv_cache_bytes = 0;          // KV pool budget; 0 = room for max_num_seqs full contexts
  DType kv_cache_dtype = DType::kF32;  // kF32 (exact) or kBF16 (half the KV memory)
  int32_t num_kv_blocks = 0;           // overrides kv_cache_bytes when > 0 (tests)
  int32_t max_num_seqs = 16;           // sequences per step
  int32_t max_batched_tokens = 512;    // tokens per step (prefill chunks + decodes)
  int32_t max_waiting =
      256;  // live requests beyond max_num_seqs; past it Submit is RESOURCE_EXHAUSTED
  bool enable_prefix_caching = true;
  const Clock* clock = nullptr;           // nullptr = Clock::Real(); must outlive the engine
  StepObserver* step_observer = nullptr;  // optional; must outlive the engine
  // Optional: the backend to run instead of the CPU backend. Create opens the checkpoint in
  // `checkpoint_layout` and calls the factory once; num_threads, kv_cache_bytes, kv_cache_dtype
  // and num_kv_blocks (CPU backend settings) are then ignored: the factory sizes its own KV pool,
  // and the engine takes num_blocks() and block_size() from the backend it returns. Unset: the
  // CPU backend over a tiled checkpoint, as always.
  BackendFactory backend_factory;
  // The matrix layout the factory's backend needs (the CUDA backend: kRowMajor).
  MatrixLayout checkpoint_layout = MatrixLayout::kRowMajor;
};

struct EngineStats {
  int32_t running = 0;
  int32_t waiting = 0;
  int32_t kv_blocks_total = 0;
  int32_t kv_blocks_used = 0;    // referenced by live sequences
  int32_t kv_blocks_cached = 0;  // free but holding reusable prefix blocks
  int64_t prompt_tokens_processed = 0;
  int64_t generation_tokens = 0;
  int64_t cached_prompt_tokens = 0;
  int64_t preemptions = 0;
  int64_t steps = 0;
  double last_step_seconds = 0;
  double total_step_seconds = 0;
};

class Engine {
 public:
  // Opens the checkpoint and tokenizer, creates the backend (options.backend_factory's, else the
  // CPU backend) and starts the loop thread. Errors from the loaders (NOT_FOUND, INVALID_ARGUMENT
  // naming the file) and from the backend factory, passed through.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  // For tests: an engine over a given backend (a fake) and tokenizer; both must outlive it.
  static absl::StatusOr<std::unique_ptr<Engine>> CreateForTest(const EngineOptions& options,
                                                               const ModelConfig& config,
                                                               Backend* backend,
                                                               const Tokenizer* tokenizer);

  virtual ~Engine() = default;  // aborts what is still running (Shutdown(false))

  // Queues a request; never blocks on the model. INVALID_ARGUMENT for a request that can never run
  // (empty prompt, ids outside the vocabulary, prompt at or beyond the context, bad sampling or
  // stopping values, top_logprobs outside 0..20), ALREADY_EXISTS for a live id, RESOURCE_EXHAUSTED
  // when max_waiting requests already wait, UNAVAILABLE after Shutdown. On error the sink is never
  // called; on success it receives events until one with `finished`.
  virtual absl::Status Submit(Request request, std::shared_ptr<TokenSink> sink) = 0;

  // Ends a request at the next step (finish reason kCancelled) and frees its blocks. Unknown or
  // finished ids are ignored.
  virtual void Cancel(const std::string& request_id) = 0;

  virtual EngineStats Stats() const = 0;

  // Stops accepting requests. With drain, waits for every admitted request to finish; without,
  // cancels them. Then stops the loop thread. Idempotent.
  virtual void Shutdown(bool drain) = 0;

  virtual const ModelConfig& config() const = 0;
  virtual const Tokenizer& tokenizer() const = 0;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_ENGINE_H_
