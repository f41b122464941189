// The CPU forward pass against a naive double-precision reference (tiny_model.cc), plus the
// paged-cache properties: chunking and decode equivalence, batch invariance, invalid plans.
#include "engine/backend/cpu/forward_pass.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tiny_model.h"

namespace vg::engine::cpu {
namespace {

using ::vg::engine::testing::RandomTokens;
using ::vg::engine::testing::TinyModel;
using ::vg::engine::testing::TinyModelSpec;

std::unique_ptr<ForwardPass> MakePass(const TinyModel& model, int32_t block_size = 4,
                                      int threads = 2, int32_t num_blocks = 0,
                                      DType kv_dtype = DType::kF32) {
  CpuBackendOptions options;
  options.block_size = block_size;
  options.num_threads = threads;
  options.num_blocks = num_blocks;
  options.kv_cache_dtype = kv_dtype;
  auto pass = ForwardPass::Create(model.config(), model.Views(), options);
  EXPECT_TRUE(pass.ok()) << pass.status();
  return pass.ok() ? std::move(*pass) : nullptr;
}

// A shuffled, non-contiguous block table covering `positions`.
std::vector<int32_t> ShuffledTable(int32_t num_blocks, int64_t positions, int32_t block_size,
                                   uint32_t seed) {
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
  ids.resize((positions + block_size - 1) / block_size);
  return ids;
}

// Max over the row of |got - want|, relative to the row's largest |want| (at least 1).
double RowError(std::span<const float> got, const std::vector<double>& want) {
  double err = 0.0, scale = 1.0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::fabs(got[i] - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  return err / scale;
}

void ExpectMatchesReference(const TinyModelSpec& spec, int64_t prompt_len) {
  TinyModel model(spec);
  auto pass = MakePass(model);
  ASSERT_NE(pass, nullptr);
  const std::vector<int32_t> tokens = RandomTokens(prompt_len, spec.vocab_size, spec.seed + 100);
  const std::vector<int32_t> table = ShuffledTable(pass->num_blocks(), prompt_len, 4, spec.seed);
  BatchPlan plan;
  plan.entries.push_back(BatchEntry{7, tokens, 0, table, LogitsMode::kAll});
  Logits logits;
  ASSERT_TRUE(pass->Forward(plan, &logits).ok());
  ASSERT_EQ(logits.vocab_size, spec.vocab_size);
  ASSERT_EQ(logits.rows(), prompt_len);
  const auto want = model.ReferenceLogits(tokens);
  for (int64_t p = 0; p < prompt_len; ++p) {
    EXPECT_EQ(logits.row_entry[p], 0);
    EXPECT_LT(RowError(logits.Row(p), want[p]), 1e-4) << "position " << p;
  }
}

TEST(CpuBackendForwardPassTest, MatchesReferenceBf16Gqa) {
  ExpectMatchesReference(TinyModelSpec{}, 11);
}

TEST(CpuBackendForwardPassTest, MatchesReferenceF16Mqa) {
  TinyModelSpec spec;
  spec.dtype = DType::kF16;
  spec.num_heads = 3;
  spec.num_kv_heads = 1;
  spec.seed = 2;
  ExpectMatchesReference(spec, 9);
}

TEST(CpuBackendForwardPassTest, MatchesReferenceF32MhaHeadDimNotHiddenOverHeads) {
  TinyModelSpec spec;
  spec.dtype = DType::kF32;
  spec.num_heads = 2;
  spec.num_kv_heads = 2;
  spec.head_dim = 12;  // hidden 20 / 2 heads = 10
  spec.seed = 3;
  ExpectMatchesReference(spec, 10);
}

TEST(CpuBackendForwardPassTest, MatchesReferenceSlidingWindowSmallerThanPrompt) {
  TinyModelSpec spec;
  spec.num_layers = 3;
  spec.sliding_window = 3;
  spec.layer_types = {LayerType::kSlidingAttention, LayerType::kFullAttention,
                      LayerType::kSlidingAttention};
  spec.seed = 4;
  ExpectMatchesReference(spec, 13);
}

TEST(CpuBackendForwardPassTest, MatchesReferenceWithoutSoftCapsWithBiasUntiedHead) {
  TinyModelSpec spec;
  spec.attn_softcap = std::nullopt;
  spec.final_softcap = std::nullopt;
  spec.attention_bias = true;
  spec.tie_word_embeddings = false;
  spec.query_pre_attn_scalar = 6.0;
  spec.seed = 5;
  ExpectMatchesReference(spec, 8);
}

// Logits of the last token of each step for: one prefill call, chunked prefill, token-by-token.
std::vector<std::vector<float>> RunInSteps(ForwardPass& pass, const std::vector<int32_t>& tokens,
                                           const std::vector<int32_t>& table,
                                           const std::vector<int64_t>& chunks) {
  std::vector<std::vector<float>> rows;
  int64_t pos = 0;
  for (int64_t len : chunks) {
    BatchPlan plan;
    std::span<const int32_t> slice(tokens.data() + pos, static_cast<size_t>(len));
    plan.entries.push_back(
        BatchEntry{1, slice, static_cast<int32_t>(pos), table, LogitsMode::kAll});
    Logits logits;
    EXPECT_TRUE(pass.Forward(plan, &logits).ok());
    for (int64_t r = 0; r < logits.rows(); ++r) {
      rows.emplace_back(logits.Row(r).begin(), logits.Row(r).end());
    }
    pos += len;
  }
  return rows;
}

TEST(CpuBackendForwardPassTest, PrefillChunkedPrefillAndDecodeAgree) {
  TinyModelSpec spec;
  spec.num_layers = 2;
  spec.sliding_window = 5;
  spec.layer_types = {LayerType::kSlidingAttention, LayerType::kFullAttention};
  TinyModel model(spec);
  const int64_t n = 14;
  const auto tokens = RandomTokens(n, spec.vocab_size, 9);
  auto pass = MakePass(model, /*block_size=*/4, /*threads=*/3, /*num_blocks=*/9);
  ASSERT_NE(pass, nullptr);
  const auto table = ShuffledTable(9, n, 4, 77);
  const auto whole = RunInSteps(*pass, tokens, table, {n});
  const auto chunked = RunInSteps(*pass, tokens, table, {3, 6, 1, 4});
  const auto decode = RunInSteps(*pass, tokens, table, std::vector<int64_t>(n, 1));
  ASSERT_EQ(whole.size(), static_cast<size_t>(n));
  ASSERT_EQ(chunked.size(), whole.size());
  ASSERT_EQ(decode.size(), whole.size());
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t v = 0; v < spec.vocab_size; ++v) {
      ASSERT_NEAR(chunked[p][v], whole[p][v], 1e-5) << p;
      ASSERT_NEAR(decode[p][v], whole[p][v], 1e-5) << p;
    }
  }
}

void ExpectBatchInvariant(DType kv_dtype);

// A BF16 KV cache rounds every K and V element once (relative error 2^-9): the logits stay within
// 1e-2 of the double-precision reference (relative to the row's scale), and differ from the
// float32 cache's (so the BF16 path is the one that ran).
TEST(CpuBackendForwardPassTest, Bf16KvCacheStaysCloseToReference) {
  TinyModelSpec spec;
  TinyModel model(spec);
  const int64_t prompt_len = 14;
  const std::vector<int32_t> tokens = RandomTokens(prompt_len, spec.vocab_size, 77);
  auto f32 = MakePass(model, 4, 2, 0, DType::kF32);
  auto bf16 = MakePass(model, 4, 2, 0, DType::kBF16);
  ASSERT_NE(bf16, nullptr);
  const std::vector<int32_t> table = ShuffledTable(bf16->num_blocks(), prompt_len, 4, 5);
  BatchPlan plan;
  plan.entries.push_back(BatchEntry{7, tokens, 0, table, LogitsMode::kAll});
  Logits exact, rounded;
  ASSERT_TRUE(f32->Forward(plan, &exact).ok());
  ASSERT_TRUE(bf16->Forward(plan, &rounded).ok());
  const auto want = model.ReferenceLogits(tokens);
  double largest_difference = 0.0;
  for (int64_t p = 0; p < prompt_len; ++p) {
    EXPECT_LT(RowError(rounded.Row(p), want[p]), 1e-2) << "position " << p;
    for (int64_t v = 0; v < spec.vocab_size; ++v) {
      largest_difference = std::max(
          largest_difference, static_cast<double>(std::fabs(rounded.Row(p)[v] - exact.Row(p)[v])));
    }
  }
  EXPECT_GT(largest_difference, 0.0);
}

TEST(CpuBackendForwardPassTest, BatchInvariantBitIdenticalAloneOrBatched) {
  for (DType kv_dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(kv_dtype));
    ExpectBatchInvariant(kv_dtype);
  }
}

