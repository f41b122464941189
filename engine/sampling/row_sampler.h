// SampleRow: the contract of row_sampling.h carried out on the CPU, one logits row at a time.
//
// A backend that samples on its device must choose what this function chooses (up to float
// rounding); it is the reference the device kernels are checked against, the "device" of the test
// doubles, and the contract written as code. Over the same row, SampleRow(row,
// sampler.DeviceRow(k)) followed by sampler.Accept(...) gives what sampler.Sample(row, k) gives and
// leaves the Sampler in the same state (tests/engine/sampling/row_sampler_test.cc). It keeps no
// state: the history and the draw arrive in the RowSampling.
//
// Thread-safety: a pure function; the spans in `row` must stay unchanged during the call.
#ifndef VG_ENGINE_SAMPLING_ROW_SAMPLER_H_
#define VG_ENGINE_SAMPLING_ROW_SAMPLER_H_

#include <span>

#include "engine/sampling/row_sampling.h"

namespace vg::engine {

// Chooses one token from `logits` (one raw, soft-capped row, the whole vocabulary) as `row` says:
// penalties from row's spans, then greedy (first argmax) at temperature 0, else the warpers and
// the inverse-CDF draw with row.uniform over the survivors in canonical order (warpers.h);
// used_uniform is set exactly when that draw happens (temperature > 0 and the penalized row has a
// finite logit). A row without finite logits yields its argmax (token 0 when all are -inf or NaN).
// logprob and top are those of the raw row. An empty row yields token 0 and nothing else.
// Preconditions: row.params passed ValidateSamplingParams; 0 <= row.uniform < 1.
RowSample SampleRow(std::span<const float> logits, const RowSampling& row);

}  // namespace vg::engine

#endif  // VG_ENGINE_SAMPLING_ROW_SAMPLER_H_
