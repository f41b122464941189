// Every CPU kernel against a plain scalar double-precision reference.
#include "engine/backend/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/backend/cpu/kv_cache.h"
#include "engine/backend/cpu/paged_attention.h"
#include "engine/model/matrix_layout.h"
#include "gtest/gtest.h"

namespace vg::engine::cpu {
namespace {

std::vector<float> RandomFloats(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

double HalfReference(uint16_t h) {
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  double mag;
  if (exp == 0x1f) {
    mag = mant ? NAN : INFINITY;
  } else {
    mag = exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
  }
  return (h & 0x8000) ? -mag : mag;
}

TEST(CpuBackendKernelsTest, HalfToFloatIsExactForAllBitPatterns) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const float got = HalfToFloat(static_cast<uint16_t>(bits));
    const double want = HalfReference(static_cast<uint16_t>(bits));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << bits;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << "bits 0x" << std::hex << bits;
      ASSERT_EQ(std::signbit(got), std::signbit(want)) << bits;
    }
  }
}

// A [rows, cols] matrix stored as `dtype` (row-major in `bytes`, tiled in `tiled`, which `view`
// points to), plus its exact values.
struct StoredMatrix {
  std::vector<std::byte> bytes;
  std::vector<std::byte> tiled;
  std::vector<double> values;
  WeightMatrix view;
};

StoredMatrix MakeMatrix(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  StoredMatrix m;
  const std::vector<float> src = RandomFloats(rows * cols, seed);
  m.bytes.resize(rows * cols * DTypeSize(dtype));
  m.values.resize(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(&m.bytes[i * 4], &src[i], 4);
      m.values[i] = src[i];
    } else if (dtype == DType::kBF16) {
      const uint16_t bits = FloatToBF16(src[i]);
      std::memcpy(&m.bytes[i * 2], &bits, 2);
      m.values[i] = BF16ToFloat(bits);
    } else {
      // Random finite halves in about [2^-10, 2): sign, exponent 5..15, any mantissa.
      std::mt19937 rng(seed + static_cast<uint32_t>(i));
      const uint16_t bits =
          static_cast<uint16_t>((rng() & 0x8000) | ((5 + rng() % 11) << 10) | (rng() & 0x3ff));
      std::memcpy(&m.bytes[i * 2], &bits, 2);
      m.values[i] = HalfReference(bits);
    }
  }
  m.tiled = m.bytes;
  RearrangeToTiles(dtype, rows, cols, m.tiled.data());
  m.view = WeightMatrix{dtype, m.tiled.data(), rows, cols};
  return m;
}

TEST(CpuBackendKernelsTest, WidenToFloatMatchesStoredValues) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    const StoredMatrix m = MakeMatrix(dtype, 3, 13, 5);
    std::vector<float> out(11);
    WidenToFloat(dtype, m.bytes.data(), 7, 11, out.data());
    for (int i = 0; i < 11; ++i) EXPECT_EQ(out[i], m.values[7 + i]);
  }
}

TEST(CpuBackendKernelsTest, DotMatchesReference) {
  for (int64_t n : {0, 1, 7, 8, 9, 31, 100}) {
    const auto a = RandomFloats(n, 1), b = RandomFloats(n, 2);
    double want = 0.0, mag = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      want += static_cast<double>(a[i]) * b[i];
      mag += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    // Tolerance: float accumulation of n products, relative to the sum of magnitudes.
    EXPECT_NEAR(Dot(a.data(), b.data(), n), want, 1e-6 * (mag + 1.0)) << n;
  }
}