void ExpectBatchInvariant(DType kv_dtype) {
  TinyModelSpec spec;
  TinyModel model(spec);
  const auto a = RandomTokens(9, spec.vocab_size, 1);
  const auto b = RandomTokens(6, spec.vocab_size, 2);
  const std::vector<int32_t> table_a = {5, 1, 8};
  const std::vector<int32_t> table_b = {0, 3};

  auto alone_pass = MakePass(model, 4, 1, 10, kv_dtype);
  BatchPlan alone;
  alone.entries.push_back(BatchEntry{1, a, 0, table_a, LogitsMode::kAll});
  Logits alone_logits;
  ASSERT_TRUE(alone_pass->Forward(alone, &alone_logits).ok());

  auto batched_pass = MakePass(model, 4, 3, 10, kv_dtype);
  BatchPlan batched;
  batched.entries.push_back(BatchEntry{2, b, 0, table_b, LogitsMode::kLast});
  batched.entries.push_back(BatchEntry{1, a, 0, table_a, LogitsMode::kAll});
  Logits batched_logits;
  ASSERT_TRUE(batched_pass->Forward(batched, &batched_logits).ok());
  ASSERT_EQ(batched_logits.rows(), 1 + 9);
  EXPECT_EQ(batched_logits.row_entry[0], 0);
  for (int64_t r = 0; r < 9; ++r) {
    EXPECT_EQ(batched_logits.row_entry[1 + r], 1);
    ASSERT_EQ(std::memcmp(batched_logits.Row(1 + r).data(), alone_logits.Row(r).data(),
                          sizeof(float) * spec.vocab_size),
              0)
        << "row " << r;
  }

  // A decode step of `a` batched with a prefill of another sequence, vs alone.
  const std::vector<int32_t> next = {3};
  const auto c = RandomTokens(5, spec.vocab_size, 3);
  const std::vector<int32_t> table_c = {2, 7};
  BatchPlan step_alone;
  step_alone.entries.push_back(BatchEntry{1, next, 9, table_a, LogitsMode::kLast});
  BatchPlan step_batched;
  step_batched.entries.push_back(BatchEntry{1, next, 9, table_a, LogitsMode::kLast});
  step_batched.entries.push_back(BatchEntry{3, c, 0, table_c, LogitsMode::kNone});
  Logits l1, l2;
  ASSERT_TRUE(alone_pass->Forward(step_alone, &l1).ok());
  ASSERT_TRUE(batched_pass->Forward(step_batched, &l2).ok());
  ASSERT_EQ(l1.rows(), 1);
  ASSERT_EQ(l2.rows(), 1);
  EXPECT_EQ(std::memcmp(l1.values.data(), l2.values.data(), sizeof(float) * spec.vocab_size), 0);
}

