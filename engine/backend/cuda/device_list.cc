// ListCudaDevices (cuda_backend.h): the devices the driver reports, and its failures worded for
// an operator.
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/cuda_backend.h"

namespace vg::engine {
namespace {

// cudaGetDeviceCount's failures, worded for an operator.
absl::Status DeviceCountError(cudaError_t error) {
  if (error == cudaErrorNoDevice) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: ", cudaGetErrorString(error)));
  }
  if (error == cudaErrorInsufficientDriver) {
    return absl::FailedPreconditionError(absl::StrCat("no CUDA driver (or one too old for CUDA ",
                                                      CUDART_VERSION / 1000,
                                                      "): ", cudaGetErrorString(error)));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no CUDA driver or device usable: ", cudaGetErrorName(error), ": ",
                   cudaGetErrorString(error)));
}

}  // namespace

absl::StatusOr<std::vector<CudaDeviceInfo>> ListCudaDevices() {
  int count = 0;
  if (cudaError_t error = cudaGetDeviceCount(&count); error != cudaSuccess) {
    return DeviceCountError(error);
  }
  if (count == 0) return absl::FailedPreconditionError("no CUDA device: the driver reports none");
  std::vector<CudaDeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaError_t error = cudaGetDeviceProperties(&prop, i); error != cudaSuccess) {
      return absl::InternalError(
          absl::StrCat("cudaGetDeviceProperties: ", cudaGetErrorString(error)));
    }
    CudaDeviceInfo info{.index = i,
                        .name = prop.name,
                        .total_memory_bytes = static_cast<int64_t>(prop.totalGlobalMem),
                        .compute_capability_major = prop.major,
                        .compute_capability_minor = prop.minor};
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaSetDevice(i) == cudaSuccess &&
        cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
      info.free_memory_bytes = static_cast<int64_t>(free_bytes);
    }
    devices.push_back(std::move(info));
  }
  return devices;
}

}  // namespace vg::engine