// Tolerance for MatMul: the bound of recursive summation in float32, |got - want| <=
// (n + 1) * 2^-24 * sum_i |x_i w_i| + 1e-6 for n columns (each of the n additions and the bias
// rounds once). Every kernel this CPU can run is checked, on sizes that exercise full and short
// weight tiles, odd column counts (BF16 pairs), every row-block size up to two blocks of the
// widest kernel, and a row count past one L2 block of rows.
TEST(CpuBackendKernelsTest, MatMulMatchesReferenceForEveryKernelDtypeRowCountAndBias) {
  ThreadPool pool(3);
  ASSERT_FALSE(AvailableMatMulKernels().empty());
  EXPECT_STREQ(AvailableMatMulKernels().front().name, "baseline");
  for (const MatMulKernel& kernel : AvailableMatMulKernels()) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (int64_t rows : {1, 2, 3, 4, 5, 7, 9, 12, 13, 25}) {
        for (auto [out_f, in_f] : {std::pair<int64_t, int64_t>{1, 1},
                                   {5, 3},
                                   {13, 19},
                                   {29, 70},
                                   {32, 1},
                                   {32, 16},
                                   {45, 33},
                                   {64, 8},
                                   {70, 37}}) {
          for (bool with_bias : {false, true}) {
            const StoredMatrix w = MakeMatrix(dtype, out_f, in_f, 11 + out_f);
            const auto x = RandomFloats(rows * in_f, 3 + rows);
            const auto bias = RandomFloats(out_f, 9);
            std::vector<float> out(rows * out_f, -777.0f);
            MatMul(pool, x.data(), rows, w.view, with_bias ? bias.data() : nullptr, out.data(),
                   &kernel);
            for (int64_t r = 0; r < rows; ++r) {
              for (int64_t o = 0; o < out_f; ++o) {
                double want = with_bias ? bias[o] : 0.0, mag = 0.0;
                for (int64_t i = 0; i < in_f; ++i) {
                  want += x[r * in_f + i] * w.values[o * in_f + i];
                  mag += std::fabs(x[r * in_f + i] * w.values[o * in_f + i]);
                }
                ASSERT_NEAR(out[r * out_f + o], want, (in_f + 1) * 0x1p-24 * mag + 1e-6)
                    << kernel.name << " dtype " << static_cast<int>(dtype) << " rows " << rows
                    << " out " << out_f << " in " << in_f << " r " << r << " o " << o;
              }
            }
          }
        }
      }
    }
  }
}

TEST(CpuBackendKernelsTest, MatMulHandlesMoreRowsThanOneCacheBlock) {
  // Blocks hold at least 96 rows (kernels.cc): 200 rows span three.
  constexpr int64_t kRows = 200, kOut = 40, kIn = 2048;
  const StoredMatrix w = MakeMatrix(DType::kBF16, kOut, kIn, 5);
  const auto x = RandomFloats(kRows * kIn, 6);
  ThreadPool pool(2);
  for (const MatMulKernel& kernel : AvailableMatMulKernels()) {
    std::vector<float> out(kRows * kOut, -777.0f);
    MatMul(pool, x.data(), kRows, w.view, nullptr, out.data(), &kernel);
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t o = 0; o < kOut; ++o) {
        double want = 0.0, mag = 0.0;
        for (int64_t i = 0; i < kIn; ++i) {
          want += x[r * kIn + i] * w.values[o * kIn + i];
          mag += std::fabs(x[r * kIn + i] * w.values[o * kIn + i]);
        }
        ASSERT_NEAR(out[r * kOut + o], want, (kIn + 1) * 0x1p-24 * mag + 1e-6)
            << kernel.name << " r " << r;
      }
    }
  }
}

// Batch invariance: row r's outputs are bit-identical whatever the row count and thread count,
// for every kernel.
TEST(CpuBackendKernelsTest, MatMulIsBitIdenticalAcrossRowCountsAndThreads) {
  constexpr int64_t kOut = 87, kIn = 37, kRows = 27;  // two full tiles and a short one
  const StoredMatrix w = MakeMatrix(DType::kBF16, kOut, kIn, 4);
  const auto x = RandomFloats(kRows * kIn, 8);
  for (const MatMulKernel& kernel : AvailableMatMulKernels()) {
    ThreadPool one(1);
    std::vector<float> alone(kRows * kOut);
    for (int64_t row = 0; row < kRows; ++row) {
      MatMul(one, x.data() + row * kIn, 1, w.view, nullptr, alone.data() + row * kOut, &kernel);
    }
    for (int threads : {1, 2, 4, 7}) {
      ThreadPool pool(threads);
      for (int64_t rows : {2, 5, 13, 27}) {
        std::vector<float> batched(rows * kOut);
        MatMul(pool, x.data(), rows, w.view, nullptr, batched.data(), &kernel);
        for (int64_t i = 0; i < rows * kOut; ++i) {
          ASSERT_EQ(std::memcmp(&batched[i], &alone[i], sizeof(float)), 0)
              << kernel.name << ", " << threads << " threads, " << rows << " rows, row " << i / kOut
              << ", feature " << i % kOut;
        }
      }
    }
  }
}

