// Test helpers for the CUDA kernel tests: CUDA_OK and DeviceBuffer, a device array poisoned with
// 0xFF bytes (NaN for float32 and BF16, -1 for ints) so that an element a kernel should have
// written but did not shows in the result.
#ifndef VG_TESTS_GPU_DEVICE_BUFFER_H_
#define VG_TESTS_GPU_DEVICE_BUFFER_H_

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <vector>

// Asserts that a CUDA call returned cudaSuccess, naming the call and the error.
#define CUDA_OK(expr)                                                                \
  do {                                                                               \
    const cudaError_t vg_err_ = (expr);                                              \
    ASSERT_EQ(vg_err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(vg_err_); \
  } while (0)

namespace vg::engine::cuda {

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t count) : count_(count) {
    err_ = cudaMalloc(&ptr_, std::max<size_t>(count, 1) * sizeof(T));
    if (err_ == cudaSuccess) err_ = cudaMemset(ptr_, 0xFF, std::max<size_t>(count, 1) * sizeof(T));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    if (err_ == cudaSuccess && !host.empty()) {
      err_ = cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
    }
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Null when the allocation or upload failed, so a failure shows as a launch error.
  T* get() { return err_ == cudaSuccess ? ptr_ : nullptr; }
  cudaError_t status() const { return err_; }
  std::vector<T> Download() const {
    std::vector<T> host(count_);
    EXPECT_EQ(cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return host;
  }

 private:
  T* ptr_ = nullptr;
  size_t count_;
  cudaError_t err_ = cudaSuccess;
};

}  // namespace vg::engine::cuda

#endif  // VG_TESTS_GPU_DEVICE_BUFFER_H_
