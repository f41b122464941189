// MatMul inner loops for the baseline instruction set (flags: engine/backend/cpu/CMakeLists.txt).
#define VG_MATMUL_NAMESPACE baseline
#define VG_MATMUL_BYTES 16
#include "engine/backend/cpu/matmul_kernel_impl.h"
