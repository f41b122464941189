#include "engine/backend/cuda/device_sampler.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/kernels/sampling.h"

namespace vg::engine::cuda {
namespace {

size_t AlignUp(size_t n) { return (n + 255) & ~size_t{255}; }

absl::Status SamplingError(cudaError_t error, const char* what) {
  return absl::InternalError(absl::StrCat("CUDA sampling: ", what, ": ", cudaGetErrorName(error),
                                          ": ", cudaGetErrorString(error)));
}

}  // namespace

DeviceSampler::~DeviceSampler() {
  Free(inputs_);
  Free(outputs_);
  cudaFree(scratch_);
}

void DeviceSampler::Free(Buffer& buffer) {
  if (buffer.host != nullptr) cudaFreeHost(buffer.host);
  cudaFree(buffer.device);
  buffer = {};
}

absl::Status DeviceSampler::Grow(Buffer& buffer, size_t bytes, const char* what) {
  if (buffer.bytes >= bytes) return absl::OkStatus();
  Free(buffer);
  const size_t size = AlignUp(std::max<size_t>(bytes + bytes / 4, 4096));
  if (cudaError_t e = cudaHostAlloc(&buffer.host, size, cudaHostAllocDefault); e != cudaSuccess) {
    buffer.host = nullptr;
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrCat("CUDA sampling: no pinned host memory for ", what));
  }
  if (cudaError_t e = cudaMalloc(&buffer.device, size); e != cudaSuccess) {
    buffer.device = nullptr;
    cudaGetLastError();
    Free(buffer);
    return absl::ResourceExhaustedError(absl::StrCat("CUDA sampling: no device memory for ", what));
  }
  buffer.bytes = size;
  return absl::OkStatus();
}

absl::Status DeviceSampler::ReserveScratch(int vocab) {
  size_t bytes = 0;
  if (cudaError_t e = SampleRowsScratchBytes(kRowsPerLaunch, vocab, &bytes); e != cudaSuccess) {
    return SamplingError(e, "scratch size");
  }
  if (scratch_bytes_ >= bytes) return absl::OkStatus();
  cudaFree(scratch_);
  scratch_ = nullptr;
  scratch_bytes_ = 0;
  if (cudaError_t e = cudaMalloc(&scratch_, bytes); e != cudaSuccess) {
    scratch_ = nullptr;
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrCat("CUDA sampling: no device memory for ", bytes, " bytes of sampling scratch"));
  }
  scratch_bytes_ = bytes;
  return absl::OkStatus();
}