// The recipe of matmul_kernel.h: every kernel with fused multiply-adds (AVX2 and AVX-512) sums
// each output in the same order, so they agree bit for bit (the baseline rounds each product).
TEST(CpuBackendKernelsTest, FusedMultiplyAddKernelsAgreeBitForBit) {
  std::vector<const MatMulKernel*> fused;
  for (const MatMulKernel& kernel : AvailableMatMulKernels()) {
    if (std::string(kernel.name) != "baseline") fused.push_back(&kernel);
  }
  if (fused.size() < 2) GTEST_SKIP() << "this CPU has fewer than two FMA kernels";
  ThreadPool pool(2);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    const StoredMatrix w = MakeMatrix(dtype, 70, 45, 21);
    const auto x = RandomFloats(17 * 45, 22);
    std::vector<float> first(17 * 70), other(17 * 70);
    MatMul(pool, x.data(), 17, w.view, nullptr, first.data(), fused[0]);
    for (size_t k = 1; k < fused.size(); ++k) {
      MatMul(pool, x.data(), 17, w.view, nullptr, other.data(), fused[k]);
      EXPECT_EQ(std::memcmp(first.data(), other.data(), first.size() * 4), 0)
          << fused[0]->name << " vs " << fused[k]->name << ", dtype " << static_cast<int>(dtype);
    }
  }
}

// MatMuls runs several products in one parallel loop; each output must be MatMul's, bit for bit,
// whatever the thread count (tiles of different targets land on one thread) and row count.
TEST(CpuBackendKernelsTest, MatMulsEqualsSeparateMatMuls) {
  const int64_t cols = 37;
  const StoredMatrix a = MakeMatrix(DType::kBF16, 23, cols, 11);
  const StoredMatrix b = MakeMatrix(DType::kBF16, 6, cols, 12);
  const StoredMatrix c = MakeMatrix(DType::kF32, 9, cols, 13);
  const auto bias = RandomFloats(9, 14);
  for (const MatMulKernel& kernel : AvailableMatMulKernels()) {
    for (int64_t rows : {1, 3, 5, 17}) {
      const auto x = RandomFloats(rows * cols, 15 + static_cast<uint32_t>(rows));
      ThreadPool one(1);
      std::vector<float> want_a(rows * 23), want_b(rows * 6), want_c(rows * 9);
      MatMul(one, x.data(), rows, a.view, nullptr, want_a.data(), &kernel);
      MatMul(one, x.data(), rows, b.view, nullptr, want_b.data(), &kernel);
      MatMul(one, x.data(), rows, c.view, bias.data(), want_c.data(), &kernel);
      for (int threads : {1, 2, 3, 8}) {
        ThreadPool pool(threads);
        std::vector<float> got_a(rows * 23, NAN), got_b(rows * 6, NAN), got_c(rows * 9, NAN);
        const MatMulTarget targets[] = {{&a.view, nullptr, got_a.data()},
                                        {&b.view, nullptr, got_b.data()},
                                        {&c.view, bias.data(), got_c.data()}};
        MatMuls(pool, x.data(), rows, targets, &kernel);
        const std::string where = std::string(kernel.name) + ", " + std::to_string(threads) +
                                  " threads, " + std::to_string(rows) + " rows";
        EXPECT_EQ(std::memcmp(got_a.data(), want_a.data(), got_a.size() * 4), 0) << where;
        EXPECT_EQ(std::memcmp(got_b.data(), want_b.data(), got_b.size() * 4), 0) << where;
        EXPECT_EQ(std::memcmp(got_c.data(), want_c.data(), got_c.size() * 4), 0) << where;
      }
    }
  }
}

