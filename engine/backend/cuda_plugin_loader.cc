#include "engine/backend/cuda_plugin_loader.h"

#include <dlfcn.h>

#include <string>
#include <system_error>

#include "absl/status/status.h"
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

}  // namespace vg::engine
