#include "engine/backend/cpu/plan_validation.h"

#include <vector>

#include "gtest/gtest.h"

namespace vg::engine::cpu {
namespace {

constexpr PlanLimits kLimits{/*vocab_size=*/10, /*max_positions=*/12, /*block_size=*/4,
                             /*num_blocks=*/5};

TEST(CpuBackendPlanValidationTest, AcceptsGoodPlansIncludingSharedReadOnlyBlocks) {
  const std::vector<int32_t> tokens = {1, 2, 3};
  const std::vector<int32_t> t1 = {0, 1}, t2 = {0, 2};  // block 0 shared, only read by both
  BatchPlan plan;
  plan.entries.push_back(BatchEntry{1, tokens, 5, t1, LogitsMode::kLast});
  plan.entries.push_back(BatchEntry{2, tokens, 4, t2, LogitsMode::kAll});
  EXPECT_TRUE(ValidatePlan(plan, kLimits).ok());
  EXPECT_TRUE(ValidatePlan(BatchPlan{}, kLimits).ok());
}

TEST(CpuBackendPlanValidationTest, MessagesNameEntryAndProblem) {
  const std::vector<int32_t> tokens = {1, 11};
  const std::vector<int32_t> table = {0};
  BatchPlan plan;
  plan.entries.push_back(BatchEntry{42, tokens, 0, table, LogitsMode::kLast});
  const absl::Status status = ValidatePlan(plan, kLimits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("sequence 42"), std::string::npos) << status;
  EXPECT_NE(status.message().find("token_ids[1] = 11"), std::string::npos) << status;
}

TEST(CpuBackendPlanValidationTest, RejectsBadPlans) {
  const std::vector<int32_t> three = {1, 2, 3};
  const std::vector<int32_t> one = {1};
  const std::vector<int32_t> empty;
  const std::vector<int32_t> t = {0, 1, 2};
  const std::vector<int32_t> bad_id = {0, 5};
  const std::vector<std::pair<std::span<const int32_t>, std::pair<int32_t, std::vector<int32_t>>>>
      cases = {
          {empty, {0, t}},       // no tokens
          {three, {-1, t}},      // negative start
          {three, {10, t}},      // positions 10..12 beyond max 12
          {three, {2, {0}}},     // table too short for positions 2..4
          {three, {2, bad_id}},  // block 5 out of range
          {one, {4, {0, -1}}},   // negative block
      };
  for (size_t i = 0; i < cases.size(); ++i) {
    BatchPlan plan;
    plan.entries.push_back(BatchEntry{1, cases[i].first, cases[i].second.first,
                                      cases[i].second.second, LogitsMode::kLast});
    EXPECT_EQ(ValidatePlan(plan, kLimits).code(), absl::StatusCode::kInvalidArgument) << i;
  }
  // Two entries writing one slot.
  BatchPlan clash;
  clash.entries.push_back(BatchEntry{1, one, 6, t, LogitsMode::kLast});
  clash.entries.push_back(BatchEntry{2, one, 6, t, LogitsMode::kLast});
  EXPECT_EQ(ValidatePlan(clash, kLimits).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vg::engine::cpu
