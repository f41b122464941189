// The tile layout of weight matrices: how the CPU backend stores a [rows, cols] matrix so that its
// matrix products stream each weight once, in order, as whole vectors of output features.
//
// Rows go in tiles of kTileRows (the last tile may hold fewer, m = rows - first row). A tile
// occupies exactly the bytes its rows occupy in row-major order, so a matrix can be rearranged in
// place, one tile at a time, and its size does not change. Inside a tile of m rows, elements are
// ordered by column first, so that the m outputs of one column sit next to each other:
//   F32, F16:  element (r, c) at index c * m + r;
//   BF16:      columns in pairs, element (r, c) with c < cols - cols % 2 at index
//              (c / 2 * m + r) * 2 + c % 2 (one 32-bit word holds columns 2j and 2j + 1 of a row:
//              the even column widens to float32 by a shift, the odd one by a mask); an odd last
//              column follows as m elements, element (r, cols - 1) at index (cols - 1) * m + r.
// Matrix products read a tile as consecutive vectors of outputs (matmul_kernel.h); the embedding
// lookup, which needs one row, gathers it (ReadRow).
#ifndef VG_ENGINE_MODEL_MATRIX_LAYOUT_H_
#define VG_ENGINE_MODEL_MATRIX_LAYOUT_H_

#include <cstddef>
#include <cstdint>

#include "engine/model/dtype.h"

namespace vg::engine {

enum class MatrixLayout : uint8_t { kRowMajor, kTiles };

inline constexpr int64_t kTileRows = 32;

// Index of element (r, c) of a tiled [rows, cols] matrix, counted in elements from its start.
int64_t TiledIndex(DType dtype, int64_t rows, int64_t cols, int64_t r, int64_t c);

// Rearranges a row-major [rows, cols] matrix of `dtype` at `data` into the tile layout, in place.
void RearrangeToTiles(DType dtype, int64_t rows, int64_t cols, std::byte* data);

// Row r of a [rows, cols] matrix in `layout`, widened to float32 (exact).
void ReadRow(MatrixLayout layout, DType dtype, const std::byte* data, int64_t rows, int64_t cols,
             int64_t r, float* dst);

}  // namespace vg::engine

#endif  // VG_ENGINE_MODEL_MATRIX_LAYOUT_H_
