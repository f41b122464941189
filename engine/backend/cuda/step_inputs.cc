#include "engine/backend/cuda/step_inputs.h"

#include <algorithm>

namespace vg::engine::cuda {
namespace {

size_t AlignUp(size_t n) { return (n + 15) & ~size_t{15}; }

template <typename T>
T* At(std::byte* base, size_t offset) {
  return reinterpret_cast<T*>(base + offset);
}

// Fills in the byte offsets of `l` from its counts.
void PlaceArrays(StepLayout& l) {
  const size_t t = static_cast<size_t>(l.num_tokens);
  l.slots = 0;
  l.tokens = AlignUp(l.slots + sizeof(int64_t) * t);
  l.positions = AlignUp(l.tokens + sizeof(int32_t) * t);
  l.query_seq = AlignUp(l.positions + sizeof(int32_t) * t);
  l.context_lens = AlignUp(l.query_seq + sizeof(int32_t) * t);
  l.selected = AlignUp(l.context_lens + sizeof(int32_t) * t);
  l.block_tables = AlignUp(l.selected + sizeof(int32_t) * t);
  l.tiles = AlignUp(l.block_tables + sizeof(int32_t) * static_cast<size_t>(l.num_entries) *
                                         static_cast<size_t>(l.max_blocks_per_seq));
  l.decode_rows = AlignUp(l.tiles + sizeof(int32_t) * 2 * static_cast<size_t>(l.num_tiles));
  l.bytes = AlignUp(l.decode_rows + sizeof(int32_t) * static_cast<size_t>(l.num_decode_rows));
}

}  // namespace

StepLayout LayoutStep(const BatchPlan& plan, int32_t block_size) {
  StepLayout l;
  int64_t tokens = 0;
  for (const BatchEntry& entry : plan.entries) {
    const int64_t len = static_cast<int64_t>(entry.token_ids.size());
    const int64_t end = entry.start_position + len;
    tokens += len;
    if (len >= 2) {
      l.num_tiles += static_cast<int32_t>((len + kStepTileRows - 1) / kStepTileRows);
    } else {
      l.num_decode_rows += static_cast<int32_t>(len);
    }
    l.max_blocks_per_seq = std::max<int32_t>(
        l.max_blocks_per_seq, static_cast<int32_t>((end + block_size - 1) / block_size));
    l.max_context_len = std::max<int32_t>(l.max_context_len, static_cast<int32_t>(end));
  }
  l.num_tokens = static_cast<int32_t>(tokens);
  l.num_entries = static_cast<int32_t>(plan.entries.size());
  PlaceArrays(l);
  return l;
}

StepLayout LayoutPaddedDecode(int32_t rows, int32_t max_blocks_per_seq, int32_t max_context_len) {
  StepLayout l;
  l.num_tokens = rows;
  l.num_entries = rows;
  l.max_blocks_per_seq = std::max<int32_t>(max_blocks_per_seq, 1);
  l.max_context_len = std::max<int32_t>(max_context_len, 1);
  l.num_decode_rows = rows;
  PlaceArrays(l);
  return l;
}

void FillPadding(const StepLayout& layout, int32_t first_row, std::byte* dst) {
  for (int32_t r = first_row; r < layout.num_tokens; ++r) {
    At<int64_t>(dst, layout.slots)[r] = -1;
    At<int32_t>(dst, layout.tokens)[r] = 0;
    At<int32_t>(dst, layout.positions)[r] = 0;
    At<int32_t>(dst, layout.query_seq)[r] = r;
    At<int32_t>(dst, layout.context_lens)[r] = 0;
    At<int32_t>(dst, layout.selected)[r] = r;
    At<int32_t>(dst, layout.decode_rows)[r] = r;
    for (int32_t b = 0; b < layout.max_blocks_per_seq; ++b) {
      At<int32_t>(dst,
                  layout.block_tables)[static_cast<int64_t>(r) * layout.max_blocks_per_seq + b] = 0;
    }
  }
}

int32_t FillStep(const BatchPlan& plan, int32_t block_size, const StepLayout& layout,
                 std::byte* dst, std::vector<int32_t>* row_entry) {
  auto* slots = At<int64_t>(dst, layout.slots);
  auto* tokens = At<int32_t>(dst, layout.tokens);
  auto* positions = At<int32_t>(dst, layout.positions);
  auto* query_seq = At<int32_t>(dst, layout.query_seq);
  auto* context = At<int32_t>(dst, layout.context_lens);
  auto* selected = At<int32_t>(dst, layout.selected);
  auto* tables = At<int32_t>(dst, layout.block_tables);
  auto* tiles = At<int32_t>(dst, layout.tiles);
  auto* decode_rows = At<int32_t>(dst, layout.decode_rows);
  const int32_t stride = layout.max_blocks_per_seq;
  int32_t rows = 0;
  int32_t r = 0;
  int32_t num_tiles = 0, num_decode = 0;
  for (int32_t e = 0; e < static_cast<int32_t>(plan.entries.size()); ++e) {
    const BatchEntry& entry = plan.entries[e];
    const int32_t len = static_cast<int32_t>(entry.token_ids.size());
    const int64_t needed =
        (static_cast<int64_t>(entry.start_position) + len + block_size - 1) / block_size;
    for (int32_t b = 0; b < stride; ++b) {
      tables[static_cast<int64_t>(e) * stride + b] = b < needed ? entry.block_table[b] : 0;
    }
    if (len >= 2) {
      for (int32_t first = 0; first < len; first += kStepTileRows, ++num_tiles) {
        tiles[2 * num_tiles] = r + first;
        tiles[2 * num_tiles + 1] = std::min(kStepTileRows, len - first);
      }
    } else if (len == 1) {
      decode_rows[num_decode++] = r;
    }
    for (int32_t i = 0; i < len; ++i, ++r) {
      const int32_t position = entry.start_position + i;
      tokens[r] = entry.token_ids[i];
      positions[r] = position;
      query_seq[r] = e;
      context[r] = position + 1;
      slots[r] = static_cast<int64_t>(entry.block_table[position / block_size]) * block_size +
                 position % block_size;
      if (entry.logits == LogitsMode::kAll || (entry.logits == LogitsMode::kLast && i == len - 1)) {
        selected[rows++] = r;
        row_entry->push_back(e);
      }
    }
  }
  return rows;
}

}  // namespace vg::engine::cuda
