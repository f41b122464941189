#include "engine/backend/cuda_plugin_loader.h"

#include <dlfcn.h>

#include <string>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace vg::engine {

std::filesystem::path DefaultCudaPluginPath() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return kCudaPluginFileName;
  return exe.parent_path().parent_path() / "lib" / kCudaPluginFileName;
}

absl::StatusOr<const VgCudaPluginApi*> LoadCudaPlugin(const std::filesystem::path& path) {
  std::string where = path.empty() ? DefaultCudaPluginPath().string() : path.string();
  void* handle = dlopen(where.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr && path.empty()) {
    // Not next to the binaries: let the dynamic linker search for the soname.
    const std::string first_error = dlerror();
    handle = dlopen(kCudaPluginFileName, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      return absl::NotFoundError(absl::StrCat("cannot load the CUDA plugin ", where, " (",
                                              first_error, ") nor ", kCudaPluginFileName,
                                              " from the library path (", dlerror(), ")"));
    }
    where = kCudaPluginFileName;
  } else if (handle == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("cannot load the CUDA plugin ", where, ": ", dlerror()));
  }
  using GetApi = const VgCudaPluginApi* (*)();
  auto get_api = reinterpret_cast<GetApi>(dlsym(handle, kVgCudaPluginEntryPoint));
  if (get_api == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("the CUDA plugin ", where, " has no entry point ", kVgCudaPluginEntryPoint));
  }
  const VgCudaPluginApi* api = get_api();
  if (api == nullptr || api->abi_version != kVgCudaPluginAbiVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the CUDA plugin ", where, " has ABI version ", api == nullptr ? -1 : api->abi_version,
        ", this server needs ", kVgCudaPluginAbiVersion, " (a plugin from another build?)"));
  }
  return api;
}

absl::StatusOr<int> ParseDeviceFlag(const std::string& device) {
  if (device == "cpu") return -1;
  if (device == "cuda") return 0;
  int index = -1;
  if (device.rfind("cuda:", 0) == 0 && absl::SimpleAtoi(device.substr(5), &index) && index >= 0) {
    return index;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device must be cpu, cuda or cuda:N, got '", device, "'"));
}

absl::StatusOr<double> ParseGpuMemoryUtilization(const std::string& fraction) {
  double value = 0;
  if (!absl::SimpleAtod(fraction, &value) || !(value > 0 && value <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu-memory-utilization must be in (0, 1], got '", fraction, "'"));
  }
  return value;
}

absl::StatusOr<CudaBackendFactory> MakeCudaBackendFactory(const std::filesystem::path& plugin_path,
                                                          const CudaBackendOptions& options) {
  absl::StatusOr<const VgCudaPluginApi*> api = LoadCudaPlugin(plugin_path);
  if (!api.ok()) return api.status();
  auto devices = (*api)->list_devices();
  if (!devices.ok()) return devices.status();
  if (options.device_index >= static_cast<int>(devices->size())) {
    return absl::FailedPreconditionError(
        absl::StrCat("this machine has ", devices->size(), " CUDA device(s)"));
  }
  // The plugin stays loaded for the life of the process, so the table outlives the factory.
  return CudaBackendFactory([api = *api, options](const Checkpoint& checkpoint) {
    return api->create_backend(checkpoint, options);
  });
}

}  // namespace vg::engine
