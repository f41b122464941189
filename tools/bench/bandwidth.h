// MeasureReadBandwidth: the memory read bandwidth a benchmark reports next to its own numbers,
// measured in the same run so ratios stay meaningful on a shared, noisy machine.
//
// The probe must be bound by memory, not by instructions: with 16-byte loads one core issues too
// few loads to saturate its memory bandwidth (measured: 17 GB/s for two cores with SSE2 against
// 29 GB/s with AVX-512 loads on the same machine, and torch's own reductions reach ~28). So the
// summing loop is built for AVX-512 and AVX2 too and the widest one the CPU runs is used.
#ifndef VG_TOOLS_BENCH_BANDWIDTH_H_
#define VG_TOOLS_BENCH_BANDWIDTH_H_

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

namespace vg::tools {
namespace bandwidth_internal {

// Sums the 64-byte blocks [begin, end) of `data` into four accumulators of `Bytes`-wide vectors,
// so the loop is bound by memory, not by adds. Returns a value that depends on every byte.
#define VG_BANDWIDTH_SUM(NAME, BYTES, TARGET)                                        \
  TARGET inline uint64_t NAME(const unsigned char* data, size_t begin, size_t end) { \
    typedef uint64_t V __attribute__((vector_size(BYTES)));                          \
    constexpr size_t kPerBlock = 64 / (BYTES);                                       \
    V a = {}, b = {}, c = {}, d = {};                                                \
    for (size_t block = begin; block + 4 <= end; block += 4) {                       \
      const unsigned char* p = data + block * 64;                                    \
      for (size_t k = 0; k < kPerBlock; ++k) {                                       \
        V x0, x1, x2, x3;                                                            \
        std::memcpy(&x0, p + k * (BYTES), sizeof(V));                                \
        std::memcpy(&x1, p + 64 + k * (BYTES), sizeof(V));                           \
        std::memcpy(&x2, p + 128 + k * (BYTES), sizeof(V));                          \
        std::memcpy(&x3, p + 192 + k * (BYTES), sizeof(V));                          \
        a += x0;                                                                     \
        b += x1;                                                                     \
        c += x2;                                                                     \
        d += x3;                                                                     \
      }                                                                              \
    }                                                                                \
    const V s = a + b + c + d;                                                       \
    uint64_t out = 0;                                                                \
    for (size_t i = 0; i < sizeof(V) / 8; ++i) out ^= s[i];                          \
    return out;                                                                      \
  }

VG_BANDWIDTH_SUM(Sum16, 16, )
#if defined(__x86_64__)
VG_BANDWIDTH_SUM(Sum32, 32, __attribute__((target("avx2"))))
VG_BANDWIDTH_SUM(Sum64, 64, __attribute__((target("avx512f"))))
#endif
#undef VG_BANDWIDTH_SUM

using SumFn = uint64_t (*)(const unsigned char*, size_t, size_t);

inline SumFn WidestSum() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Sum64;
  if (__builtin_cpu_supports("avx2")) return Sum32;
#endif
  return Sum16;
}

// Anonymous memory advised into transparent huge pages (a plain vector where mmap fails).
class HugePageBuffer {
 public:
  explicit HugePageBuffer(size_t bytes) : bytes_(bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      fallback_.resize(bytes);
      data_ = fallback_.data();
      return;
    }
    madvise(p, bytes, MADV_HUGEPAGE);
    data_ = static_cast<unsigned char*>(p);
    mapped_ = true;
  }
  ~HugePageBuffer() {
    if (mapped_) munmap(data_, bytes_);
  }
  HugePageBuffer(const HugePageBuffer&) = delete;
  HugePageBuffer& operator=(const HugePageBuffer&) = delete;
  size_t size() const { return bytes_; }
  unsigned char* data() { return data_; }
  unsigned char& operator[](size_t i) { return data_[i]; }

 private:
  size_t bytes_;
  unsigned char* data_ = nullptr;
  bool mapped_ = false;
  std::vector<unsigned char> fallback_;
};

}  // namespace bandwidth_internal

// Best-of-5 read bandwidth in bytes/s over a buffer of `bytes` (much larger than the caches),
// with `threads` readers each summing one contiguous part.
inline double MeasureReadBandwidth(int threads, size_t bytes) {
  const bandwidth_internal::SumFn sum = bandwidth_internal::WidestSum();
  const size_t blocks = bytes / 64;
  // In transparent huge pages, like the CPU backend's weights (engine/model/safetensors.h): the
  // roofline is what the weights' own kind of memory allows.
  bandwidth_internal::HugePageBuffer buffer(blocks * 64);
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<unsigned char>(i * 131 + 7);
  std::vector<uint64_t> sinks(static_cast<size_t>(threads) * 8);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        const size_t begin = blocks * t / threads, end = blocks * (t + 1) / threads;
        sinks[static_cast<size_t>(t) * 8] = sum(buffer.data(), begin, end);
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