TEST(CpuBackendKernelsTest, SelectedKernelIsTheWidestAvailable) {
  EXPECT_STREQ(SelectedMatMulKernel().name, AvailableMatMulKernels().back().name)
      << "unless VG_CPU_ISA narrows it";
}

TEST(CpuBackendKernelsTest, RmsNormMatchesReference) {
  const int64_t rows = 3, dim = 13;
  const auto x = RandomFloats(rows * dim, 21, 3.0f);
  const auto w = RandomFloats(dim, 22, 0.5f);
  std::vector<float> out(rows * dim);
  RmsNorm(x.data(), rows, dim, w.data(), 1e-6f, out.data());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-6);
    for (int64_t i = 0; i < dim; ++i) {
      const double want = x[r * dim + i] * inv * (1.0 + w[i]);
      EXPECT_NEAR(out[r * dim + i], want, 1e-6 * (std::fabs(want) + 1.0));
    }
  }
  // In place gives the same result.
  std::vector<float> in_place = x;
  RmsNorm(in_place.data(), rows, dim, w.data(), 1e-6f, in_place.data());
  EXPECT_EQ(in_place, out);
}

TEST(CpuBackendKernelsTest, RopeMatchesReference) {
  const int64_t head_dim = 10, half = 5, heads = 3;
  std::vector<float> inv_freq(half);
  RopeInverseFrequencies(head_dim, 10000.0, inv_freq.data());
  for (int64_t i = 0; i < half; ++i) {
    EXPECT_NEAR(inv_freq[i], std::pow(10000.0, -2.0 * i / head_dim), 1e-6 * inv_freq[i]);
  }
  for (int64_t pos : {0, 1, 17, 1000}) {
    std::vector<float> cos(half), sin(half);
    RopeCosSin(pos, inv_freq.data(), half, cos.data(), sin.data());
    const auto x = RandomFloats(heads * head_dim, 30 + static_cast<uint32_t>(pos));
    std::vector<float> y = x;
    ApplyRope(y.data(), heads, half, cos.data(), sin.data());
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        // Angle from the float32 inverse frequency, rounded to float32 like torch.
        const double angle = static_cast<float>(inv_freq[i] * static_cast<float>(pos));
        const double a = x[h * head_dim + i], b = x[h * head_dim + half + i];
        EXPECT_NEAR(y[h * head_dim + i], a * std::cos(angle) - b * std::sin(angle), 1e-5);
        EXPECT_NEAR(y[h * head_dim + half + i], b * std::cos(angle) + a * std::sin(angle), 1e-5);
      }
    }
  }
}

TEST(CpuBackendKernelsTest, GeGluAndSoftCapMatchReference) {
  const int64_t n = 37;
  const auto gate = RandomFloats(n, 40, 6.0f), up = RandomFloats(n, 41, 2.0f);
  std::vector<float> out(n);
  GeGlu(gate.data(), up.data(), n, out.data());
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    const double want =
        0.5 * g * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (g + 0.044715 * g * g * g))) * up[i];
    EXPECT_NEAR(out[i], want, 2e-6 * (std::fabs(want) + 1.0));
  }
  std::vector<float> capped = RandomFloats(n, 42, 100.0f);
  const std::vector<float> orig = capped;
  SoftCap(capped.data(), n, 30.0f);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_NEAR(capped[i], std::tanh(orig[i] / 30.0) * 30.0, 30.0 * 5e-7);
  }
}

// Tolerance for Tanh: 4.2e-7 absolute and relative (about 7 ulp near +-1, where float32's own
// rounding is 6e-8).
TEST(CpuBackendKernelsTest, TanhIsWithinItsStatedErrorEverywhere) {
  double worst = 0.0;
  for (float x = -20.0f; x <= 20.0f; x += 3.7e-5f) {
    const double want = std::tanh(static_cast<double>(x));
    const double err = std::fabs(Tanh(x) - want);
    ASSERT_LE(err, 4.2e-7 * std::max(std::fabs(want), 1e-30) + 1e-45) << x;
    worst = std::max(worst, err);
  }
  EXPECT_GT(worst, 0.0);
  EXPECT_EQ(Tanh(INFINITY), Tanh(100.0f));
  EXPECT_NEAR(Tanh(INFINITY), 1.0f, 4.2e-7);
  EXPECT_NEAR(Tanh(-INFINITY), -1.0f, 4.2e-7);
  EXPECT_TRUE(std::isnan(Tanh(NAN)));
  EXPECT_EQ(Tanh(1e-30f), 1e-30f);
  EXPECT_EQ(Tanh(-0.0f), -0.0f);
}

