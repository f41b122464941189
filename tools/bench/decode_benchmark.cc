// decode_benchmark: single-stream decode speed of the CPU backend next to the machine's memory
// bandwidth, both measured in the same run (so the ratio is meaningful on a shared, noisy machine).
//
//   decode_benchmark --model DIR [--prompt-len 16] [--steps 32] [--threads 0]
//
// Decode is memory bound: each step reads every weight once (the tied embedding once, as the LM
// head) and the KV cache of every position before it. The roofline is bandwidth / bytes-per-step;
// the report gives tokens/s and its fraction.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <numeric>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine/kv/block_pool.h"
#include "engine/model/checkpoint.h"
#include "engine/runner/command_line.h"
#include "tools/bench/bandwidth.h"
#include "tools/bench/compute_peak.h"

namespace vg::tools {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

int Run(int argc, char** argv) {
  static constexpr engine::FlagSpec kFlags[] = {
      {"model"}, {"prompt-len"}, {"steps"}, {"threads"}, {"kv-cache-dtype"}};
  auto cl = engine::CommandLine::Parse(argc, argv, kFlags);
  if (!cl.ok() || !cl->Has("model")) {
    std::cerr << "usage: decode_benchmark --model DIR [--prompt-len N] [--steps N] [--threads N] "
                 "[--kv-cache-dtype float32|bfloat16]\n";
    return 2;
  }
  auto prompt_len = cl->GetInt("prompt-len", 16, 1, 1 << 20);
  auto steps = cl->GetInt("steps", 32, 1, 1 << 20);
  auto threads_flag = cl->GetInt("threads", 0, 0, 1024);
  if (!prompt_len.ok() || !steps.ok() || !threads_flag.ok()) {
    std::cerr << "decode_benchmark: bad flag value\n";
    return 2;
  }
  const int threads = *threads_flag > 0 ? static_cast<int>(*threads_flag)
                                        : static_cast<int>(std::thread::hardware_concurrency());

  auto checkpoint = engine::Checkpoint::Open(*cl->GetString("model"), engine::MatrixLayout::kTiles);
  if (!checkpoint.ok()) {
    std::cerr << "decode_benchmark: " << checkpoint.status().message() << "\n";
    return 2;
  }
  const engine::ModelConfig& config = (*checkpoint)->config();
  if (*prompt_len + *steps > config.max_position_embeddings) {
    std::cerr << "decode_benchmark: prompt-len + steps exceeds the context\n";
    return 2;
  }
  auto kv_dtype = engine::ParseKvCacheDType(cl->GetString("kv-cache-dtype").value_or("float32"));
  if (!kv_dtype.ok()) {
    std::cerr << "decode_benchmark: " << kv_dtype.status().message() << "\n";
    return 2;
  }
  auto backend = engine::CpuBackend::Create(**checkpoint,
                                            {.num_threads = threads, .kv_cache_dtype = *kv_dtype});
  if (!backend.ok()) {
    std::cerr << "decode_benchmark: " << backend.status().message() << "\n";
    return 1;
  }
  const size_t weight_bytes = (*checkpoint)->WeightBytes();

  std::cout << absl::StrFormat("model: %s (%.2f GiB of weights), %d threads\n",
                               (*checkpoint)->dir().string(), weight_bytes / 1073741824.0, threads);
  const double bw_all = MeasureReadBandwidth(threads, size_t{1} << 30);
  const double bw_one = MeasureReadBandwidth(1, size_t{1} << 30);
  std::cout << absl::StrFormat(
      "memory read bandwidth: %.1f GB/s (%d threads), %.1f GB/s (1 thread)\n", bw_all / 1e9,
      threads, bw_one / 1e9);
  const FloatPeak peak = MeasureFloatPeak(threads);
  std::cout << absl::StrFormat("float32 multiply-add peak: %.1f GFLOP/s (%d threads, %s)\n",
                               peak.flops_per_s / 1e9, threads, peak.isa);

  auto pool = engine::BlockPool::Create((*backend)->num_blocks());
  std::vector<int32_t> blocks;
  const int64_t total = *prompt_len + *steps;
  while (static_cast<int64_t>(blocks.size()) * (*backend)->block_size() < total) {
    blocks.push_back(*pool->Allocate());
  }
  std::vector<int32_t> tokens(*prompt_len);
  for (int64_t i = 0; i < *prompt_len; ++i)
    tokens[i] = static_cast<int32_t>((i * 7919 + 3) % config.vocab_size);
  engine::Logits logits;
  engine::BatchPlan plan;
  plan.entries.push_back({.token_ids = tokens, .start_position = 0, .block_table = blocks});
  auto start = Clock::now();
  if (auto s = (*backend)->Forward(plan, &logits); !s.ok()) {
    std::cerr << "decode_benchmark: " << s.message() << "\n";
    return 1;
  }
  const double prefill_s = Seconds(Clock::now() - start);

  std::vector<double> step_seconds;
  int32_t position = static_cast<int32_t>(*prompt_len);
  std::vector<int32_t> next(1);
  for (int64_t step = 0; step < *steps; ++step) {
    next[0] = static_cast<int32_t>(std::max_element(logits.values.begin(), logits.values.end()) -
                                   logits.values.begin());
    plan.entries[0].token_ids = next;
    plan.entries[0].start_position = position++;
    start = Clock::now();
    if (auto s = (*backend)->Forward(plan, &logits); !s.ok()) {
      std::cerr << "decode_benchmark: " << s.message() << "\n";
      return 1;
    }
    step_seconds.push_back(Seconds(Clock::now() - start));
  }
  std::sort(step_seconds.begin(), step_seconds.end());
  const double median = step_seconds[step_seconds.size() / 2];
  const double tokens_per_s = 1.0 / median;
  // Bytes one step reads: every weight once, plus K and V (float32 or bfloat16) of every position
  // each layer sees (at the median step's position; sliding layers see at most their window).
  const int64_t median_position = *prompt_len + *steps / 2;
  double kv_bytes = 0;
  for (engine::LayerType type : config.layer_types) {
    const int64_t seen = type == engine::LayerType::kSlidingAttention
                             ? std::min<int64_t>(median_position + 1, config.sliding_window)
                             : median_position + 1;
    kv_bytes += 2.0 * (*kv_dtype == engine::DType::kF32 ? 4.0 : 2.0) *
                static_cast<double>(seen * config.num_key_value_heads * config.head_dim);
  }
  const double step_bytes = static_cast<double>(weight_bytes) + kv_bytes;
  const double roofline = bw_all / step_bytes;
  // Prefill arithmetic: every matrix product of every layer for each prompt token, attention
  // (q.K and the weighted V) over the positions each token sees, and the LM head for the last.
  const double hidden = static_cast<double>(config.hidden_size);
  const double q_width = static_cast<double>(config.num_attention_heads * config.head_dim);
  const double kv_width = static_cast<double>(config.num_key_value_heads * config.head_dim);
  const double layer_params = hidden * (2 * q_width + 2 * kv_width) +
                              3 * hidden * static_cast<double>(config.intermediate_size);
  const double n = static_cast<double>(*prompt_len);
  double attended = 0;  // sum over layers and tokens of positions seen
  for (engine::LayerType type : config.layer_types) {
    for (int64_t t = 0; t < *prompt_len; ++t) {
      attended += type == engine::LayerType::kSlidingAttention
                      ? static_cast<double>(std::min<int64_t>(t + 1, config.sliding_window))
                      : static_cast<double>(t + 1);
    }
  }
  const double prefill_flops =
      2 * layer_params * static_cast<double>(config.num_hidden_layers) * n +
      4 * q_width * attended + 2 * hidden * static_cast<double>(config.vocab_size);
  std::cout << absl::StrFormat(
      "prefill: %lld tokens in %.3f s (%.1f tokens/s); %.1f GFLOP/s = %.0f%% of the float32 "
      "peak\n",
      static_cast<long long>(*prompt_len), prefill_s, *prompt_len / prefill_s,
      prefill_flops / prefill_s / 1e9, 100.0 * prefill_flops / prefill_s / peak.flops_per_s);
  std::cout << absl::StrFormat(
      "decode: %lld steps, median %.1f ms/token = %.2f tokens/s; %.1f MB of KV cache read per "
      "step; effective bandwidth %.1f GB/s\n",
      static_cast<long long>(*steps), median * 1e3, tokens_per_s, kv_bytes / 1e6,
      step_bytes / median / 1e9);
  std::cout << absl::StrFormat(
      "roofline at %.1f GB/s: %.2f tokens/s; achieved %.0f%% of the roofline\n", bw_all / 1e9,
      roofline, 100.0 * tokens_per_s / roofline);
  return 0;
}

}  // namespace
}  // namespace vg::tools

int main(int argc, char** argv) { return vg::tools::Run(argc, argv); }
