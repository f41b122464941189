// MatMul inner loops for the avx512 instruction set (flags: engine/backend/cpu/CMakeLists.txt).
#define VG_MATMUL_NAMESPACE avx512
#define VG_MATMUL_BYTES 64
#include "engine/backend/cpu/matmul_kernel_impl.h"
