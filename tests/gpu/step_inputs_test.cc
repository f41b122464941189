// The CUDA forward pass's host-side step packing (engine/backend/cuda/step_inputs.h): runs in
// every build, no GPU needed. Checks every array for a plan mixing a prefill chunk (kAll), a
// chunk without logits (kNone) and decodes (kLast) over shuffled block tables, and the empty plan;
// how rows split between prefill tiles (chunks of >= 2 tokens, kStepTileRows rows at most) and
// the decode-row list, also for chunks of 16, 17 and 35 tokens; and a padded decode layout.
#include "engine/backend/cuda/step_inputs.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace vg::engine::cuda {
namespace {

template <typename T>
std::vector<T> Read(const std::vector<std::byte>& buffer, size_t offset, size_t count) {
  std::vector<T> out(count);
  std::memcpy(out.data(), buffer.data() + offset, count * sizeof(T));
  return out;
}

BatchEntry Entry(int64_t id, const std::vector<int32_t>& tokens, int32_t start,
                 const std::vector<int32_t>& table, LogitsMode mode) {
  BatchEntry e;
  e.sequence_id = id;
  e.token_ids = tokens;
  e.start_position = start;
  e.block_table = table;
  e.logits = mode;
  return e;
}

TEST(StepInputsTest, PacksEveryArray) {
  constexpr int32_t kBlock = 4;
  const std::vector<int32_t> decode_a = {7};
  const std::vector<int32_t> chunk_b = {10, 11, 12};
  const std::vector<int32_t> chunk_c = {20, 21};
  const std::vector<int32_t> decode_d = {30};
  // Table entries beyond what a sequence needs are present but must not be packed.
  const std::vector<int32_t> table_a = {5, 9, 2, 99};
  const std::vector<int32_t> table_b = {3, 8};
  const std::vector<int32_t> table_c = {6};
  const std::vector<int32_t> table_d = {1, 4, 0};
  BatchPlan plan;
  plan.entries.push_back(Entry(1, decode_a, 9, table_a, LogitsMode::kLast));   // pos 9
  plan.entries.push_back(Entry(2, chunk_b, 4, table_b, LogitsMode::kAll));     // pos 4..6
  plan.entries.push_back(Entry(3, chunk_c, 0, table_c, LogitsMode::kNone));    // pos 0..1
  plan.entries.push_back(Entry(4, decode_d, 10, table_d, LogitsMode::kLast));  // pos 10

  const StepLayout l = LayoutStep(plan, kBlock);
  EXPECT_EQ(l.num_tokens, 7);
  EXPECT_EQ(l.num_entries, 4);
  EXPECT_EQ(l.max_blocks_per_seq, 3);  // positions up to 10 need 3 blocks of 4
  EXPECT_EQ(l.max_context_len, 11);
  EXPECT_EQ(l.num_tiles, 2);  // chunk b, chunk c
  EXPECT_EQ(l.num_decode_rows, 2);
  for (size_t offset : {l.slots, l.tokens, l.positions, l.query_seq, l.context_lens, l.selected,
                        l.block_tables, l.tiles, l.decode_rows, l.bytes}) {
    EXPECT_EQ(offset % 16, 0u);
  }
  EXPECT_GE(l.tokens, l.slots + 7 * sizeof(int64_t));
  EXPECT_GE(l.tiles, l.block_tables + 4 * 3 * sizeof(int32_t));
  EXPECT_GE(l.decode_rows, l.tiles + 2 * 2 * sizeof(int32_t));
  EXPECT_GE(l.bytes, l.decode_rows + 2 * sizeof(int32_t));

  std::vector<std::byte> buffer(l.bytes, std::byte{0xAB});
  std::vector<int32_t> row_entry = {42};  // appended to
  const int32_t rows = FillStep(plan, kBlock, l, buffer.data(), &row_entry);
  EXPECT_EQ(rows, 1 + 3 + 0 + 1);
  EXPECT_EQ(row_entry, (std::vector<int32_t>{42, 0, 1, 1, 1, 3}));
  EXPECT_EQ(Read<int32_t>(buffer, l.tokens, 7), (std::vector<int32_t>{7, 10, 11, 12, 20, 21, 30}));
  EXPECT_EQ(Read<int32_t>(buffer, l.positions, 7), (std::vector<int32_t>{9, 4, 5, 6, 0, 1, 10}));
  EXPECT_EQ(Read<int32_t>(buffer, l.query_seq, 7), (std::vector<int32_t>{0, 1, 1, 1, 2, 2, 3}));
  EXPECT_EQ(Read<int32_t>(buffer, l.context_lens, 7),
            (std::vector<int32_t>{10, 5, 6, 7, 1, 2, 11}));
  // slot = block_table[pos / 4] * 4 + pos % 4
  EXPECT_EQ(Read<int64_t>(buffer, l.slots, 7),
            (std::vector<int64_t>{2 * 4 + 1, 8 * 4 + 0, 8 * 4 + 1, 8 * 4 + 2, 6 * 4 + 0, 6 * 4 + 1,
                                  0 * 4 + 2}));
  EXPECT_EQ(Read<int32_t>(buffer, l.selected, 5), (std::vector<int32_t>{0, 1, 2, 3, 6}));
  EXPECT_EQ(Read<int32_t>(buffer, l.block_tables, 12), (std::vector<int32_t>{5, 9, 2,  //
                                                                             3, 8, 0,  //
                                                                             6, 0, 0,  //
                                                                             1, 4, 0}));
  EXPECT_EQ(Read<int32_t>(buffer, l.tiles, 4), (std::vector<int32_t>{1, 3, 4, 2}));
  EXPECT_EQ(Read<int32_t>(buffer, l.decode_rows, 2), (std::vector<int32_t>{0, 6}));
}

// Chunks longer than a tile split into full tiles and a remainder, in row order; a chunk of
// exactly kStepTileRows is one tile; decodes between chunks stay in the decode list.
TEST(StepInputsTest, SplitsLongChunksIntoTiles) {
  constexpr int32_t kBlock = 16;
  ASSERT_EQ(kStepTileRows, 16);
  std::vector<int32_t> table(8);
  for (int32_t i = 0; i < 8; ++i) table[i] = 7 - i;
  // The entries' spans point into these, which must outlive the plan.
  const std::vector<int32_t> chunk_1(35, 1), decode_2 = {2}, chunk_3(16, 3), chunk_4(17, 4),
                                             decode_5 = {5};
  BatchPlan plan;
  plan.entries.push_back(Entry(1, chunk_1, 0, table, LogitsMode::kLast));
  plan.entries.push_back(Entry(2, decode_2, 40, table, LogitsMode::kLast));
  plan.entries.push_back(Entry(3, chunk_3, 20, table, LogitsMode::kNone));
  plan.entries.push_back(Entry(4, chunk_4, 50, table, LogitsMode::kAll));
  plan.entries.push_back(Entry(5, decode_5, 3, table, LogitsMode::kLast));
  const StepLayout l = LayoutStep(plan, kBlock);
  EXPECT_EQ(l.num_tokens, 35 + 1 + 16 + 17 + 1);
  EXPECT_EQ(l.num_tiles, 3 + 1 + 2);
  EXPECT_EQ(l.num_decode_rows, 2);
  std::vector<std::byte> buffer(l.bytes, std::byte{0xAB});
  std::vector<int32_t> row_entry;
  EXPECT_EQ(FillStep(plan, kBlock, l, buffer.data(), &row_entry), 1 + 1 + 0 + 17 + 1);
  // Rows: entry 1 at 0..34, entry 2 at 35, entry 3 at 36..51, entry 4 at 52..68, entry 5 at 69.
  EXPECT_EQ(Read<int32_t>(buffer, l.tiles, 12), (std::vector<int32_t>{0, 16, 16, 16, 32, 3,  //
                                                                      36, 16,                //
                                                                      52, 16, 68, 1}));
  EXPECT_EQ(Read<int32_t>(buffer, l.decode_rows, 2), (std::vector<int32_t>{35, 69}));
  // Every row is in exactly one tile or the decode list, and a tile's rows share an entry.
  const std::vector<int32_t> tiles = Read<int32_t>(buffer, l.tiles, 12);
  const std::vector<int32_t> seq = Read<int32_t>(buffer, l.query_seq, l.num_tokens);
  std::vector<int> covered(l.num_tokens, 0);
  for (int32_t i = 0; i < l.num_tiles; ++i) {
    EXPECT_GE(tiles[2 * i + 1], 1);
    EXPECT_LE(tiles[2 * i + 1], kStepTileRows);
    for (int32_t r = tiles[2 * i]; r < tiles[2 * i] + tiles[2 * i + 1]; ++r) {
      ++covered[r];
      EXPECT_EQ(seq[r], seq[tiles[2 * i]]);
    }
  }
  for (int32_t r : Read<int32_t>(buffer, l.decode_rows, 2)) ++covered[r];
  EXPECT_EQ(covered, std::vector<int>(l.num_tokens, 1));
}

TEST(StepInputsTest, EmptyPlanHasNoRows) {
  const StepLayout l = LayoutStep(BatchPlan{}, 16);
  EXPECT_EQ(l.num_tokens, 0);
  EXPECT_EQ(l.num_entries, 0);
  std::vector<std::byte> buffer(l.bytes + 16);
  std::vector<int32_t> row_entry;
  EXPECT_EQ(FillStep(BatchPlan{}, 16, l, buffer.data(), &row_entry), 0);
  EXPECT_TRUE(row_entry.empty());
}

// A decode step padded to a CUDA graph's bucket: the plan's rows as LayoutStep would pack them
// (only the block-table stride differs), then padding rows that write no KV (slot -1), read no
// context (length 0) and keep their own logits row.
TEST(StepInputsTest, PadsADecodeStepToItsBucket) {
  constexpr int32_t kBlock = 4;
  const std::vector<int32_t> decode_a = {7}, decode_b = {8};
  const std::vector<int32_t> table_a = {5, 9, 2}, table_b = {3};
  BatchPlan plan;
  plan.entries.push_back(Entry(1, decode_a, 9, table_a, LogitsMode::kLast));  // pos 9: block 2
  plan.entries.push_back(Entry(2, decode_b, 2, table_b, LogitsMode::kLast));  // pos 2
  const StepLayout l = LayoutPaddedDecode(/*rows=*/4, /*max_blocks_per_seq=*/6,
                                          /*max_context_len=*/24);
  EXPECT_EQ(l.num_tokens, 4);
  EXPECT_EQ(l.num_entries, 4);
  EXPECT_EQ(l.max_blocks_per_seq, 6);
  EXPECT_EQ(l.max_context_len, 24);
  EXPECT_EQ(l.num_tiles, 0);
  EXPECT_EQ(l.num_decode_rows, 4);
  EXPECT_GE(l.bytes, l.decode_rows + 4 * sizeof(int32_t));
  EXPECT_GE(l.decode_rows, l.block_tables + 4 * 6 * sizeof(int32_t));
  std::vector<std::byte> buffer(l.bytes, std::byte{0xAB});
  std::vector<int32_t> row_entry;
  EXPECT_EQ(FillStep(plan, kBlock, l, buffer.data(), &row_entry), 2);
  FillPadding(l, 2, buffer.data());
  EXPECT_EQ(row_entry, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(Read<int64_t>(buffer, l.slots, 4),
            (std::vector<int64_t>{2 * 4 + 1, 3 * 4 + 2, -1, -1}));
  EXPECT_EQ(Read<int32_t>(buffer, l.tokens, 4), (std::vector<int32_t>{7, 8, 0, 0}));
  EXPECT_EQ(Read<int32_t>(buffer, l.positions, 4), (std::vector<int32_t>{9, 2, 0, 0}));
  EXPECT_EQ(Read<int32_t>(buffer, l.query_seq, 4), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(Read<int32_t>(buffer, l.context_lens, 4), (std::vector<int32_t>{10, 3, 0, 0}));
  EXPECT_EQ(Read<int32_t>(buffer, l.selected, 4), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(Read<int32_t>(buffer, l.block_tables, 24), (std::vector<int32_t>{5, 9, 2, 0, 0, 0,  //
                                                                             3, 0, 0, 0, 0, 0,  //
                                                                             0, 0, 0, 0, 0, 0,  //
                                                                             0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(Read<int32_t>(buffer, l.decode_rows, 4), (std::vector<int32_t>{0, 1, 2, 3}));
}

}  // namespace
}  // namespace vg::engine::cuda
