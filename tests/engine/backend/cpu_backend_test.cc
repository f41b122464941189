// CpuBackend end to end: a tiny random checkpoint written to disk, opened with Checkpoint::Open,
// run through the Backend interface and compared with the double-precision reference.
#include "engine/backend/cpu/cpu_backend.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "tiny_model.h"

namespace vg::engine {
namespace {

using ::vg::engine::testing::MakeTempDir;
using ::vg::engine::testing::RandomTokens;
using ::vg::engine::testing::TinyModel;
using ::vg::engine::testing::TinyModelSpec;

TEST(CpuBackendTest, CheckpointOnDiskMatchesReference) {
  TinyModelSpec spec;
  spec.num_layers = 3;
  spec.sliding_window = 4;
  spec.layer_types = {LayerType::kSlidingAttention, LayerType::kFullAttention,
                      LayerType::kSlidingAttention};
  TinyModel model(spec);
  const std::filesystem::path dir = MakeTempDir("checkpoint");
  ASSERT_TRUE(model.WriteCheckpoint(dir).ok());
  auto checkpoint = Checkpoint::Open(dir, MatrixLayout::kTiles);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();

  CpuBackendOptions options;
  options.block_size = 4;
  options.num_threads = 2;
  auto backend = CpuBackend::Create(**checkpoint, options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  Backend& b = **backend;
  EXPECT_EQ(b.block_size(), 4);
  EXPECT_EQ(b.num_blocks(), 16);  // ceil(max_position_embeddings 64 / 4)
  EXPECT_EQ(b.vocab_size(), spec.vocab_size);
  EXPECT_GT((*backend)->KvCacheBytes(), 0u);

  const auto tokens = RandomTokens(12, spec.vocab_size, 42);
  const std::vector<int32_t> table = {9, 2, 14};
  BatchPlan plan;
  plan.entries.push_back(BatchEntry{1, tokens, 0, table, LogitsMode::kAll});
  Logits logits;
  ASSERT_TRUE(b.Forward(plan, &logits).ok());
  ASSERT_EQ(logits.rows(), 12);
  const auto want = model.ReferenceLogits(tokens);
  for (int64_t p = 0; p < 12; ++p) {
    double err = 0.0, scale = 1.0;
    for (int64_t v = 0; v < spec.vocab_size; ++v) {
      err = std::max(err, std::fabs(logits.Row(p)[v] - want[p][v]));
      scale = std::max(scale, std::fabs(want[p][v]));
    }
    EXPECT_LT(err / scale, 1e-4) << "position " << p;
  }
  std::filesystem::remove_all(dir);
}

TEST(CpuBackendTest, RejectsNonsensicalOptions) {
  TinyModel model(TinyModelSpec{});
  const std::filesystem::path dir = MakeTempDir("options");
  ASSERT_TRUE(model.WriteCheckpoint(dir).ok());
  auto checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  CpuBackendOptions options;
  options.num_blocks = -1;
  EXPECT_EQ(CpuBackend::Create(**checkpoint, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vg::engine
