// StepInputs: the per-step index arrays the CUDA forward pass uploads, built on the host from a
// BatchPlan (issue 7). Pure C++ with no CUDA dependency, so it is built and tested everywhere.
//
// One Forward flattens the plan into rows (one per new token, entries in plan order) and uploads,
// in one copy, for every row: its KV slot (block id * block_size + offset), token id, position,
// entry index (query_seq: which block-table row it reads) and causal context length
// (position + 1: the row sees itself and what precedes it); the rows whose logits the plan asks
// for (LogitsMode); the block tables padded to the longest one needed this step; and how the
// attention splits the rows: every entry with >= 2 new tokens (a prefill chunk) becomes tiles of
// at most kStepTileRows consecutive rows for the tiled prefill kernel, every other row (a
// decode) goes to the decode-row list for the split-K paged attention.
// Preconditions: the plan passed cpu::ValidatePlan for this block size (every block table
// covers its positions); nothing is checked again here.
#ifndef VG_ENGINE_BACKEND_CUDA_STEP_INPUTS_H_
#define VG_ENGINE_BACKEND_CUDA_STEP_INPUTS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/backend/batch_plan.h"

namespace vg::engine::cuda {

// Rows per attention tile: kernels.h's kPrefillTileRows (checked where both are visible).
inline constexpr int32_t kStepTileRows = 16;

// Sizes and byte offsets of the arrays inside the one upload, each 16-byte aligned.
struct StepLayout {
  int32_t num_tokens = 0;  // rows
  int32_t num_entries = 0;
  int32_t max_blocks_per_seq = 1;  // row stride of the block tables (>= 1)
  int32_t max_context_len = 1;     // the longest context any row sees (>= 1)
  int32_t num_tiles = 0;           // prefill tiles
  int32_t num_decode_rows = 0;     // rows not in a tile
  size_t slots = 0;                // int64 [num_tokens]
  size_t tokens = 0;               // int32 [num_tokens]
  size_t positions = 0;            // int32 [num_tokens]
  size_t query_seq = 0;            // int32 [num_tokens]
  size_t context_lens = 0;         // int32 [num_tokens]
  size_t selected = 0;             // int32 [num_tokens]: the first num_logit_rows are used
  size_t block_tables = 0;         // int32 [num_entries][max_blocks_per_seq]
  size_t tiles = 0;                // int32 [num_tiles][2]: first row, row count (1..16)
  size_t decode_rows = 0;          // int32 [num_decode_rows], ascending
  size_t bytes = 0;                // total
};

// The layout for `plan`. num_tokens is 0 for an empty plan.
StepLayout LayoutStep(const BatchPlan& plan, int32_t block_size);

// Writes the arrays into `dst` (layout.bytes bytes, 8-byte aligned) and returns the number of
// logit rows; `row_entry` receives each logit row's entry index (appended, in row order, as
// Logits::row_entry wants). Block-table padding beyond what an entry needs is 0 (never read).
// `layout` is LayoutStep(plan)'s or, for a decode plan, a LayoutPaddedDecode at least as large
// (then call FillPadding for the rows after the plan's).
int32_t FillStep(const BatchPlan& plan, int32_t block_size, const StepLayout& layout,
                 std::byte* dst, std::vector<int32_t>* row_entry);

// CUDA graphs replay one fixed layout per batch size: a decode step (one token per entry, each
// with logits) padded to `rows` rows and entries, block tables `max_blocks_per_seq` wide, and
// max_context_len as given (the model's context, so that any step fits the captured grid).
// No tiles; every row is a decode row (the plan's rows from FillStep, then FillPadding's).
StepLayout LayoutPaddedDecode(int32_t rows, int32_t max_blocks_per_seq, int32_t max_context_len);

// Rows [first_row, layout.num_tokens) as padding: token 0, position 0, its own (all-zero) block
// table row, context length 0 (attention reads nothing and outputs 0), slot -1 (nothing is
// written to the KV cache), selected = the row itself, so row i of the logits is row i, and
// decode row i = row i (a padded layout's decode list is every row).
void FillPadding(const StepLayout& layout, int32_t first_row, std::byte* dst);

}  // namespace vg::engine::cuda

#endif  // VG_ENGINE_BACKEND_CUDA_STEP_INPUTS_H_