TEST(CpuBackendForwardPassTest, LogitsModesAndEmptyPlan) {
  TinyModel model(TinyModelSpec{});
  auto pass = MakePass(model);
  Logits logits;
  logits.values.assign(5, 1.0f);
  ASSERT_TRUE(pass->Forward(BatchPlan{}, &logits).ok());
  EXPECT_EQ(logits.rows(), 0);
  EXPECT_TRUE(logits.row_entry.empty());

  const auto a = RandomTokens(5, 37, 1);
  const std::vector<int32_t> t0 = {0, 1}, t1 = {2, 3}, t2 = {4, 5};
  BatchPlan plan;
  plan.entries.push_back(BatchEntry{1, a, 0, t0, LogitsMode::kNone});
  plan.entries.push_back(BatchEntry{2, a, 0, t1, LogitsMode::kLast});
  plan.entries.push_back(BatchEntry{3, a, 0, t2, LogitsMode::kAll});
  ASSERT_TRUE(pass->Forward(plan, &logits).ok());
  ASSERT_EQ(logits.rows(), 1 + 5);
  EXPECT_EQ(logits.row_entry, (std::vector<int32_t>{1, 2, 2, 2, 2, 2}));
  // The kLast row is the same token at the same position as the kAll entry's last row.
  EXPECT_EQ(std::memcmp(logits.Row(0).data(), logits.Row(5).data(), sizeof(float) * 37), 0);
}

