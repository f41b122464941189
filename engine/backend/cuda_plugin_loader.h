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

}  // namespace vg::engine

#endif  // VG_ENGINE_BACKEND_CUDA_PLUGIN_LOADER_H_
