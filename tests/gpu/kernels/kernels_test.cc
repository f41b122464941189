// Tests of engine/backend/cuda/kernels against plain scalar CPU references (float64 unless said).
//
// Verified: every kernel of kernels.h and LtGemm::Matmul, on random inputs with fixed seeds,
// outputs poisoned with NaN (0xFF bytes) before each launch and every element checked, at the
// 1B shape (hidden 1152, 4 heads, 1 kv head, head_dim 256, intermediate 6912, vocab 256000)
// and at odd sizes; paged attention over shuffled (non-contiguous) block tables, contexts 1, 17
// and 1000, with and without split-K, decode and prefill; RoPE writes touch only their slots.
// Tolerances are stated per test: exact where the GPU does the same float32 operations as the
// reference, otherwise bounds from float32 accumulation (~1e-4) and one BF16 rounding (2^-8
// relative) of the output.
// Sliding windows: PagedAttention with a window spanning partitions, one smaller than two
// blocks, and one larger than the context. PagedAttention over a row subset writes exactly the
// listed rows. TiledPrefillAttention against the same float64 reference: chunks of 1..70 rows
// from position 0 and mid-sequence (crossing tile and block boundaries), windows smaller and
// larger than the chunk, MQA/GQA/MHA, head_dim 6/40/256/512; rows outside the tiles untouched.
// Not verified: performance, multi-stream use, NaN/Inf inputs, sizes over int32 element counts.
// Without a CUDA device every test skips with "no CUDA device: <error>".
#include "engine/backend/cuda/kernels/kernels.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/backend/cuda/kernels/gemm.h"
#include "tests/gpu/device_buffer.h"

namespace vg::engine::cuda {
namespace {

uint16_t ToBf16(float f) {  // round to nearest even (inputs here are finite)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float FromBf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}
std::vector<uint16_t> RandomBf16(size_t n, uint32_t seed, float scale = 1.f) {
  std::vector<float> f = RandomFloats(n, seed, scale);
  std::vector<uint16_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = ToBf16(f[i]);
  return b;
}

class CudaKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) GTEST_SKIP() << "no CUDA device: " << cudaGetErrorString(err);
    if (count == 0) GTEST_SKIP() << "no CUDA device: cudaGetDeviceCount returned 0";
  }
};

TEST_F(CudaKernelsTest, EmbeddingNormalizerRoundsToBf16) {
  EXPECT_EQ(EmbeddingNormalizer(1152, /*bf16_activations=*/true), 34.0f);  // sqrt = 33.941...
  EXPECT_EQ(EmbeddingNormalizer(1152, false), std::sqrt(1152.0f));
}

