// The tile layout (matrix_layout.h): the in-place rearrangement puts every element where
// TiledIndex says, following the layout's stated formula, and ReadRow gets rows back in both
// layouts.
#include "engine/model/matrix_layout.h"

#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace vg::engine {
namespace {

// Element (r, c): distinct finite values, made from bits.
uint32_t Bits(DType dtype, int64_t r, int64_t c) {
  return (dtype == DType::kF32 ? 0x3f800000u : 0x3c00u) + static_cast<uint32_t>(r * 64 + c);
}

float Value(DType dtype, int64_t r, int64_t c) {
  const uint32_t bits = Bits(dtype, r, c);
  if (dtype == DType::kF32) {
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
  }
  return dtype == DType::kBF16 ? BF16ToFloat(static_cast<uint16_t>(bits))
                               : F16ToFloat(static_cast<uint16_t>(bits));
}

std::vector<std::byte> RowMajor(DType dtype, int64_t rows, int64_t cols) {
  std::vector<std::byte> bytes(rows * cols * DTypeSize(dtype));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t bits = Bits(dtype, r, c);
      std::byte* dst = &bytes[(r * cols + c) * DTypeSize(dtype)];
      if (dtype == DType::kF32) {
        std::memcpy(dst, &bits, 4);
      } else {
        const uint16_t half = static_cast<uint16_t>(bits);
        std::memcpy(dst, &half, 2);
      }
    }
  }
  return bytes;
}

// The index the layout's comment states, written out independently of TiledIndex.
int64_t StatedIndex(DType dtype, int64_t rows, int64_t cols, int64_t r, int64_t c) {
  const int64_t first = r - r % 32;
  const int64_t m = rows - first < 32 ? rows - first : 32;
  const int64_t j = r % 32;
  if (dtype == DType::kBF16 && c < cols - cols % 2)
    return first * cols + (c / 2 * m + j) * 2 + c % 2;
  return first * cols + c * m + j;
}

TEST(MatrixLayoutTest, RearrangesEveryElementToItsStatedPlace) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t rows : {1, 5, 31, 32, 33, 64, 70}) {
      for (int64_t cols : {1, 2, 3, 8, 37}) {
        const std::vector<std::byte> row_major = RowMajor(dtype, rows, cols);
        std::vector<std::byte> tiled = row_major;
        RearrangeToTiles(dtype, rows, cols, tiled.data());
        const size_t e = DTypeSize(dtype);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) {
            const int64_t index = TiledIndex(dtype, rows, cols, r, c);
            ASSERT_EQ(index, StatedIndex(dtype, rows, cols, r, c)) << r << "," << c;
            ASSERT_EQ(std::memcmp(&tiled[index * e], &row_major[(r * cols + c) * e], e), 0)
                << "dtype " << static_cast<int>(dtype) << " " << rows << "x" << cols << " (" << r
                << ", " << c << ")";
          }
        }
        std::vector<float> got(cols), want(cols);
        for (int64_t r = 0; r < rows; ++r) {
          ReadRow(MatrixLayout::kTiles, dtype, tiled.data(), rows, cols, r, got.data());
          ReadRow(MatrixLayout::kRowMajor, dtype, row_major.data(), rows, cols, r, want.data());
          for (int64_t c = 0; c < cols; ++c) {
            ASSERT_EQ(want[c], Value(dtype, r, c));
            ASSERT_EQ(got[c], want[c]) << r << "," << c;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace vg::engine