// Paged attention over a shuffled block table vs a dense double-precision reference, for every
// kernel, head dimensions with and without a vector tail, and ranges that do and do not fill the
// kernels' groups of four positions. Tolerance: 2e-6 absolute on outputs of values in [-1, 1]
// (float32 scores through a softmax; the Tanh soft-cap adds at most 4.2e-7 relative).
TEST(CpuBackendKernelsTest, AttendHeadMatchesReference) {
  const int64_t positions = 23, kv_heads = 2;
  const std::vector<int32_t> table = {4, 0, 7, 5, 2, 6, 1, 3};  // 8 blocks of 3 hold 0..23
  for (auto [head_dim, dtype] : {std::pair<int64_t, DType>{5, DType::kF32},
                                 {37, DType::kF32},
                                 {256, DType::kF32},
                                 {37, DType::kBF16},
                                 {256, DType::kBF16}}) {
    KvCacheShape shape{1, 8, 3, kv_heads, head_dim, dtype};
    auto cache = KvCache::Create(shape);
    ASSERT_TRUE(cache.ok());
    auto keys = RandomFloats(positions * kv_heads * head_dim, 50, 2.0f);
    auto values = RandomFloats(positions * kv_heads * head_dim, 51);
    for (int64_t p = 0; p < positions; ++p) {
      (*cache)->Write(0, table[p / 3], p % 3, &keys[p * kv_heads * head_dim],
                      &values[p * kv_heads * head_dim]);
    }
    if (dtype == DType::kBF16) {
      // The reference sees what the cache holds: each element rounded to nearest even once.
      for (float& k : keys) k = BF16ToFloat(FloatToBF16(k));
      for (float& v : values) v = BF16ToFloat(FloatToBF16(v));
    }
    const auto q = RandomFloats(head_dim, 52, 2.0f);
    const float scaling = 1.0f / std::sqrt(static_cast<float>(head_dim));
    for (const MatMulKernel& kernel : AvailableMatMulKernels()) {
      for (float softcap : {0.0f, 1.5f}) {
        for (auto [lo, hi] :
             {std::pair<int64_t, int64_t>{0, 0}, {0, 22}, {3, 9}, {7, 7}, {1, 17}, {5, 13}}) {
          for (int64_t kv_head = 0; kv_head < kv_heads; ++kv_head) {
            AttentionParams params{scaling, softcap};
            std::vector<float> scores(hi - lo + 1, NAN), out(head_dim, NAN);
            AttendHead(q.data(), (*cache)->Layer(0), table, kv_head, lo, hi, params, scores.data(),
                       out.data(), &kernel);
            std::vector<double> w;
            double mx = -INFINITY, sum = 0.0;
            for (int64_t p = lo; p <= hi; ++p) {
              double s = 0.0;
              for (int64_t d = 0; d < head_dim; ++d) {
                s += static_cast<double>(q[d]) * keys[(p * kv_heads + kv_head) * head_dim + d];
              }
              s *= scaling;
              if (softcap > 0) s = std::tanh(s / softcap) * softcap;
              w.push_back(s);
              mx = std::max(mx, s);
            }
            for (double& s : w) sum += (s = std::exp(s - mx));
            for (int64_t d = 0; d < head_dim; ++d) {
              double want = 0.0;
              for (int64_t p = lo; p <= hi; ++p) {
                want += w[p - lo] / sum * values[(p * kv_heads + kv_head) * head_dim + d];
              }
              ASSERT_NEAR(out[d], want, 2e-6)
                  << kernel.name << " head_dim " << head_dim << " " << DTypeName(dtype) << " " << lo
                  << ".." << hi << " cap " << softcap << " kv head " << kv_head << " d " << d;
            }
          }
        }
      }
    }
  }
}

