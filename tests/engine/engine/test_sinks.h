// Test helpers for the engine: a sink that collects a request's events, a fake backend and its
// variant that samples "on its device".
#ifndef VG_TESTS_ENGINE_ENGINE_TEST_SINKS_H_
#define VG_TESTS_ENGINE_ENGINE_TEST_SINKS_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/request.h"
#include "engine/tokenizer/tokenizer.h"

namespace vg::engine::testing {

// Collects every event of one request; Wait() blocks until the final one.
class CollectingSink : public TokenSink {
 public:
  void OnEvent(TokenEvent event) override;

  struct Result {
    std::vector<int32_t> token_ids;
    std::vector<float> logprobs;
    std::vector<std::vector<TopLogprob>> top_logprobs;
    std::string text;
    FinishReason finish_reason = FinishReason::kLength;
    Usage usage;
    absl::Status status;
    RequestTimings timings;
    int events = 0;
  };
  Result Wait();
  bool finished();
  int events();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  Result result_;
  bool finished_ = false;
};

// A backend whose "KV cache" stores token ids: Forward writes each new token into its slot and the
// logits of a row are a pseudo-random function of every token at positions 0..p, read back through
// the block table. Wrong block tables, stale cached prefixes or unwritten slots change the output
// (or fail with INTERNAL), so identical outputs mean the engine kept the cache right.
class FakeBackend : public Backend {
 public:
  FakeBackend(int32_t num_blocks, int32_t block_size, int64_t vocab_size);

  absl::Status Forward(const BatchPlan& plan, Logits* logits) override;
  int32_t num_blocks() const override { return num_blocks_; }
  int32_t block_size() const override { return block_size_; }
  int64_t vocab_size() const override { return vocab_size_; }

  std::atomic<int> step_delay_ms{0};
  std::atomic<bool> fail{false};
  std::atomic<int64_t> forward_calls{0};
  std::atomic<int64_t> max_entries{0};
  std::function<void()> on_forward;  // runs at the start of every Forward (set before use)

 private:
  int32_t num_blocks_;
  int32_t block_size_;
  int64_t vocab_size_;
  std::vector<int32_t> slots_;
};

// A FakeBackend that samples on its "device" (Backend::ForwardAndSample): Forward, then the CPU
// reference of the contract (engine/sampling/row_sampler.h) on each row. `fail` fails
// ForwardAndSample as it fails Forward. Checks what backend.h asks of the engine: only kNone and
// kLast entries, one RowSampling per kLast entry (INVALID_ARGUMENT otherwise).
class DeviceSamplingFakeBackend : public FakeBackend {
 public:
  using FakeBackend::FakeBackend;

  bool samples_on_device() const override { return true; }
  absl::Status ForwardAndSample(const BatchPlan& plan, std::span<const RowSampling> rows,
                                std::vector<RowSample>* samples) override;

  std::atomic<int64_t> forward_and_sample_calls{0};
  std::atomic<int64_t> sampled_rows{0};
  std::atomic<int32_t> token_offset{0};  // added to every sampled token (a broken device)
};

// A clock that moves only when told to.
class FakeClock : public Clock {
 public:
  double Now() const override { return now_.load(); }
  void Advance(double seconds) { now_.store(now_.load() + seconds); }

 private:
  std::atomic<double> now_{1000.0};
};

// The committed 700-piece test tokenizer (tests/fixtures/tokenizers/gemma_bpe_700.model).
std::unique_ptr<Tokenizer> LoadTokenizer();

// BOS (2) then n - 1 ids in [10, 610), varied by salt.
std::vector<int32_t> Prompt(int32_t n, int32_t salt);

// A greedy request generating exactly max_new tokens (ignore_eos).
Request MakeRequest(const std::string& id, std::vector<int32_t> prompt, int32_t max_new);

// Submits every request (each must be accepted) and waits for all of them; results in order.
std::vector<CollectingSink::Result> RunAll(Engine& engine, const std::vector<Request>& requests);

}  // namespace vg::engine::testing

#endif  // VG_TESTS_ENGINE_ENGINE_TEST_SINKS_H_