absl::Status DeviceSampler::Enqueue(const float* logits, int vocab,
                                    std::span<const RowSampling> rows, cudaStream_t stream) {
  rows_ = 0;
  const size_t n = rows.size();
  if (n == 0) return absl::OkStatus();
  size_t repetition = 0, counts = 0;
  for (const RowSampling& row : rows) {
    if (row.top_logprobs < 0 || row.top_logprobs > kMaxDeviceTopLogprobs) {
      return absl::InvalidArgumentError(absl::StrCat(
          "top_logprobs must be in 0..", kMaxDeviceTopLogprobs, ", got ", row.top_logprobs));
    }
    repetition += row.repetition_ids.size();
    counts += row.output_counts.size();
  }
  if (repetition > INT32_MAX || counts > INT32_MAX) {
    return absl::InvalidArgumentError("CUDA sampling: penalty histories beyond int32");
  }
  // One upload: params, repetition ids, count ids, count values.
  const size_t params_at = 0;
  const size_t repetition_at = AlignUp(params_at + n * sizeof(DeviceSamplingRow));
  const size_t count_ids_at = AlignUp(repetition_at + repetition * sizeof(int32_t));
  const size_t count_values_at = AlignUp(count_ids_at + counts * sizeof(int32_t));
  const size_t bytes = AlignUp(count_values_at + counts * sizeof(int32_t));
  if (absl::Status s = Grow(inputs_, bytes, "sampling parameters"); !s.ok()) return s;
  if (absl::Status s = Grow(outputs_, n * sizeof(DeviceSample), "samples"); !s.ok()) return s;
  // Sized once per backend (the vocabulary does not change); usually already done at Create.
  if (scratch_ == nullptr) {
    if (absl::Status s = ReserveScratch(vocab); !s.ok()) return s;
  }

  auto* host = static_cast<std::byte*>(inputs_.host);
  auto* params = reinterpret_cast<DeviceSamplingRow*>(host + params_at);
  auto* repetition_ids = reinterpret_cast<int32_t*>(host + repetition_at);
  auto* count_ids = reinterpret_cast<int32_t*>(host + count_ids_at);
  auto* count_values = reinterpret_cast<int32_t*>(host + count_values_at);
  int32_t next_repetition = 0, next_count = 0;
  bool any_row_sorts = false;
  for (size_t r = 0; r < n; ++r) {
    const RowSampling& row = rows[r];
    DeviceSamplingRow& p = params[r];
    p = DeviceSamplingRow{};
    p.uniform = row.uniform;
    p.temperature = row.params.temperature;
    p.top_p = row.params.top_p;
    p.min_p = row.params.min_p;
    p.repetition_penalty = row.params.repetition_penalty;
    p.presence_penalty = row.params.presence_penalty;
    p.frequency_penalty = row.params.frequency_penalty;
    p.top_k = row.params.top_k;
    p.top_logprobs = row.top_logprobs;
    p.repetition_begin = next_repetition;
    p.repetition_count = static_cast<int32_t>(row.repetition_ids.size());
    for (int32_t id : row.repetition_ids) repetition_ids[next_repetition++] = id;
    p.counts_begin = next_count;
    p.counts_count = static_cast<int32_t>(row.output_counts.size());
    for (const auto& [id, count] : row.output_counts) {
      count_ids[next_count] = id;
      count_values[next_count++] = count;
    }
    any_row_sorts = any_row_sorts || NeedsSort(p);
  }
  if (cudaError_t e =
          cudaMemcpyAsync(inputs_.device, inputs_.host, bytes, cudaMemcpyHostToDevice, stream);
      e != cudaSuccess) {
    return SamplingError(e, "upload of the sampling parameters");
  }
  auto* device = static_cast<std::byte*>(inputs_.device);
  const auto* d_params = reinterpret_cast<const DeviceSamplingRow*>(device + params_at);
  const auto* d_repetition = reinterpret_cast<const int32_t*>(device + repetition_at);
  const auto* d_count_ids = reinterpret_cast<const int32_t*>(device + count_ids_at);
  const auto* d_count_values = reinterpret_cast<const int32_t*>(device + count_values_at);
  auto* d_out = static_cast<DeviceSample*>(outputs_.device);
  // Launches of at most kRowsPerLaunch rows share the scratch; the stream orders them.
  for (size_t first = 0; first < n; first += kRowsPerLaunch) {
    const int count = static_cast<int>(std::min<size_t>(kRowsPerLaunch, n - first));
    if (cudaError_t e = SampleRows(logits + first * static_cast<size_t>(vocab), count, vocab,
                                   d_params + first, d_repetition, d_count_ids, d_count_values,
                                   scratch_, scratch_bytes_, any_row_sorts, d_out + first, stream);
        e != cudaSuccess) {
      return SamplingError(e, "SampleRows");
    }
  }
  if (cudaError_t e = cudaMemcpyAsync(outputs_.host, outputs_.device, n * sizeof(DeviceSample),
                                      cudaMemcpyDeviceToHost, stream);
      e != cudaSuccess) {
    return SamplingError(e, "download of the samples");
  }
  rows_ = static_cast<int>(n);
  return absl::OkStatus();
}

void DeviceSampler::Collect(std::vector<RowSample>* samples) const {
  samples->clear();
  samples->reserve(rows_);
  const auto* out = static_cast<const DeviceSample*>(outputs_.host);
  for (int r = 0; r < rows_; ++r) {
    const DeviceSample& d = out[r];
    RowSample sample;
    sample.token_id = d.token_id;
    sample.logprob = d.logprob;
    sample.used_uniform = d.used_uniform != 0;
    const int top = std::clamp(d.top_count, 0, kMaxDeviceTopLogprobs);
    sample.top.reserve(top);
    for (int i = 0; i < top; ++i) {
      sample.top.push_back({.token_id = d.top_ids[i], .logprob = d.top_logprobs[i]});
    }
    samples->push_back(std::move(sample));
  }
}

}  // namespace vg::engine::cuda