// AttendHeads shares K and V loads between query rows; each row's scores and output must be
// AttendHead's, bit for bit, for every kernel, KV dtype, head dimension (full vectors and tails)
// and mix of ranges: nested, overlapping, disjoint, and more rows than one call takes.
TEST(CpuBackendKernelsTest, AttendHeadsEqualsAttendHeadPerRow) {
  const int64_t positions = 23, kv_heads = 2;
  const std::vector<int32_t> table = {4, 0, 7, 5, 2, 6, 1, 3};
  const std::vector<std::vector<std::pair<int64_t, int64_t>>> cases = {
      {{0, 19}, {0, 20}, {0, 21}, {0, 22}},              // a causal prefill's rows
      {{3, 19}, {4, 20}, {5, 21}},                       // a sliding window's
      {{2, 9}, {0, 22}},                                 // nested
      {{0, 4}, {10, 15}, {6, 6}},                        // disjoint
      {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {0, 4}, {1, 5}},  // six rows: two calls' worth
  };
  for (auto [head_dim, dtype] : {std::pair<int64_t, DType>{5, DType::kF32},
                                 {37, DType::kBF16},
                                 {64, DType::kF32},
                                 {256, DType::kBF16}}) {
    KvCacheShape shape{1, 8, 3, kv_heads, head_dim, dtype};
    auto cache = KvCache::Create(shape);
    ASSERT_TRUE(cache.ok());
    const auto keys = RandomFloats(positions * kv_heads * head_dim, 60, 2.0f);
    const auto values = RandomFloats(positions * kv_heads * head_dim, 61);
    for (int64_t p = 0; p < positions; ++p) {
      (*cache)->Write(0, table[p / 3], p % 3, &keys[p * kv_heads * head_dim],
                      &values[p * kv_heads * head_dim]);
    }
    const AttentionParams params{0.125f, 1.5f};
    for (const MatMulKernel& kernel : AvailableMatMulKernels()) {
      for (const auto& ranges : cases) {
        const size_t n = ranges.size();
        std::vector<std::vector<float>> q(n), scores(n), out(n), want_scores(n), want_out(n);
        std::vector<AttentionQuery> queries(n);
        for (size_t r = 0; r < n; ++r) {
          const auto [lo, hi] = ranges[r];
          q[r] = RandomFloats(head_dim, 70 + static_cast<uint32_t>(r), 2.0f);
          scores[r].assign(hi - lo + 1, NAN);
          want_scores[r].assign(hi - lo + 1, NAN);
          out[r].assign(head_dim, NAN);
          want_out[r].assign(head_dim, NAN);
          AttendHead(q[r].data(), (*cache)->Layer(0), table, 1, lo, hi, params,
                     want_scores[r].data(), want_out[r].data(), &kernel);
          queries[r] = AttentionQuery{q[r].data(), lo, hi, scores[r].data(), out[r].data()};
        }
        AttendHeads(queries, (*cache)->Layer(0), table, 1, params, &kernel);
        for (size_t r = 0; r < n; ++r) {
          EXPECT_EQ(std::memcmp(out[r].data(), want_out[r].data(), head_dim * 4), 0)
              << kernel.name << " head_dim " << head_dim << " " << DTypeName(dtype) << " rows " << n
              << " row " << r;
          EXPECT_EQ(std::memcmp(scores[r].data(), want_scores[r].data(), scores[r].size() * 4), 0)
              << kernel.name << " head_dim " << head_dim << " rows " << n << " row " << r;
        }
      }
    }
  }
}

TEST(CpuBackendKernelsTest, FirstVisiblePositionFollowsTransformersSlidingMask) {
  // sliding_window_overlay: kv_idx > q_idx - window, so a query sees exactly `window` keys.
  EXPECT_EQ(FirstVisiblePosition(10, 4), 7);
  EXPECT_EQ(FirstVisiblePosition(3, 4), 0);
  EXPECT_EQ(FirstVisiblePosition(4, 4), 1);
  EXPECT_EQ(FirstVisiblePosition(10, 1), 10);
  EXPECT_EQ(FirstVisiblePosition(10, 0), 0);  // full attention
}

}  // namespace
}  // namespace vg::engine::cpu
