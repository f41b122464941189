// DeviceSampler: the host side of sampling on the device for the CUDA backend.
//
// Packs a step's RowSampling (engine/sampling/row_sampling.h: parameters, the peeked draw and the
// penalty histories) into one pinned buffer, uploads it, runs kernels/sampling.h's SampleRows over
// the logits already on the device (at most kRowsPerLaunch rows per launch, so the sort scratch
// stays bounded), and downloads one DeviceSample per row: only the token, its log-probability and
// the requested top log-probabilities cross to the host, never the vocabulary-sized rows.
//
// Thread-safety: not thread-safe; owned by the backend and used by its one caller. Enqueue and
// Collect bracket a synchronisation of the stream by the caller.
#ifndef VG_ENGINE_BACKEND_CUDA_DEVICE_SAMPLER_H_
#define VG_ENGINE_BACKEND_CUDA_DEVICE_SAMPLER_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/sampling/row_sampling.h"

namespace vg::engine::cuda {

class DeviceSampler {
 public:
  static constexpr int kRowsPerLaunch = 64;

  DeviceSampler() = default;
  ~DeviceSampler();
  DeviceSampler(const DeviceSampler&) = delete;
  DeviceSampler& operator=(const DeviceSampler&) = delete;

  // Allocates the sort scratch for kRowsPerLaunch rows of `vocab` on the current device (so that
  // the KV pool is sized after it); Enqueue does it on first use otherwise. One vocabulary per
  // DeviceSampler. RESOURCE_EXHAUSTED when the device has no room.
  absl::Status ReserveScratch(int vocab);

  // Enqueues on `stream`: the upload of `rows`, SampleRows over logits (device, float
  // [rows.size()][vocab], soft-capped) and the download of the results. INVALID_ARGUMENT for a
  // row asking more than 20 top log-probabilities; RESOURCE_EXHAUSTED when pinned or device
  // memory runs out; INTERNAL for a CUDA error. On an error the caller synchronises the stream
  // before touching the buffers again.
  absl::Status Enqueue(const float* logits, int vocab, std::span<const RowSampling> rows,
                       cudaStream_t stream);

  // After the caller synchronised the stream: the samples of the last Enqueue, in row order.
  void Collect(std::vector<RowSample>* samples) const;

 private:
  struct Buffer {
    void* host = nullptr;    // pinned
    void* device = nullptr;  // same size
    size_t bytes = 0;
  };
  static absl::Status Grow(Buffer& buffer, size_t bytes, const char* what);
  static void Free(Buffer& buffer);

  Buffer inputs_;   // DeviceSamplingRow [n], then the id and count arrays
  Buffer outputs_;  // DeviceSample [n]
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  int rows_ = 0;  // of the last Enqueue
};

}  // namespace vg::engine::cuda

#endif  // VG_ENGINE_BACKEND_CUDA_DEVICE_SAMPLER_H_
