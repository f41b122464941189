// CudaPluginLoader: finds and dlopen()s the CUDA backend plugin (libvaultgemma_cuda.so).
//
// No CUDA dependency: only libdl. The server calls Load after its metrics exposer has started
// (TOOLCHAIN.md, landmine 2). Default location: `../lib/libvaultgemma_cuda.so` relative to the
// running executable (build/bin -> build/lib, /opt/vaultgemma/bin -> /opt/vaultgemma/lib), then
// the plain soname through the dynamic linker's search path (LD_LIBRARY_PATH, ld.so.cache).
// The library stays loaded for the life of the process (never dlclose()d: backends it created
// may still be alive). Thread-safety: Load may be called from any thread.
#ifndef VG_ENGINE_BACKEND_CUDA_PLUGIN_LOADER_H_
#define VG_ENGINE_BACKEND_CUDA_PLUGIN_LOADER_H_

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend/cuda/plugin_api.h"

namespace vg::engine {

inline constexpr char kCudaPluginFileName[] = "libvaultgemma_cuda.so";

// The default plugin path: <dir of /proc/self/exe>/../lib/libvaultgemma_cuda.so.
std::filesystem::path DefaultCudaPluginPath();

// Loads the plugin at `path` (empty = DefaultCudaPluginPath(), falling back to the soname) and
// returns its function table. NOT_FOUND naming the path and dlerror() when the library cannot be
// loaded; FAILED_PRECONDITION when it lacks the entry point or its ABI version differs from
// kVgCudaPluginAbiVersion.
absl::StatusOr<const VgCudaPluginApi*> LoadCudaPlugin(const std::filesystem::path& path = {});

// A --device value: -1 for "cpu", N for "cuda" (0) or "cuda:N". INVALID_ARGUMENT naming the flag
// and the accepted values otherwise.
absl::StatusOr<int> ParseDeviceFlag(const std::string& device);

// A --gpu-memory-utilization value, in (0, 1]; INVALID_ARGUMENT naming the flag otherwise.
absl::StatusOr<double> ParseGpuMemoryUtilization(const std::string& fraction);

// Makes backends on CUDA device options.device_index (engine::BackendFactory's signature).
using CudaBackendFactory =
    std::function<absl::StatusOr<std::unique_ptr<Backend>>(const Checkpoint& checkpoint)>;

// Loads the plugin (LoadCudaPlugin(plugin_path)), checks that the device exists, and returns a
// factory that creates the backend through it. Call it after the metrics exposer has started
// (TOOLCHAIN.md, landmine 2). The errors of LoadCudaPlugin and list_devices, or
// FAILED_PRECONDITION "this machine has N CUDA device(s)"; each message is one line.
absl::StatusOr<CudaBackendFactory> MakeCudaBackendFactory(const std::filesystem::path& plugin_path,
                                                          const CudaBackendOptions& options);

}  // namespace vg::engine

#endif  // VG_ENGINE_BACKEND_CUDA_PLUGIN_LOADER_H_