TEST(CpuBackendForwardPassTest, InvalidPlansAreRejectedWithoutTouchingTheCache) {
  TinyModelSpec spec;
  spec.max_positions = 16;
  TinyModel model(spec);
  auto pass = MakePass(model, 4, 2, 6);
  ASSERT_EQ(pass->num_blocks(), 6);
  const auto tokens = RandomTokens(6, spec.vocab_size, 5);
  const std::vector<int32_t> table = {3, 1};
  BatchPlan good;
  good.entries.push_back(BatchEntry{1, tokens, 0, table, LogitsMode::kLast});
  Logits before;
  ASSERT_TRUE(pass->Forward(good, &before).ok());

  const std::vector<int32_t> empty;
  const std::vector<int32_t> bad_token = {1, 37};
  const std::vector<int32_t> negative_token = {-1};
  const std::vector<int32_t> short_table = {3};
  const std::vector<int32_t> out_of_range = {3, 6};
  const std::vector<int32_t> negative_block = {-2, 1};
  const std::vector<int32_t> long_table = {0, 1, 2, 3, 4};
  const std::vector<int32_t> seventeen(17, 1);
  const std::vector<int32_t> other_table = {4, 5};
  std::vector<BatchPlan> bad(9);
  bad[0].entries.push_back(BatchEntry{1, empty, 0, table, LogitsMode::kLast});
  bad[1].entries.push_back(BatchEntry{1, bad_token, 0, table, LogitsMode::kLast});
  bad[2].entries.push_back(BatchEntry{1, negative_token, 0, table, LogitsMode::kLast});
  bad[3].entries.push_back(BatchEntry{1, tokens, 0, short_table, LogitsMode::kLast});
  bad[4].entries.push_back(BatchEntry{1, tokens, 0, out_of_range, LogitsMode::kLast});
  bad[5].entries.push_back(BatchEntry{1, tokens, 0, negative_block, LogitsMode::kLast});
  bad[6].entries.push_back(BatchEntry{1, seventeen, 0, long_table, LogitsMode::kLast});
  bad[7].entries.push_back(BatchEntry{1, tokens, -1, table, LogitsMode::kLast});
  // Two sequences writing the same slots (same block table, same positions).
  bad[8].entries.push_back(BatchEntry{1, tokens, 0, table, LogitsMode::kLast});
  bad[8].entries.push_back(BatchEntry{2, tokens, 0, table, LogitsMode::kLast});
  for (size_t i = 0; i < bad.size(); ++i) {
    // A valid entry first: its writes must not happen either.
    bad[i].entries.insert(bad[i].entries.begin(),
                          BatchEntry{9, tokens, 0, other_table, LogitsMode::kLast});
    Logits logits;
    const absl::Status status = pass->Forward(bad[i], &logits);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << i << ": " << status;
  }
  // A position past the context.
  BatchPlan beyond;
  const std::vector<int32_t> one = {4};
  beyond.entries.push_back(BatchEntry{1, one, 16, long_table, LogitsMode::kLast});
  Logits logits;
  EXPECT_EQ(pass->Forward(beyond, &logits).code(), absl::StatusCode::kInvalidArgument);

  // The cache is as the good step left it: a decode step gives bit-identical logits to a fresh
  // backend that only ran the good step.
  const std::vector<int32_t> next = {7};
  BatchPlan decode;
  decode.entries.push_back(BatchEntry{1, next, 6, table, LogitsMode::kLast});
  Logits after;
  ASSERT_TRUE(pass->Forward(decode, &after).ok());
  auto fresh = MakePass(model, 4, 2, 6);
  Logits fresh_logits;
  ASSERT_TRUE(fresh->Forward(good, &fresh_logits).ok());
  EXPECT_EQ(fresh_logits.values, before.values);
  ASSERT_TRUE(fresh->Forward(decode, &fresh_logits).ok());
  EXPECT_EQ(after.values, fresh_logits.values);
}

TEST(CpuBackendForwardPassTest, RejectsBadOptionsAndShapes) {
  TinyModel model(TinyModelSpec{});
  CpuBackendOptions options;
  options.block_size = 0;
  EXPECT_EQ(ForwardPass::Create(model.config(), model.Views(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.block_size = 4;
  ModelWeights weights = model.Views();
  weights.layers[1].k_proj.shape = {5, 20};
  EXPECT_EQ(ForwardPass::Create(model.config(), weights, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Default num_blocks covers one full-context sequence.
  auto pass = ForwardPass::Create(model.config(), model.Views(), options);
  ASSERT_TRUE(pass.ok());
  EXPECT_EQ((*pass)->num_blocks(), 16);  // ceil(64 / 4)
  EXPECT_EQ((*pass)->KvCacheBytes(), size_t{2} * 2 * 16 * 4 * 2 * 6 * sizeof(float));
}

}  // namespace
}  // namespace vg::engine::cpu
