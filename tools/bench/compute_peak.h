// MeasureFloatPeak: the float32 multiply-add throughput of this machine's cores in FLOP/s, the
// compute roofline that prefill and batched decode are reported against (measured in the same
// run, like MeasureReadBandwidth). This machine class has no BF16 arithmetic wider than float32
// (AVX512-BF16 and AMX absent), so BF16 weights are widened and multiplied in float32: this is
// also the machine's BF16 peak for our kernels. Where a CPU has native BF16 dot products, the
// number reported here understates the BF16 peak; say so next to any ratio.
//
// Twelve independent chains of fused multiply-adds on the widest vectors the CPU runs, with
// registers only (no memory operands), on every thread at once.
#ifndef VG_TOOLS_BENCH_COMPUTE_PEAK_H_
#define VG_TOOLS_BENCH_COMPUTE_PEAK_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace vg::tools {
namespace compute_peak_internal {

#define VG_FMA_CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

#if defined(__x86_64__)
__attribute__((target("avx512f"))) inline float Fma512(int64_t iterations) {
  const __m512 m = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
#define VG_DECLARE(i) __m512 a##i = _mm512_set1_ps(1.0f + (i)*1e-3f);
#define VG_STEP(i) a##i = _mm512_fmadd_ps(a##i, m, b);
#define VG_SUM(i) s = _mm512_add_ps(s, a##i);
  VG_FMA_CHAINS(VG_DECLARE)
  for (int64_t k = 0; k < iterations; ++k) {
    VG_FMA_CHAINS(VG_STEP)
  }
  __m512 s = _mm512_setzero_ps();
  VG_FMA_CHAINS(VG_SUM)
  return _mm512_reduce_add_ps(s);
#undef VG_DECLARE
#undef VG_STEP
#undef VG_SUM
}

__attribute__((target("avx2,fma"))) inline float Fma256(int64_t iterations) {
  const __m256 m = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
#define VG_DECLARE(i) __m256 a##i = _mm256_set1_ps(1.0f + (i)*1e-3f);
#define VG_STEP(i) a##i = _mm256_fmadd_ps(a##i, m, b);
#define VG_SUM(i) s = _mm256_add_ps(s, a##i);
  VG_FMA_CHAINS(VG_DECLARE)
  for (int64_t k = 0; k < iterations; ++k) {
    VG_FMA_CHAINS(VG_STEP)
  }
  __m256 s = _mm256_setzero_ps();
  VG_FMA_CHAINS(VG_SUM)
  float lanes[8];
  _mm256_storeu_ps(lanes, s);
  return lanes[0] + lanes[7];
#undef VG_DECLARE
#undef VG_STEP
#undef VG_SUM
}
#endif

#undef VG_FMA_CHAINS

}  // namespace compute_peak_internal

struct FloatPeak {
  double flops_per_s = 0;  // all threads together
  const char* isa = "";    // "avx512", "avx2" or "none" (0 when no FMA vectors exist)
};

// Best of 5 runs of about 0.1 s each with `threads` threads.
inline FloatPeak MeasureFloatPeak(int threads) {
  FloatPeak peak;
#if defined(__x86_64__)
  __builtin_cpu_init();
  float (*run)(int64_t) = nullptr;
  int lanes = 0;
  if (__builtin_cpu_supports("avx512f")) {
    run = compute_peak_internal::Fma512;
    lanes = 16;
    peak.isa = "avx512";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    run = compute_peak_internal::Fma256;
    lanes = 8;
    peak.isa = "avx2";
  }
  if (run == nullptr) {
    peak.isa = "none";
    return peak;
  }
  constexpr int64_t kIterations = 20'000'000;
  std::vector<float> sinks(static_cast<size_t>(threads) * 16);
  run(kIterations / 10);  // wake the wide units (and their clock) before timing
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] { sinks[static_cast<size_t>(t) * 16] = run(kIterations); });
    }
    for (auto& w : workers) w.join();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    peak.flops_per_s = std::max(
        peak.flops_per_s, 2.0 * 12 * lanes * static_cast<double>(kIterations) * threads / seconds);
  }
  volatile float keep = sinks[0];
  (void)keep;
#else
  (void)threads;
  peak.isa = "none";
#endif
  return peak;
}

}  // namespace vg::tools

#endif  // VG_TOOLS_BENCH_COMPUTE_PEAK_H_