// Exact: one float32 multiply of the same operands on both sides.
TEST_F(CudaKernelsTest, EmbedTokensMatchesReferenceExactly) {
  for (const int hidden : {1152, 7, 2304}) {
    const int vocab = 1000, tokens = 9;
    const std::vector<uint16_t> table = RandomBf16(static_cast<size_t>(vocab) * hidden, 1);
    std::vector<int32_t> ids(tokens);
    std::mt19937 rng(2);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % vocab);
    ids[0] = vocab - 1;
    const float norm = EmbeddingNormalizer(hidden, true);
    DeviceBuffer<uint16_t> d_table(table);
    DeviceBuffer<int32_t> d_ids(ids);
    DeviceBuffer<float> d_out(static_cast<size_t>(tokens) * hidden);
    CUDA_OK(EmbedTokens(d_table.get(), d_ids.get(), tokens, hidden, norm, d_out.get(), nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<float> out = d_out.Download();
    for (int t = 0; t < tokens; ++t) {
      for (int i = 0; i < hidden; ++i) {
        const float want = FromBf16(table[static_cast<size_t>(ids[t]) * hidden + i]) * norm;
        ASSERT_EQ(out[static_cast<size_t>(t) * hidden + i], want) << "hidden " << hidden;
      }
    }
  }
}

// residual: exact (the same float32 add). normed_f32: |err| <= 1e-5 (1 + |ref|).
// normed BF16: |err| <= 2^-8 |ref| + 1e-5.
TEST_F(CudaKernelsTest, ResidualRmsNormMatchesReference) {
  struct Case {
    int rows, hidden;
    bool with_x;
  };
  for (const Case c : {Case{1, 1152, true}, Case{5, 1152, false}, Case{3, 7, true},
                       Case{2, 2304, true}, Case{4, 1000, true}}) {
    const size_t n = static_cast<size_t>(c.rows) * c.hidden;
    const float eps = 1e-6f;
    std::vector<float> residual = RandomFloats(n, 3, 4.f), x = RandomFloats(n, 4, 2.f);
    const std::vector<float> weight = RandomFloats(c.hidden, 5, 0.5f);
    DeviceBuffer<float> d_res(residual), d_x(x), d_w(weight), d_f32(n);
    DeviceBuffer<uint16_t> d_bf16(n);
    CUDA_OK(ResidualRmsNorm(d_res.get(), c.with_x ? d_x.get() : nullptr, d_w.get(), c.rows,
                            c.hidden, eps, d_bf16.get(), d_f32.get(), nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<float> got_res = d_res.Download(), got_f32 = d_f32.Download();
    const std::vector<uint16_t> got_bf16 = d_bf16.Download();
    for (int r = 0; r < c.rows; ++r) {
      double sumsq = 0;
      for (int i = 0; i < c.hidden; ++i) {
        const size_t j = static_cast<size_t>(r) * c.hidden + i;
        const float h = c.with_x ? residual[j] + x[j] : residual[j];
        ASSERT_EQ(got_res[j], h);
        sumsq += static_cast<double>(h) * h;
      }
      const double inv = 1.0 / std::sqrt(sumsq / c.hidden + eps);
      for (int i = 0; i < c.hidden; ++i) {
        const size_t j = static_cast<size_t>(r) * c.hidden + i;
        const double want = got_res[j] * inv * (1.0 + weight[i]);
        ASSERT_NEAR(got_f32[j], want, 1e-5 * (1 + std::fabs(want))) << "hidden " << c.hidden;
        ASSERT_NEAR(FromBf16(got_bf16[j]), want, std::fabs(want) / 256 + 1e-5);
      }
    }
  }
}

// q: |err| <= 1e-4 (float32 sincos of the same float32 angle). Cache (BF16 out):
// |err| <= 2^-8 |ref| + 1e-4. Slots not written stay poisoned, and so do the slots of padding
// rows (slot -1). Two layouts: separate dense q, k, v rotated in place, and one fused
// [t][q | k | v] row per token (plus 3 floats of slack) with the queries written to q_out.
TEST_F(CudaKernelsTest, RopeAndWriteKvMatchesReference) {
  struct Case {
    int tokens, heads, kv_heads, head_dim, block_size, num_blocks;
    bool fused;
  };
  for (const Case c : {Case{5, 4, 1, 256, 16, 8, false}, Case{7, 8, 4, 6, 5, 4, false},
                       Case{1, 4, 1, 256, 16, 2, false}, Case{5, 4, 1, 256, 16, 8, true},
                       Case{7, 8, 4, 6, 5, 4, true}}) {
    const float theta = 10000.f;
    const int q_dim = c.heads * c.head_dim, kv_dim = c.kv_heads * c.head_dim;
    const int64_t stride = c.fused ? q_dim + 2 * kv_dim + 3 : 0;
    const size_t cache_n =
        static_cast<size_t>(c.num_blocks) * c.block_size * c.kv_heads * c.head_dim;
    // Dense copies for the reference: q [t][q_dim], k and v [t][kv_dim].
    const std::vector<float> q = RandomFloats(static_cast<size_t>(c.tokens) * q_dim, 6),
                             k = RandomFloats(static_cast<size_t>(c.tokens) * kv_dim, 7),
                             v = RandomFloats(static_cast<size_t>(c.tokens) * kv_dim, 8);
    std::vector<int32_t> positions(c.tokens);
    std::vector<int64_t> slots(c.num_blocks * c.block_size);
    std::iota(slots.begin(), slots.end(), 0);
    std::mt19937 rng(9);
    std::shuffle(slots.begin(), slots.end(), rng);
    slots.resize(c.tokens);               // distinct, non-contiguous slots
    if (c.tokens > 1) slots.back() = -1;  // a padding row
    for (int32_t& p : positions) p = static_cast<int32_t>(rng() % 8192);
    DeviceBuffer<int32_t> d_pos(positions);
    DeviceBuffer<int64_t> d_slots(slots);
    DeviceBuffer<uint16_t> d_kc(cache_n), d_vc(cache_n);
    std::vector<float> got_q;
    if (c.fused) {
      std::vector<float> qkv(static_cast<size_t>(c.tokens) * stride, 1e30f);
      for (int t = 0; t < c.tokens; ++t) {
        std::copy_n(&q[static_cast<size_t>(t) * q_dim], q_dim, &qkv[t * stride]);
        std::copy_n(&k[static_cast<size_t>(t) * kv_dim], kv_dim, &qkv[t * stride + q_dim]);
        std::copy_n(&v[static_cast<size_t>(t) * kv_dim], kv_dim, &qkv[t * stride + q_dim + kv_dim]);
      }
      DeviceBuffer<float> d_qkv(qkv), d_q_out(static_cast<size_t>(c.tokens) * q_dim);
      CUDA_OK(RopeAndWriteKv(d_qkv.get(), d_qkv.get() + q_dim, d_qkv.get() + q_dim + kv_dim, stride,
                             d_pos.get(), d_slots.get(), c.tokens, c.heads, c.kv_heads, c.head_dim,
                             theta, d_q_out.get(), d_kc.get(), d_vc.get(), nullptr));
      CUDA_OK(cudaDeviceSynchronize());
      got_q = d_q_out.Download();
      ASSERT_EQ(d_qkv.Download(), qkv) << "the fused input was written";
    } else {
      DeviceBuffer<float> d_q(q), d_k(k), d_v(v);
      CUDA_OK(RopeAndWriteKv(d_q.get(), d_k.get(), d_v.get(), q_dim, d_pos.get(), d_slots.get(),
                             c.tokens, c.heads, c.kv_heads, c.head_dim, theta, d_q.get(),
                             d_kc.get(), d_vc.get(), nullptr));
      CUDA_OK(cudaDeviceSynchronize());
      got_q = d_q.Download();
    }
    const std::vector<uint16_t> got_k = d_kc.Download(), got_v = d_vc.Download();
    const int half = c.head_dim / 2;
    auto rotate = [&](const float* x, int i, float pos, bool second) {
      const float inv_freq =
          static_cast<float>(1.0 / std::pow(static_cast<double>(theta), 2.0 * i / c.head_dim));
      const double angle = static_cast<float>(pos * inv_freq);
      const double a = x[i], b = x[i + half];
      return second ? b * std::cos(angle) + a * std::sin(angle)
                    : a * std::cos(angle) - b * std::sin(angle);
    };
    std::vector<bool> written(cache_n, false);
    for (int t = 0; t < c.tokens; ++t) {
      const float pos = static_cast<float>(positions[t]);
      for (int h = 0; h < c.heads; ++h) {
        const size_t base = (static_cast<size_t>(t) * c.heads + h) * c.head_dim;
        for (int i = 0; i < half; ++i) {
          ASSERT_NEAR(got_q[base + i], rotate(&q[base], i, pos, false), 1e-4);
          ASSERT_NEAR(got_q[base + i + half], rotate(&q[base], i, pos, true), 1e-4);
        }
      }
      if (slots[t] < 0) continue;
      for (int h = 0; h < c.kv_heads; ++h) {
        const size_t src = (static_cast<size_t>(t) * c.kv_heads + h) * c.head_dim;
        const size_t dst = (static_cast<size_t>(slots[t]) * c.kv_heads + h) * c.head_dim;
        for (int i = 0; i < half; ++i) {
          for (const bool second : {false, true}) {
            const size_t j = dst + i + (second ? half : 0);
            const double want_k = rotate(&k[src], i, pos, second);
            const double want_v = v[src + i + (second ? half : 0)];
            ASSERT_NEAR(FromBf16(got_k[j]), want_k, std::fabs(want_k) / 256 + 1e-4);
            ASSERT_NEAR(FromBf16(got_v[j]), want_v, std::fabs(want_v) / 256 + 1e-4);
            written[j] = true;
          }
        }
      }
    }
    for (size_t j = 0; j < cache_n; ++j) {
      if (written[j]) continue;
      ASSERT_EQ(got_k[j], 0xFFFF) << "stray K write at " << j;
      ASSERT_EQ(got_v[j], 0xFFFF) << "stray V write at " << j;
    }
  }
}

// Paged attention: the cache holds random BF16 values; the reference reads the same values in
// float64. Output |err| <= 1e-4 (values are O(1); float32 accumulation over <= 1000 positions).
struct AttentionCase {
  int heads, kv_heads, head_dim, block_size, partition_size;
  float softcap, q_scale;
  int window = 0;  // sliding window (0: full attention)
};

class PagedAttentionTest : public CudaKernelsTest,
                           public ::testing::WithParamInterface<AttentionCase> {};

void ReferenceAttention(const AttentionCase& c, const std::vector<float>& q, int row, int seq,
                        int len, const std::vector<int32_t>& tables, int max_blocks,
                        const std::vector<uint16_t>& kc, const std::vector<uint16_t>& vc,
                        std::vector<double>* out) {
  const double scale = 1.0 / std::sqrt(256.0);  // query_pre_attn_scalar 256
  const int group = c.heads / c.kv_heads;
  out->assign(static_cast<size_t>(c.heads) * c.head_dim, 0.0);
  for (int h = 0; h < c.heads; ++h) {
    const int kvh = h / group;
    // A sliding window sees [len - window, len) (transformers: q - window < k <= q).
    const int lo = c.window > 0 ? std::max(0, len - c.window) : 0;
    std::vector<double> p(len, 0.0);
    double m = -INFINITY;
    for (int pos = lo; pos < len; ++pos) {
      const int64_t slot =
          static_cast<int64_t>(tables[seq * max_blocks + pos / c.block_size]) * c.block_size +
          pos % c.block_size;
      double dot = 0;
      for (int d = 0; d < c.head_dim; ++d) {
        dot += q[(static_cast<size_t>(row) * c.heads + h) * c.head_dim + d] *
               static_cast<double>(FromBf16(kc[(slot * c.kv_heads + kvh) * c.head_dim + d]));
      }
      double s = dot * scale;
      if (c.softcap > 0) s = std::tanh(s / c.softcap) * c.softcap;
      p[pos] = s;
      m = std::max(m, s);
    }
    double sum = 0;
    for (int pos = lo; pos < len; ++pos) sum += (p[pos] = std::exp(p[pos] - m));
    for (int pos = lo; pos < len; ++pos) {
      const int64_t slot =
          static_cast<int64_t>(tables[seq * max_blocks + pos / c.block_size]) * c.block_size +
          pos % c.block_size;
      for (int d = 0; d < c.head_dim; ++d) {
        (*out)[static_cast<size_t>(h) * c.head_dim + d] +=
            p[pos] / sum * FromBf16(vc[(slot * c.kv_heads + kvh) * c.head_dim + d]);
      }
    }
  }
}

// Three sequences with contexts 1, 17 and 1000 (decode), then a prefill chunk of 37 tokens of
// the third sequence at positions 963..999 (each sees the cache up to and including itself).
TEST_P(PagedAttentionTest, DecodeAndPrefillMatchReference) {
  const AttentionCase c = GetParam();
  const std::vector<int> lens = {1, 17, 1000};
  const int max_len = 1000;
  const int max_blocks = (max_len + c.block_size - 1) / c.block_size;
  const int num_seqs = static_cast<int>(lens.size());
  const int num_blocks = num_seqs * max_blocks + 3;
  std::vector<int32_t> pool(num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::mt19937 rng(10);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<int32_t> tables(pool.begin(), pool.begin() + num_seqs * max_blocks);
  const size_t cache_n = static_cast<size_t>(num_blocks) * c.block_size * c.kv_heads * c.head_dim;
  const std::vector<uint16_t> kc = RandomBf16(cache_n, 11), vc = RandomBf16(cache_n, 12);
  DeviceBuffer<uint16_t> d_kc(kc), d_vc(vc);
  DeviceBuffer<int32_t> d_tables(tables);

  PagedAttentionShape shape;
  shape.num_heads = c.heads;
  shape.num_kv_heads = c.kv_heads;
  shape.head_dim = c.head_dim;
  shape.block_size = c.block_size;
  shape.max_blocks_per_seq = max_blocks;
  shape.scale = 1.f / 16.f;
  shape.logit_softcap = c.softcap;
  shape.partition_size = c.partition_size;
  shape.sliding_window = c.window;

  auto run = [&](const std::vector<int32_t>& query_seq, const std::vector<int32_t>& ctx) {
    const int rows = static_cast<int>(query_seq.size());
    const std::vector<float> q =
        RandomFloats(static_cast<size_t>(rows) * c.heads * c.head_dim, 13 + rows, c.q_scale);
    DeviceBuffer<float> d_q(q);
    DeviceBuffer<int32_t> d_seq(query_seq), d_ctx(ctx);
    DeviceBuffer<float> d_scratch(PagedAttentionScratchFloats(shape, rows, max_len));
    DeviceBuffer<float> d_out(static_cast<size_t>(rows) * c.heads * c.head_dim);
    CUDA_OK(PagedAttention(shape, d_q.get(), d_seq.get(), d_ctx.get(), /*rows=*/nullptr, rows,
                           max_len, d_tables.get(), d_kc.get(), d_vc.get(), d_scratch.get(),
                           d_out.get(), nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<float> out = d_out.Download();
    std::vector<double> want;
    for (int r = 0; r < rows; ++r) {
      ReferenceAttention(c, q, r, query_seq[r], ctx[r], tables, max_blocks, kc, vc, &want);
      for (size_t j = 0; j < want.size(); ++j) {
        ASSERT_NEAR(out[r * want.size() + j], want[j], 1e-4)
            << "row " << r << " context " << ctx[r] << " element " << j;
      }
    }
  };
  run({0, 1, 2}, lens);  // decode
  std::vector<int32_t> seq(37, 2), ctx(37);
  for (int i = 0; i < 37; ++i) ctx[i] = 963 + i + 1;
  run(seq, ctx);  // prefill chunk
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedAttentionTest,
    ::testing::Values(AttentionCase{4, 1, 256, 16, 512, 50.f, 1.f},      // 1B shape, split at 512
                      AttentionCase{4, 1, 256, 16, 32, 50.f, 1.f},       // many partitions
                      AttentionCase{4, 1, 256, 16, 2048, 50.f, 1.f},     // one partition
                      AttentionCase{8, 4, 256, 16, 512, 2.f, 4.f},       // GQA 2, cap active
                      AttentionCase{6, 3, 40, 5, 64, 0.f, 2.f},          // odd sizes, no cap
                      AttentionCase{3, 3, 6, 7, 96, 1.f, 8.f},           // MHA, tiny head
                      AttentionCase{4, 1, 256, 16, 32, 50.f, 1.f, 100},  // window over partitions
                      AttentionCase{6, 3, 40, 5, 64, 0.f, 2.f, 7},       // window < a block pair
                      AttentionCase{4, 1, 256, 16, 512, 50.f, 1.f, 4096}),  // window > context
    [](const ::testing::TestParamInfo<AttentionCase>& info) {
      const AttentionCase& c = info.param;
      return "h" + std::to_string(c.heads) + "kv" + std::to_string(c.kv_heads) + "d" +
             std::to_string(c.head_dim) + "b" + std::to_string(c.block_size) + "p" +
             std::to_string(c.partition_size) + "w" + std::to_string(c.window) + "i" +
             std::to_string(info.index);
    });

// Shared set-up of the attention tests below: a cache of random BF16 values for num_seqs
// sequences of max_len positions over shuffled blocks, and the shape.
struct AttentionFixture {
  AttentionFixture(const AttentionCase& c, int num_seqs, int max_len) {
    max_blocks = (max_len + c.block_size - 1) / c.block_size;
    const int num_blocks = num_seqs * max_blocks + 3;
    std::vector<int32_t> pool(num_blocks);
    std::iota(pool.begin(), pool.end(), 0);
    std::mt19937 rng(20);
    std::shuffle(pool.begin(), pool.end(), rng);
    tables.assign(pool.begin(), pool.begin() + num_seqs * max_blocks);
    const size_t n = static_cast<size_t>(num_blocks) * c.block_size * c.kv_heads * c.head_dim;
    kc = RandomBf16(n, 21);
    vc = RandomBf16(n, 22);
    shape.num_heads = c.heads;
    shape.num_kv_heads = c.kv_heads;
    shape.head_dim = c.head_dim;
    shape.block_size = c.block_size;
    shape.max_blocks_per_seq = max_blocks;
    shape.scale = 1.f / 16.f;
    shape.logit_softcap = c.softcap;
    shape.partition_size = c.partition_size;
    shape.sliding_window = c.window;
  }
  int max_blocks = 0;
  std::vector<int32_t> tables;
  std::vector<uint16_t> kc, vc;
  PagedAttentionShape shape;
};

// Checks rows `checked` of out against the reference and that every other row is still poison
// (NaN from the 0xFF fill): the kernel wrote exactly its rows.
void ExpectRows(const AttentionCase& c, const AttentionFixture& f, const std::vector<float>& q,
                const std::vector<int32_t>& query_seq, const std::vector<int32_t>& ctx,
                const std::vector<bool>& checked, const std::vector<float>& out) {
  const size_t width = static_cast<size_t>(c.heads) * c.head_dim;
  std::vector<double> want;
  for (size_t r = 0; r < query_seq.size(); ++r) {
    if (!checked[r]) {
      for (size_t j = 0; j < width; ++j) {
        ASSERT_TRUE(std::isnan(out[r * width + j])) << "row " << r << " (not listed) was written";
      }
      continue;
    }
    ReferenceAttention(c, q, static_cast<int>(r), query_seq[r], ctx[r], f.tables, f.max_blocks,
                       f.kc, f.vc, &want);
    for (size_t j = 0; j < width; ++j) {
      ASSERT_NEAR(out[r * width + j], want[j], 1e-4)
          << "row " << r << " context " << ctx[r] << " element " << j;
    }
  }
}

// PagedAttention over a subset of the rows (a step's decode rows): the listed rows, in any
// order, match the reference; the others are not written.
TEST_P(PagedAttentionTest, RowSubsetComputesOnlyListedRows) {
  const AttentionCase c = GetParam();
  const int max_len = 300;
  const AttentionFixture f(c, 3, max_len);
  const std::vector<int32_t> query_seq = {0, 1, 2, 2, 1, 0, 2};
  const std::vector<int32_t> ctx = {1, 17, 300, 0, 140, 33, 299};
  const std::vector<int32_t> rows = {6, 0, 2, 3, 4};  // 1 and 5 left out; 3 is padding
  std::vector<bool> checked(query_seq.size(), false);
  for (int32_t r : rows) checked[r] = true;
  const int n = static_cast<int>(query_seq.size());
  const std::vector<float> q =
      RandomFloats(static_cast<size_t>(n) * c.heads * c.head_dim, 23, c.q_scale);
  DeviceBuffer<float> d_q(q);
  DeviceBuffer<int32_t> d_seq(query_seq), d_ctx(ctx), d_rows(rows), d_tables(f.tables);
  DeviceBuffer<uint16_t> d_kc(f.kc), d_vc(f.vc);
  const int num_rows = static_cast<int>(rows.size());
  DeviceBuffer<float> d_scratch(PagedAttentionScratchFloats(f.shape, num_rows, max_len));
  DeviceBuffer<float> d_out(static_cast<size_t>(n) * c.heads * c.head_dim);
  CUDA_OK(PagedAttention(f.shape, d_q.get(), d_seq.get(), d_ctx.get(), d_rows.get(), num_rows,
                         max_len, d_tables.get(), d_kc.get(), d_vc.get(), d_scratch.get(),
                         d_out.get(), nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  ExpectRows(c, f, q, query_seq, ctx, checked, d_out.Download());
}

// The tiled prefill kernel (partition_size is unused). For each chunk length 1..70, one launch
// over rows laid out as a step would: a decode row of sequence 1 (not in a tile), a chunk of
// sequence 0 from position 0, another decode row, and a chunk of sequence 2 from position
// 57 + length % 11 (mid-sequence); each chunk cut into tiles of kPrefillTileRows rows, the last
// one partial. Row i of a chunk from position p has context length p + i + 1.
class TiledPrefillAttentionTest : public CudaKernelsTest,
                                  public ::testing::WithParamInterface<AttentionCase> {};

TEST_P(TiledPrefillAttentionTest, ChunksMatchReference) {
  const AttentionCase c = GetParam();
  const int max_len = 140;
  const AttentionFixture f(c, 3, max_len);
  DeviceBuffer<int32_t> d_tables(f.tables);
  DeviceBuffer<uint16_t> d_kc(f.kc), d_vc(f.vc);
  for (int len = 1; len <= 70; ++len) {
    std::vector<int32_t> query_seq, ctx, tiles;
    std::vector<bool> checked;
    auto chunk = [&](int seq, int start) {
      const int first = static_cast<int>(query_seq.size());
      for (int i = 0; i < len; ++i) {
        query_seq.push_back(seq);
        ctx.push_back(start + i + 1);
        checked.push_back(true);
      }
      for (int t = 0; t < len; t += kPrefillTileRows) {
        tiles.push_back(first + t);
        tiles.push_back(std::min(kPrefillTileRows, len - t));
      }
    };
    auto decode = [&](int seq, int context) {
      query_seq.push_back(seq);
      ctx.push_back(context);
      checked.push_back(false);
    };
    decode(1, 90);
    chunk(0, 0);
    decode(1, 91);
    chunk(2, 57 + len % 11);
    const int n = static_cast<int>(query_seq.size());
    const std::vector<float> q =
        RandomFloats(static_cast<size_t>(n) * c.heads * c.head_dim, 30 + len, c.q_scale);
    DeviceBuffer<float> d_q(q);
    DeviceBuffer<int32_t> d_seq(query_seq), d_ctx(ctx), d_tiles(tiles);
    DeviceBuffer<float> d_out(static_cast<size_t>(n) * c.heads * c.head_dim);
    CUDA_OK(TiledPrefillAttention(f.shape, d_q.get(), d_seq.get(), d_ctx.get(), d_tiles.get(),
                                  static_cast<int>(tiles.size() / 2), d_tables.get(), d_kc.get(),
                                  d_vc.get(), d_out.get(), nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    SCOPED_TRACE("chunk length " + std::to_string(len));
    ExpectRows(c, f, q, query_seq, ctx, checked, d_out.Download());
    if (HasFatalFailure()) return;
  }
}

// A tile whose rows all have context length 0 (padding) outputs zeros; no tiles launches nothing.
TEST_F(CudaKernelsTest, TiledPrefillAttentionPaddingAndEmpty) {
  const AttentionCase c{4, 1, 256, 16, 512, 50.f, 1.f};
  const AttentionFixture f(c, 1, 32);
  DeviceBuffer<int32_t> d_tables(f.tables);
  DeviceBuffer<uint16_t> d_kc(f.kc), d_vc(f.vc);
  const std::vector<float> q = RandomFloats(3 * 4 * 256, 40);
  DeviceBuffer<float> d_q(q);
  DeviceBuffer<int32_t> d_seq(std::vector<int32_t>{0, 0, 0}), d_ctx(std::vector<int32_t>{0, 0, 0});
  DeviceBuffer<int32_t> d_tiles(std::vector<int32_t>{0, 3});
  DeviceBuffer<float> d_out(3 * 4 * 256);
  CUDA_OK(TiledPrefillAttention(f.shape, d_q.get(), d_seq.get(), d_ctx.get(), d_tiles.get(), 0,
                                d_tables.get(), d_kc.get(), d_vc.get(), d_out.get(), nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  for (float v : d_out.Download()) ASSERT_TRUE(std::isnan(v));  // nothing launched
  CUDA_OK(TiledPrefillAttention(f.shape, d_q.get(), d_seq.get(), d_ctx.get(), d_tiles.get(), 1,
                                d_tables.get(), d_kc.get(), d_vc.get(), d_out.get(), nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  for (float v : d_out.Download()) ASSERT_EQ(v, 0.f);
}

std::string AttentionCaseName(const ::testing::TestParamInfo<AttentionCase>& info) {
  const AttentionCase& c = info.param;
  return "h" + std::to_string(c.heads) + "kv" + std::to_string(c.kv_heads) + "d" +
         std::to_string(c.head_dim) + "b" + std::to_string(c.block_size) + "w" +
         std::to_string(c.window) + "i" + std::to_string(info.index);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, TiledPrefillAttentionTest,
    ::testing::Values(AttentionCase{4, 1, 256, 16, 0, 50.f, 1.f},         // 1B shape (MQA)
                      AttentionCase{8, 4, 256, 16, 0, 2.f, 4.f},          // GQA 2, cap active
                      AttentionCase{6, 3, 40, 5, 0, 0.f, 2.f},            // odd sizes, no cap
                      AttentionCase{3, 3, 6, 7, 0, 1.f, 8.f},             // MHA, tiny head
                      AttentionCase{8, 1, 40, 3, 0, 0.f, 1.f, 20},        // GQA 8, window 20
                      AttentionCase{4, 1, 512, 8, 0, 50.f, 1.f},          // head_dim 512: 2 heads
                      AttentionCase{4, 1, 256, 16, 0, 50.f, 1.f, 100},    // window > chunk
                      AttentionCase{6, 3, 40, 5, 0, 0.f, 2.f, 7},         // window < chunk
                      AttentionCase{4, 1, 256, 16, 0, 50.f, 1.f, 4096}),  // window > context
    AttentionCaseName);

// BF16 output: |err| <= 2^-8 |ref| + 1e-6. Dense gate and up, and the fused [t][gate | up] rows.
TEST_F(CudaKernelsTest, GeGluMatchesReference) {
  struct Case {
    int tokens, intermediate;
    bool fused;
  };
  for (const Case c : {Case{1, 1, false}, Case{3, 6912, false}, Case{7, 142858, false},
                       Case{3, 6912, true}, Case{5, 37, true}}) {
    const int64_t count = static_cast<int64_t>(c.tokens) * c.intermediate;
    const std::vector<float> gate = RandomFloats(count, 14, 6.f), up = RandomFloats(count, 15, 3.f);
    DeviceBuffer<uint16_t> d_out(count);
    if (c.fused) {
      const int64_t stride = 2 * c.intermediate;
      std::vector<float> fused(static_cast<size_t>(c.tokens) * stride);
      for (int t = 0; t < c.tokens; ++t) {
        std::copy_n(&gate[t * c.intermediate], c.intermediate, &fused[t * stride]);
        std::copy_n(&up[t * c.intermediate], c.intermediate, &fused[t * stride + c.intermediate]);
      }
      DeviceBuffer<float> d_fused(fused);
      CUDA_OK(GeGlu(d_fused.get(), d_fused.get() + c.intermediate, stride, c.tokens, c.intermediate,
                    d_out.get(), nullptr));
    } else {
      DeviceBuffer<float> d_gate(gate), d_up(up);
      CUDA_OK(GeGlu(d_gate.get(), d_up.get(), c.intermediate, c.tokens, c.intermediate, d_out.get(),
                    nullptr));
    }
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<uint16_t> out = d_out.Download();
    for (int64_t i = 0; i < count; ++i) {
      const double g = gate[i];
      const double want =
          0.5 * g * (1 + std::tanh(std::sqrt(2 / M_PI) * (g + 0.044715 * g * g * g))) * up[i];
      ASSERT_NEAR(FromBf16(out[i]), want, std::fabs(want) / 256 + 1e-6) << "i " << i;
    }
  }
}

// Capped logits: |err| <= 1e-5 * cap. Argmax: exact against the lowest-index maximum of the
// capped values the GPU wrote (tanh saturates, so ties are common and must break low).
TEST_F(CudaKernelsTest, FinalSoftcapArgmaxMatchesReference) {
  struct Case {
    int rows, vocab;
    float cap;
  };
  for (const Case c : {Case{3, 256000, 30.f}, Case{2, 17, 30.f}, Case{4, 1000, 0.f}}) {
    const size_t n = static_cast<size_t>(c.rows) * c.vocab;
    const std::vector<float> logits = RandomFloats(n, 16, 400.f);
    DeviceBuffer<float> d_logits(logits);
    DeviceBuffer<int32_t> d_argmax(c.rows);
    CUDA_OK(FinalSoftcapArgmax(d_logits.get(), c.rows, c.vocab, c.cap, d_argmax.get(), nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<float> got = d_logits.Download();
    const std::vector<int32_t> argmax = d_argmax.Download();
    for (int r = 0; r < c.rows; ++r) {
      int best = 0;
      for (int j = 0; j < c.vocab; ++j) {
        const size_t i = static_cast<size_t>(r) * c.vocab + j;
        const double want = c.cap > 0 ? std::tanh(logits[i] / c.cap) * c.cap : logits[i];
        ASSERT_NEAR(got[i], want, 1e-5 * std::max(c.cap, 1.f)) << i;
        if (got[i] > got[static_cast<size_t>(r) * c.vocab + best]) best = j;
      }
      EXPECT_EQ(argmax[r], best) << "row " << r;
    }
  }
}

// C = A W^T with BF16 operands: |err| <= 1e-5 * sum_k |a w| (float32 accumulation), plus
// 2^-8 |ref| for BF16 output.
TEST_F(CudaKernelsTest, LtGemmMatchesReference) {
  for (const bool invariant : {false, true}) {
    std::string error;
    std::unique_ptr<LtGemm> gemm = LtGemm::Create(32u << 20, invariant, &error);
    ASSERT_NE(gemm, nullptr) << error;
    struct Case {
      int m, n, k;
      LtGemm::OutType out;
    };
    for (const Case c : {Case{1, 1152, 1152, LtGemm::OutType::kFloat32},
                         Case{7, 6912, 1152, LtGemm::OutType::kBf16},
                         Case{5, 1152, 6912, LtGemm::OutType::kFloat32},
                         Case{2, 256000, 1152, LtGemm::OutType::kFloat32},  // LM head
                         Case{3, 24, 40, LtGemm::OutType::kBf16}}) {
      const std::vector<uint16_t> a = RandomBf16(static_cast<size_t>(c.m) * c.k, 17);
      const std::vector<uint16_t> w = RandomBf16(static_cast<size_t>(c.n) * c.k, 18);
      DeviceBuffer<uint16_t> d_a(a), d_w(w);
      const bool f32 = c.out == LtGemm::OutType::kFloat32;
      const size_t out_n = static_cast<size_t>(c.m) * c.n;
      DeviceBuffer<float> d_c32(f32 ? out_n : 1);
      DeviceBuffer<uint16_t> d_c16(f32 ? 1 : out_n);
      ASSERT_TRUE(gemm->Matmul(d_a.get(), d_w.get(),
                               f32 ? static_cast<void*>(d_c32.get()) : d_c16.get(), c.out, c.m, c.n,
                               c.k, 0.f, nullptr, &error))
          << error;
      CUDA_OK(cudaDeviceSynchronize());
      const std::vector<float> c32 = f32 ? d_c32.Download() : std::vector<float>();
      const std::vector<uint16_t> c16 = f32 ? std::vector<uint16_t>() : d_c16.Download();
      std::vector<float> af(a.size()), wf(w.size());
      for (size_t i = 0; i < a.size(); ++i) af[i] = FromBf16(a[i]);
      for (size_t i = 0; i < w.size(); ++i) wf[i] = FromBf16(w[i]);
      for (int i = 0; i < c.m; ++i) {
        for (int j = 0; j < c.n; ++j) {
          double dot = 0, mag = 0;
          for (int kk = 0; kk < c.k; ++kk) {
            const double prod = static_cast<double>(af[static_cast<size_t>(i) * c.k + kk]) *
                                wf[static_cast<size_t>(j) * c.k + kk];
            dot += prod;
            mag += std::fabs(prod);
          }
          const size_t o = static_cast<size_t>(i) * c.n + j;
          const double got = f32 ? c32[o] : FromBf16(c16[o]);
          const double tol = 1e-5 * mag + (f32 ? 0 : std::fabs(dot) / 256) + 1e-6;
          ASSERT_NEAR(got, dot, tol) << "m " << c.m << " n " << c.n << " k " << c.k << " at " << i
                                     << "," << j << " batch invariant " << invariant;
        }
      }
      // The plan is reused: a second call on the same shape gives the same bits.
      if (f32) {
        ASSERT_TRUE(gemm->Matmul(d_a.get(), d_w.get(), d_c32.get(), c.out, c.m, c.n, c.k, 0.f,
                                 nullptr, &error))
            << error;
        CUDA_OK(cudaDeviceSynchronize());
        ASSERT_EQ(d_c32.Download(), c32);
      }
    }
  }
}

// Batch-invariant mode: each row of C is bitwise the same whether it is computed alone, in a
// batch of 7, or in a batch of 300 (the rows differ; row r of the batch is row r of A).
TEST_F(CudaKernelsTest, LtGemmBatchInvariantRowsDoNotDependOnTheBatch) {
  std::string error;
  std::unique_ptr<LtGemm> gemm = LtGemm::Create(32u << 20, /*batch_invariant=*/true, &error);
  ASSERT_NE(gemm, nullptr) << error;
  for (const auto [n, k] : {std::pair{1152, 1152}, {13824, 1152}, {1152, 6912}, {24, 40}}) {
    const int max_m = 300;
    const std::vector<uint16_t> a = RandomBf16(static_cast<size_t>(max_m) * k, 19);
    const std::vector<uint16_t> w = RandomBf16(static_cast<size_t>(n) * k, 20);
    DeviceBuffer<uint16_t> d_a(a), d_w(w);
    std::vector<std::vector<float>> results;
    for (const int m : {1, 7, max_m}) {
      DeviceBuffer<float> d_c(static_cast<size_t>(m) * n);
      ASSERT_TRUE(gemm->Matmul(d_a.get(), d_w.get(), d_c.get(), LtGemm::OutType::kFloat32, m, n, k,
                               0.f, nullptr, &error))
          << error;
      CUDA_OK(cudaDeviceSynchronize());
      results.push_back(d_c.Download());
    }
    for (int r = 0; r < 7; ++r) {
      for (int j = 0; j < n; ++j) {
        const size_t o = static_cast<size_t>(r) * n + j;
        if (r == 0) ASSERT_EQ(results[0][o], results[2][o]) << "n " << n << " k " << k;
        ASSERT_EQ(results[1][o], results[2][o]) << "n " << n << " k " << k << " row " << r;
      }
    }
  }
}

}  // namespace
}  // namespace vg::engine::cuda
