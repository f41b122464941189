// Microbenchmarks (Google Benchmark) of the CPU backend's kernels, with the machine's read
// bandwidth measured in the same run so that decode-shaped MatMuls report a share of it.
//
//   build/bench/kernel_benchmark [--benchmark_filter=MatMul] [--benchmark_min_time=0.5]
//
// Attention: one head over a paged KV cache, one query row at a time (decode) and four (prefill).
//
// MatMul weights: a set of BF16 matrices of VaultGemma 1B shapes, together larger than any cache,
// cycled through so every call streams its weights from memory, as a decode step does. The
// `pages` argument says where they live: 0 = anonymous memory in 4 KiB pages, 1 = anonymous memory
// advised into transparent huge pages (what the CPU backend does with its weight copy).
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/kv_cache.h"
#include "engine/backend/cpu/matmul_kernel.h"
#include "engine/backend/cpu/paged_attention.h"
#include "engine/backend/cpu/thread_pool.h"
#include "tools/bench/bandwidth.h"

namespace vg::tools {
namespace {

using engine::DType;
namespace cpu = engine::cpu;

constexpr int64_t kHidden = 1152;
constexpr int64_t kIntermediate = 6912;

// Anonymous memory, optionally advised into huge pages, filled with random BF16 values.
class WeightArena {
 public:
  WeightArena(size_t bytes, bool huge) : bytes_(bytes) {
    data_ = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data_ == MAP_FAILED) std::abort();
    madvise(data_, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    std::mt19937 rng(7);
    uint16_t* p = static_cast<uint16_t*>(data_);
    for (size_t i = 0; i < bytes / 2; ++i) {
      // Exponent near 1.0, random sign and mantissa: finite, never zero.
      p[i] = static_cast<uint16_t>(0x3f00 | (rng() & 0x80ff));
    }
  }
  ~WeightArena() { munmap(data_, bytes_); }
  const std::byte* data() const { return static_cast<const std::byte*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_;
  void* data_;
};

double MachineBandwidth() {
  static const double kBandwidth =
      MeasureReadBandwidth(static_cast<int>(std::thread::hardware_concurrency()), size_t{1} << 30);
  return kBandwidth;
}

cpu::ThreadPool& Pool(int threads) {
  static cpu::ThreadPool* one = new cpu::ThreadPool(1);
  static cpu::ThreadPool* all = new cpu::ThreadPool(0);
  return threads == 1 ? *one : *all;
}

// args: input rows, weight rows (out features), pages (0 = 4 KiB, 1 = huge), threads (0 = all).
void BM_MatMulBf16(benchmark::State& state) {
  const int64_t rows = state.range(0);
  const int64_t out_features = state.range(1);
  const bool huge = state.range(2) != 0;
  cpu::ThreadPool& pool = Pool(static_cast<int>(state.range(3)));
  const int64_t in_features = out_features == kHidden ? kIntermediate : kHidden;
  const size_t matrix_bytes = static_cast<size_t>(out_features * in_features * 2);
  const size_t copies = std::max<size_t>(2, (512u << 20) / matrix_bytes);
  WeightArena arena(copies * matrix_bytes, huge);
  std::vector<float> x(rows * in_features), out(rows * out_features);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& v : x) v = dist(rng);
  size_t next = 0;
  for (auto _ : state) {
    const cpu::WeightMatrix w{DType::kBF16, arena.data() + next * matrix_bytes, out_features,
                              in_features};
    cpu::MatMul(pool, x.data(), rows, w, nullptr, out.data());
    benchmark::DoNotOptimize(out.data());
    next = (next + 1) % copies;
  }
  const double bytes = static_cast<double>(state.iterations()) * static_cast<double>(matrix_bytes);
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["GFLOPs"] = benchmark::Counter(
      2.0 * rows * in_features * out_features * static_cast<double>(state.iterations()) * 1e-9,
      benchmark::Counter::kIsRate);
  state.counters["bw_share"] =
      benchmark::Counter(bytes / MachineBandwidth(), benchmark::Counter::kIsRate);
  state.SetLabel(cpu::SelectedMatMulKernel().name);
}
BENCHMARK(BM_MatMulBf16)
    ->ArgNames({"rows", "out", "huge", "threads"})
    ->ArgsProduct({{1, 4, 16}, {kIntermediate, kHidden}, {0, 1}, {0}})
    ->Args({1, kIntermediate, 1, 1})
    ->Args({16, kIntermediate, 1, 1})
    ->Args({64, kIntermediate, 1, 1})
    ->UseRealTime();

// args: query rows per call (1 = decode; 4 = AttendHeads' prefill grouping), visible positions,
// KV dtype (0 = float32, 1 = bfloat16). VaultGemma 1B's head: dimension 256, one kv head here.
// Reports query-row x position pairs per second (each is a 256-long q.k and a 256-wide
// weighted V).
void BM_AttendHeads(benchmark::State& state) {
  const int64_t rows = state.range(0);
  const int64_t positions = state.range(1);
  const DType dtype = state.range(2) == 0 ? DType::kF32 : DType::kBF16;
  constexpr int64_t kHeadDim = 256;
  constexpr int32_t kBlock = 16;
  const int32_t blocks = static_cast<int32_t>((positions + kBlock - 1) / kBlock);
  auto cache = cpu::KvCache::Create(cpu::KvCacheShape{1, blocks, kBlock, 1, kHeadDim, dtype});
  if (!cache.ok()) std::abort();
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> k(kHeadDim), v(kHeadDim);
  std::vector<int32_t> table(blocks);
  for (int32_t b = 0; b < blocks; ++b) table[b] = blocks - 1 - b;  // not in memory order
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t d = 0; d < kHeadDim; ++d) k[d] = dist(rng), v[d] = dist(rng);
    (*cache)->Write(0, table[p / kBlock], static_cast<int32_t>(p % kBlock), k.data(), v.data());
  }
  std::vector<float> q(rows * kHeadDim), scores(rows * positions), out(rows * kHeadDim);
  for (float& x : q) x = dist(rng) * 0.1f;
  std::vector<cpu::AttentionQuery> queries(rows);
  for (int64_t r = 0; r < rows; ++r) {
    // Consecutive rows of a causal prefill ending at the last position.
    const int64_t hi = positions - rows + r;
    queries[r] = {&q[r * kHeadDim], 0, hi, &scores[r * positions], &out[r * kHeadDim]};
  }
  const cpu::AttentionParams params{0.0625f, 50.0f};
  for (auto _ : state) {
    cpu::AttendHeads(queries, (*cache)->Layer(0), table, 0, params);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["pairs"] = benchmark::Counter(
      static_cast<double>(rows * positions * state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(cpu::SelectedMatMulKernel().name);
}
BENCHMARK(BM_AttendHeads)
    ->ArgNames({"rows", "positions", "bf16"})
    ->ArgsProduct({{1, 4}, {512}, {0, 1}});

void BM_ReadBandwidth(benchmark::State& state) {
  for (auto _ : state) state.counters["GBps"] = MachineBandwidth() * 1e-9;
}
BENCHMARK(BM_ReadBandwidth)->Iterations(1);

}  // namespace
}  // namespace vg::tools

BENCHMARK_MAIN();
