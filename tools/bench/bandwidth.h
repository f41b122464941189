// MeasureReadBandwidth: the memory read bandwidth a benchmark reports next to its own numbers,
// measured in the same run so ratios stay meaningful on a shared, noisy machine.
#ifndef VG_TOOLS_BENCH_BANDWIDTH_H_
#define VG_TOOLS_BENCH_BANDWIDTH_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <thread>
#include <vector>

namespace vg::tools {

// Best-of-N read bandwidth over a buffer much larger than the caches, `threads` readers. Sums
// 16-byte integer vectors into four accumulators so the loop is bound by memory, not by adds.
inline double MeasureReadBandwidth(int threads, size_t bytes) {
  typedef uint64_t U64x2 __attribute__((vector_size(16)));
  std::vector<U64x2> buffer(bytes / sizeof(U64x2));
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = U64x2{i, i * 0x9e3779b97f4a7c15ull};
  std::vector<uint64_t> sinks(static_cast<size_t>(threads) * 8);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        const size_t begin = buffer.size() * t / threads, end = buffer.size() * (t + 1) / threads;
        U64x2 a = {}, b = {}, c = {}, d = {};
        for (size_t i = begin; i + 4 <= end; i += 4) {
          a += buffer[i];
          b += buffer[i + 1];
          c += buffer[i + 2];
          d += buffer[i + 3];
        }
        const U64x2 sum = a + b + c + d;
        sinks[static_cast<size_t>(t) * 8] = sum[0] ^ sum[1];
      });
    }
    for (auto& w : workers) w.join();
    best = std::max(
        best, static_cast<double>(bytes) /
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  // Keep the sums alive so the reads cannot be optimised away.
  volatile uint64_t keep = std::accumulate(sinks.begin(), sinks.end(), uint64_t{0});
  (void)keep;
  return best;
}

}  // namespace vg::tools

#endif  // VG_TOOLS_BENCH_BANDWIDTH_H_
