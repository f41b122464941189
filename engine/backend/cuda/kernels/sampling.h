// Sampling on the device: one logits row -> one token, as Sampler::Sample (engine/sampling) would
// choose it, without copying the vocabulary-sized rows back to the host.
//
// The host describes each row with a DeviceSamplingRow (the device-side form of RowSampling,
// engine/sampling/row_sampling.h) and SampleRows enqueues three steps on `stream`:
//   1. one block per row: the raw row's maximum, log-sum-exp (summed in double) and its
//      `top_logprobs` best entries (per-thread sorted lists merged by block reductions); then,
//      where needed, the penalized copy (repetition penalty, then presence/frequency) in the
//      scratch;
//   2. cub::DeviceSegmentedRadixSort::SortPairsDescending over (penalized logit, id), only for the
//      rows with temperature > 0 and top_k > 0 or top_p < 1 (every other row is an empty segment);
//      the sort is stable, so ties stay in ascending id;
//   3. one block per row: greedy rows take the first index of the maximum; rows with neither top-k
//      nor top-p draw in ascending id order by a tiled block scan of the weights (no sort); sorted
//      rows cut top-k by binary search, top-p and the draw by the same tiled scan in sorted order,
//      min-p by a block reduction.
// Cost per row: greedy rows read the row 3 times, pure-temperature rows up to 5 (no sort; a
// penalized copy adds one write); sorted rows add a radix sort of the whole row (one block per
// row). The scratch holds the sort's two double buffers for every row, sized for the worst case
// (see SampleRowsScratchBytes).
//
// Where the result can differ from the CPU: sums run in parallel (log-sum-exp, the total weight,
// the cumulative weights of top-p and of the draw), so they differ by double rounding, and the
// device's exp/expf differ from libm's by an ulp; a draw within ~1e-12 relative of a bin boundary,
// a top-p cut whose mass lands on 1 - top_p within that, or a weight within an ulp of min_p may
// come out the other way. Nothing else differs: the penalties use the CPU's float operations (no
// FMA contraction), -0.0 ties with +0.0, NaN counts as -inf. +inf logits are not supported
// (soft-capped rows are finite, -inf or NaN).
//
// All pointers are device pointers. The functions enqueue work and return at once; none
// synchronises the host. Thread-safety: as the CUDA stream API.
#ifndef VG_ENGINE_BACKEND_CUDA_KERNELS_SAMPLING_H_
#define VG_ENGINE_BACKEND_CUDA_KERNELS_SAMPLING_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace vg::engine::cuda {

inline constexpr int kMaxDeviceTopLogprobs = 20;

// One logits row's sampling instructions, device-resident (the host fills an array of these in
// pinned memory and uploads it with the step). Fields mirror SamplingParams and RowSampling; the
// parameters must have passed ValidateSamplingParams. Plain data, the same layout on host and
// device.
struct DeviceSamplingRow {
  double uniform = 0.0;  // the draw in [0, 1); used only when temperature > 0
  float temperature = 0.0f;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t top_k = 0;
  int32_t top_logprobs = 0;  // 0..kMaxDeviceTopLogprobs (clamped to that range and to vocab)
  // repetition_ids[repetition_begin, +repetition_count): distinct ids of prompt and output.
  int32_t repetition_begin = 0;
  int32_t repetition_count = 0;
  // count_ids / count_values[counts_begin, +counts_count): distinct output ids and their counts.
  int32_t counts_begin = 0;
  int32_t counts_count = 0;
};

// The chosen token of one row and the raw row's log-probabilities.
struct DeviceSample {
  int32_t token_id;
  float logprob;         // of token_id under the raw row; -inf for a row without finite logits
  int32_t used_uniform;  // 1 when the draw was consumed (Sampler::Accept advances the stream)
  int32_t top_count;     // min(top_logprobs, vocab); entries past it are unspecified
  int32_t top_ids[kMaxDeviceTopLogprobs];  // descending logit, ties by lower id
  float top_logprobs[kMaxDeviceTopLogprobs];
};

// Sets *bytes to the scratch SampleRows needs for `rows` rows of `vocab` entries:
//   16 * rows * vocab (two float and two int32 sort buffers; the first float buffer is the
//   penalized copy) + 16 * rows (log-sum-exp, segment offsets) + CUB's temporary storage (a few
//   hundred bytes) + up to 256 bytes of alignment per part. At 512 x 256000 that is ~2.1 GB.
// Returns cudaErrorInvalidValue when rows < 0, vocab <= 0 or rows * vocab exceeds INT32_MAX (CUB's
// segment offsets are int), or CUB's size query error. Host function; launches nothing, but CUB
// may query the current device.
cudaError_t SampleRowsScratchBytes(int rows, int vocab, size_t* bytes);

// Samples `rows` rows. logits: float [rows][vocab], the raw soft-capped row, read only. params:
// [rows]. repetition_ids, count_ids, count_values: the slices named by params (may be null when
// every slice is empty); ids outside [0, vocab) are ignored. scratch: at least
// SampleRowsScratchBytes(rows, vocab) bytes, 256-byte aligned (cudaMalloc's), not shared with
// another SampleRows in flight. out: [rows]. Per row, as Sampler::Sample:
//   * logprob and top_* come from log_softmax of the raw row (NaN as -inf);
//   * temperature == 0: the first index of the maximum of the penalized row; used_uniform = 0;
//   * temperature > 0: the warpers (top-k keeps ties with the k-th; top-p and min-p as
//     engine/sampling/warpers.h), then the first survivor whose cumulative weight exceeds
//     uniform * total, in ascending id order when top_k == 0 and top_p == 1, else in descending
//     logit order, ties by lower id; used_uniform = 1;
//   * no finite penalized logit: token 0, used_uniform = 0.
// Returns the first launch or CUB error, or cudaErrorInvalidValue for bad sizes, a null pointer
// or a scratch smaller than needed. rows == 0 enqueues nothing and returns cudaSuccess.
// any_row_sorts: false skips the sort's launches (a greedy or pure-temperature batch); it must
// be true when some row has temperature > 0 and (top_k > 0 or top_p < 1), the rows that need the
// sort (NeedsSort).
cudaError_t SampleRows(const float* logits, int rows, int vocab, const DeviceSamplingRow* params,
                       const int32_t* repetition_ids, const int32_t* count_ids,
                       const int32_t* count_values, void* scratch, size_t scratch_bytes,
                       bool any_row_sorts, DeviceSample* out, cudaStream_t stream);

// Whether SampleRows sorts this row (host function).
inline bool NeedsSort(const DeviceSamplingRow& row) {
  return row.temperature > 0.0f && (row.top_k > 0 || row.top_p < 1.0f);
}

}  // namespace vg::engine::cuda

#endif  // VG_ENGINE_BACKEND_CUDA_KERNELS_SAMPLING_H_
