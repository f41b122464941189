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

namespace {

// Moves the units (T: 2 or 4 bytes) of one tile of m rows: unit u of row r goes to u * m + r.
template <typename T>
void TransposeTile(const std::byte* src, int64_t m, int64_t units_per_row, int64_t units,
                   std::byte* dst) {
  for (int64_t u = 0; u < units; ++u) {
    for (int64_t r = 0; r < m; ++r) {
      T value;
      std::memcpy(&value, src + (r * units_per_row + u) * sizeof(T), sizeof(T));
      std::memcpy(dst + (u * m + r) * sizeof(T), &value, sizeof(T));
    }
  }
}

}  // namespace

void RearrangeToTiles(DType dtype, int64_t rows, int64_t cols, std::byte* data) {
  const int64_t element = static_cast<int64_t>(DTypeSize(dtype));
  std::vector<std::byte> tile;
  for (int64_t first = 0; first < rows; first += kTileRows) {
    const int64_t m = std::min(kTileRows, rows - first);
    std::byte* base = data + first * cols * element;
    tile.assign(base, base + m * cols * element);
    if (dtype == DType::kF32) {
      TransposeTile<uint32_t>(tile.data(), m, cols, cols, base);
    } else if (dtype == DType::kF16) {
      TransposeTile<uint16_t>(tile.data(), m, cols, cols, base);
    } else {
      // BF16 column pairs move as 32-bit words; an odd last column follows them.
      if (cols % 2 == 0) {
        TransposeTile<uint32_t>(tile.data(), m, cols / 2, cols / 2, base);
      } else {
        for (int64_t r = 0; r < m; ++r) {
          for (int64_t u = 0; u < cols / 2; ++u) {
            std::memcpy(base + (u * m + r) * 4, tile.data() + (r * cols + 2 * u) * 2, 4);
          }
          std::memcpy(base + ((cols - 1) * m + r) * 2, tile.data() + (r * cols + cols - 1) * 2, 2);
        }
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
