// batch_benchmark: aggregate decode throughput of the engine at 1, 4, 8 and 16 concurrent streams,
// next to the memory bandwidth measured in the same run. Decode is memory bound, so a batch reads
// the weights once for all its streams: the ratio to one stream is what batching buys.
//
//   batch_benchmark --model DIR [--streams 1,4,8,16] [--prompt-len 16] [--new-tokens 32]
//                   [--device cpu|cuda|cuda:N] [--gpu-memory-utilization F]
//
// With --device cuda the engine runs on the CUDA plugin (build/lib/libvaultgemma_cuda.so, loaded
// as the server loads it) and no CPU bandwidth is measured: tests/gpu/run_device_checks.sh
// measures the device's and computes the roofline ratios.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/backend/cuda_plugin_loader.h"
#include "engine/engine.h"
#include "engine/runner/command_line.h"
#include "tools/bench/bandwidth.h"

namespace vg::tools {
namespace {

using engine::TokenEvent;

// Records when each token arrived; the benchmark only needs counts and times.
class TimingSink : public engine::TokenSink {
 public:
  void OnEvent(TokenEvent event) override {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    for (size_t i = 0; i < event.token_ids.size(); ++i) times_.push_back(now);
    if (event.finished) {
      done_ = true;
      cv_.notify_all();
    }
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::vector<std::chrono::steady_clock::time_point> times_;  // one per token
};

// Records when each step ended and how long its forward pass took, to split a decode step's time
// between the backend and everything around it (scheduling, sampling, detokenizing, streaming).
class StepRecorder : public engine::StepObserver {
 public:
  void OnStep(const engine::StepInfo& step) override {
    std::lock_guard<std::mutex> lock(mu_);
    steps_.push_back({std::chrono::steady_clock::now(), step.forward_seconds});
  }
  // Sum of forward seconds of the steps that ended in (start, end].
  double ForwardSecondsIn(std::chrono::steady_clock::time_point start,
                          std::chrono::steady_clock::time_point end) {
    std::lock_guard<std::mutex> lock(mu_);
    double sum = 0;
    for (const auto& [at, forward] : steps_) sum += at > start && at <= end ? forward : 0;
    return sum;
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<std::chrono::steady_clock::time_point, double>> steps_;
};

int Run(int argc, char** argv) {
  static constexpr engine::FlagSpec kFlags[] = {{"model"},
                                                {"streams"},
                                                {"prompt-len"},
                                                {"new-tokens"},
                                                {"threads"},
                                                {"kv-cache-dtype"},
                                                {"device"},
                                                {"gpu-memory-utilization"},
                                                {"enforce-eager", false},
                                                {"deterministic", false}};
  auto cl = engine::CommandLine::Parse(argc, argv, kFlags);
  if (!cl.ok() || !cl->Has("model")) {
    std::cerr << "usage: batch_benchmark --model DIR [--streams 1,4,8,16] [--prompt-len N] "
                 "[--new-tokens N] [--threads N] [--kv-cache-dtype float32|bfloat16] "
                 "[--device cpu|cuda|cuda:N] [--gpu-memory-utilization F] [--enforce-eager] "
                 "[--deterministic]\n";
    return 2;
  }
  const std::string device = cl->GetString("device").value_or("cpu");
  auto cuda_index = engine::ParseDeviceFlag(device);
  if (!cuda_index.ok()) {
    std::cerr << "batch_benchmark: " << cuda_index.status().message() << "\n";
    return 2;
  }
  double gpu_fraction = 0.9;
  if (auto f = cl->GetString("gpu-memory-utilization"); f.has_value()) {
    auto parsed = engine::ParseGpuMemoryUtilization(*f);
    if (!parsed.ok()) {
      std::cerr << "batch_benchmark: " << parsed.status().message() << "\n";
      return 2;
    }
    gpu_fraction = *parsed;
  }

  auto streams = cl->Has("streams") ? cl->GetIntList("streams")
                                    : absl::StatusOr<std::vector<int32_t>>({1, 4, 8, 16});
  auto prompt_len = cl->GetInt("prompt-len", 16, 1, 1 << 16);
  auto new_tokens = cl->GetInt("new-tokens", 32, 2, 1 << 16);
  auto threads = cl->GetInt("threads", 0, 0, 1024);
  if (!streams.ok() || streams->empty() || !prompt_len.ok() || !new_tokens.ok() || !threads.ok()) {
    std::cerr << "batch_benchmark: bad flag value\n";
    return 2;
  }
  const int32_t max_streams = *std::max_element(streams->begin(), streams->end());
  const int64_t per_seq = *prompt_len + *new_tokens;
  auto kv_dtype = engine::ParseKvCacheDType(cl->GetString("kv-cache-dtype").value_or("float32"));
  if (!kv_dtype.ok()) {
    std::cerr << "batch_benchmark: " << kv_dtype.status().message() << "\n";
    return 2;
  }
  engine::EngineOptions options;
  options.kv_cache_dtype = *kv_dtype;
  options.model_dir = *cl->GetString("model");
  options.num_threads = static_cast<int>(*threads);
  options.max_num_seqs = max_streams;
  options.max_batched_tokens = std::max<int32_t>(512, max_streams);
  options.num_kv_blocks = static_cast<int32_t>(max_streams * ((per_seq + 15) / 16 + 1));
  options.enable_prefix_caching = false;  // every stream computes its own prompt
  if (*cuda_index >= 0) {
    auto factory =
        engine::MakeCudaBackendFactory({}, {.device_index = *cuda_index,
                                            .block_size = options.block_size,
                                            .gpu_memory_utilization = gpu_fraction,
                                            .max_num_blocks = options.num_kv_blocks,
                                            .max_step_tokens = options.max_batched_tokens,
                                            .max_num_seqs = options.max_num_seqs});
    if (!factory.ok()) {
      std::cerr << "batch_benchmark: --device " << device << ": " << factory.status().message()
                << "\n";
      return 2;
    }
    options.checkpoint_layout = engine::MatrixLayout::kRowMajor;
    options.backend_factory = *std::move(factory);
  }
  StepRecorder recorder;
  options.step_observer = &recorder;
  auto engine = engine::Engine::Create(options);
  if (!engine.ok()) {
    std::cerr << "batch_benchmark: " << engine.status().message() << "\n";
    return 2;
  }
  if (*cuda_index < 0) {
    const int hw = options.num_threads > 0 ? options.num_threads
                                           : static_cast<int>(std::thread::hardware_concurrency());
    std::cout << absl::StrFormat("memory read bandwidth: %.1f GB/s (%d threads)\n",
                                 MeasureReadBandwidth(hw, size_t{1} << 30) / 1e9, hw);
  } else {
    std::cout << "device: " << device << " (CUDA plugin)\n";
  }

  const int64_t vocab = (*engine)->config().vocab_size;
  double single = 0;
  double overhead = -1;
  int request_counter = 0;
  std::cout << "streams  decode tokens/s  per stream  ratio to 1 stream\n";
  for (int32_t n : *streams) {
    std::vector<std::shared_ptr<TimingSink>> sinks;
    for (int32_t i = 0; i < n; ++i) {
      engine::Request r;
      r.id = "bench-" + std::to_string(request_counter++);
      for (int64_t j = 0; j < *prompt_len; ++j) {
        r.prompt_token_ids.push_back(
            static_cast<int32_t>(4 + (j * 7919 + i * 104729) % (vocab - 4)));
      }
      r.stopping.max_new_tokens = static_cast<int32_t>(*new_tokens);
      r.stopping.ignore_eos = true;
      sinks.push_back(std::make_shared<TimingSink>());
      if (auto s = (*engine)->Submit(std::move(r), sinks.back()); !s.ok()) {
        std::cerr << "batch_benchmark: " << s.message() << "\n";
        return 1;
      }
    }
    for (auto& s : sinks) s->Wait();
    // Decode throughput in steady state: the window starts when the last stream got its first
    // token (every prompt is in) and ends with the last token; count the tokens inside it.
    auto start = sinks[0]->times_.front();
    auto end = sinks[0]->times_.back();
    for (auto& s : sinks) {
      start = std::max(start, s->times_.front());
      end = std::max(end, s->times_.back());
    }
    int64_t tokens = 0;
    for (auto& s : sinks) {
      for (const auto& t : s->times_) tokens += t > start ? 1 : 0;
    }
    const double seconds = std::chrono::duration<double>(end - start).count();
    const double rate = seconds > 0 ? static_cast<double>(tokens) / seconds : 0;
    if (single == 0) single = rate;
    std::cout << absl::StrFormat("%7d  %15.2f  %10.2f  %17.2fx\n", n, rate, rate / n,
                                 single > 0 ? rate / single : 0);
    if (n == 1 && seconds > 0) {
      // The token timestamps are taken in the sink (after sampling and detokenizing), so the
      // window holds whole steps; what is not forward pass is the engine's overhead.
      const double forward = recorder.ForwardSecondsIn(start, end);
      overhead = 1.0 - forward / seconds;
    }
  }
  (*engine)->Shutdown(true);
  if (overhead >= 0) {
    std::cout << absl::StrFormat(
        "engine overhead at 1 stream: %.1f%% of a decode step outside the forward pass "
        "(scheduling, sampling, detokenization, streaming)\n",
        100.0 * overhead);
  }
  return 0;
}

}  // namespace
}  // namespace vg::tools

int main(int argc, char** argv) { return vg::tools::Run(argc, argv); }
