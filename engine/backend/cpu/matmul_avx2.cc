// MatMul inner loops for the avx2 instruction set (flags: engine/backend/cpu/CMakeLists.txt).
#define VG_MATMUL_NAMESPACE avx2
#define VG_MATMUL_BYTES 32
#include "engine/backend/cpu/matmul_kernel_impl.h"
