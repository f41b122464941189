// The ABI between the server and the CUDA backend plugin (libvaultgemma_cuda.so, issue 7).
//
// The plugin is a shared library the server dlopen()s at run time, after the Prometheus exposer
// has started (../shared/TOOLCHAIN.md, landmine 2: cuBLASLt's static TLS breaks civetweb's
// threads when linked into the executable). It exports one C-linkage symbol,
// `VgCudaPluginGetApi`, returning a static table of functions. This header includes no CUDA
// header, so the loader (engine/backend/cuda_plugin_loader.h) compiles without CUDA.
//
// Both sides are built by the same compiler, standard library and Abseil in the same CMake build,
// so the table passes C++ types (absl::Status, std::unique_ptr, std::string) across the boundary;
// kVgCudaPluginAbiVersion is bumped whenever this header changes and the loader refuses a plugin
// whose version differs. A plugin from another build is not supported.
//
// Thread-safety: every function in the table may be called from any thread; the Backend it
// creates has Backend's contract (one caller).
#ifndef VG_ENGINE_BACKEND_CUDA_PLUGIN_API_H_
#define VG_ENGINE_BACKEND_CUDA_PLUGIN_API_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/checkpoint.h"

namespace vg::engine {

inline constexpr int32_t kVgCudaPluginAbiVersion = 3;
inline constexpr char kVgCudaPluginEntryPoint[] = "VgCudaPluginGetApi";

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int64_t total_memory_bytes = 0;
  int64_t free_memory_bytes = 0;
  int compute_capability_major = 0;
  int compute_capability_minor = 0;
};

struct CudaBackendOptions {
  int device_index = 0;
  int32_t block_size = 16;
  // Fraction of the device memory left after the weights that the KV pool takes, in (0, 1].
  double gpu_memory_utilization = 0.9;
  int32_t max_num_blocks = 0;  // > 0 caps the pool (tests); 0 = what the fraction gives
  // The largest step the engine schedules: tokens (its max_batched_tokens) and sequences (its
  // max_num_seqs). The activations for such a step are allocated before the KV pool is sized,
  // so the pool cannot leave them without room. 0 = allocate on demand, and no CUDA graphs.
  int32_t max_step_tokens = 0;
  int32_t max_num_seqs = 0;
  // Decode steps (every entry one new token) replay a CUDA graph captured, on first use, for
  // each batch-size bucket (1, 2, 4, then multiples of 8 up to max_num_seqs); a smaller batch is
  // padded to its bucket. false runs every kernel eagerly (vLLM's --enforce-eager).
  bool cuda_graphs = true;
  // Batch-invariant GEMMs (kernels/gemm.h): a sequence's logits, and so a seeded request's
  // tokens, do not depend on the other sequences in its step. Slower.
  bool deterministic = false;
  // Tests: fill the KV pool (once) and every activation buffer (before each step) with 0xFF bytes
  // (NaN in float32 and BF16), so that a read of anything not written shows in the logits.
  bool poison_buffers = false;
};

struct VgCudaPluginApi {
  int32_t abi_version;
  // The CUDA devices present. FAILED_PRECONDITION "no CUDA driver ..." when the driver is missing
  // or too old, "no CUDA device ..." when it finds none.
  absl::StatusOr<std::vector<CudaDeviceInfo>> (*list_devices)();
  // A backend on options.device_index over `checkpoint` (which must outlive it): weights uploaded
  // as BF16, a KV pool sized from gpu_memory_utilization. FAILED_PRECONDITION for a missing
  // driver or device, INVALID_ARGUMENT for a device index out of range or bad options,
  // RESOURCE_EXHAUSTED when the weights or the pool do not fit.
  absl::StatusOr<std::unique_ptr<Backend>> (*create_backend)(const Checkpoint& checkpoint,
                                                             const CudaBackendOptions& options);
};

}  // namespace vg::engine

// The plugin's only exported symbol; the returned table lives as long as the library is loaded.
extern "C" const vg::engine::VgCudaPluginApi* VgCudaPluginGetApi();

#endif  // VG_ENGINE_BACKEND_CUDA_PLUGIN_API_H_
