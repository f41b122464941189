#include "engine/model/matrix_layout.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace vg::engine {
namespace {

float Widen(DType dtype, const std::byte* p) {
  if (dtype == DType::kF32) {
    float v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  uint16_t bits;
  std::memcpy(&bits, p, sizeof(bits));
  return dtype == DType::kBF16 ? BF16ToFloat(bits) : F16ToFloat(bits);
}

}  // namespace

int64_t TiledIndex(DType dtype, int64_t rows, int64_t cols, int64_t r, int64_t c) {
  const int64_t first = r / kTileRows * kTileRows;
  const int64_t m = std::min(kTileRows, rows - first);
  const int64_t local = r - first;
  int64_t within;
  if (dtype == DType::kBF16 && c < cols - cols % 2) {
    within = (c / 2 * m + local) * 2 + c % 2;
  } else {
    within = c * m + local;
  }
  return first * cols + within;
}

void RearrangeToTiles(DType dtype, int64_t rows, int64_t cols, std::byte* data) {
  const int64_t element = static_cast<int64_t>(DTypeSize(dtype));
  // Units moved whole: BF16 column pairs as 32-bit words, otherwise single elements.
  const bool pairs = dtype == DType::kBF16;
  const int64_t unit = pairs ? 2 * element : element;
  const int64_t units = pairs ? cols / 2 : cols;  // per row, before an odd BF16 column
  std::vector<std::byte> tile;
  for (int64_t first = 0; first < rows; first += kTileRows) {
    const int64_t m = std::min(kTileRows, rows - first);
    std::byte* base = data + first * cols * element;
    tile.assign(base, base + m * cols * element);
    for (int64_t u = 0; u < units; ++u) {
      std::byte* dst = base + u * m * unit;
      const std::byte* src = tile.data() + u * unit;
      for (int64_t r = 0; r < m; ++r) std::memcpy(dst + r * unit, src + r * cols * element, unit);
    }
    if (pairs && cols % 2 != 0) {
      std::byte* dst = base + (cols - 1) * m * element;
      const std::byte* src = tile.data() + (cols - 1) * element;
      for (int64_t r = 0; r < m; ++r) {
        std::memcpy(dst + r * element, src + r * cols * element, element);
      }
    }
  }
}

void ReadRow(MatrixLayout layout, DType dtype, const std::byte* data, int64_t rows, int64_t cols,
             int64_t r, float* dst) {
  const int64_t element = static_cast<int64_t>(DTypeSize(dtype));
  for (int64_t c = 0; c < cols; ++c) {
    const int64_t index =
        layout == MatrixLayout::kTiles ? TiledIndex(dtype, rows, cols, r, c) : r * cols + c;
    dst[c] = Widen(dtype, data + index * element);
  }
}

}  // namespace vg::engine
