// Fuzzes SafetensorsFile::Open (engine/model/safetensors.h): the 8-byte header length, the JSON
// header and the tensor table, i.e. everything a malicious checkpoint controls.
//
// The input is the whole file. Open takes a path, so the bytes go into a memfd that is opened as
// /proc/self/fd/N (no disk traffic, one descriptor for the whole run). For an accepted file the
// harness checks what the header comment promises: every view's size matches its shape and dtype,
// and its bytes are exactly the file's bytes at the view's data_offsets (read from the header
// independently), so a view pointing anywhere else is a check failure, an ASan report or a SEGV.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "engine/model/dtype.h"
#include "engine/model/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_check.h"

namespace {

using vg::engine::SafetensorsFile;
using vg::engine::TensorView;

int MemFd() {
  static const int fd = memfd_create("safetensors_fuzzer", MFD_CLOEXEC);
  return fd;
}

bool WriteAll(int fd, const uint8_t* data, size_t size) {
  if (ftruncate(fd, 0) != 0) return false;
  for (size_t done = 0; done < size;) {
    const ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

void CheckView(const TensorView& view, const nlohmann::json& header, const uint8_t* data,
               size_t size) {
  int64_t elements = 1;
  for (int64_t d : view.shape) {
    VG_FUZZ_CHECK(d >= 0, view.name);
    elements *= d;  // Open refused shapes whose byte size overflows
  }
  VG_FUZZ_CHECK(view.NumElements() == elements, view.name);
  VG_FUZZ_CHECK(view.num_bytes == static_cast<size_t>(elements) * vg::engine::DTypeSize(view.dtype),
                view.name);
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | data[i];
  const uint64_t begin = header.at(view.name).at("data_offsets").at(0).get<uint64_t>();
  VG_FUZZ_CHECK(8 + header_bytes + begin + view.num_bytes <= size, view.name);
  if (view.num_bytes == 0) return;
  VG_FUZZ_CHECK(view.data != nullptr, view.name);
  VG_FUZZ_CHECK(std::memcmp(view.data, data + 8 + header_bytes + begin, view.num_bytes) == 0,
                "tensor '" + view.name + "' does not hold the bytes its data_offsets name");
  volatile float sink = view.GetFloat(0) + view.GetFloat(elements - 1);
  (void)sink;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = MemFd();
  if (fd < 0 || !WriteAll(fd, data, size)) std::abort();  // the harness itself is broken
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) {
    // Malformed files are INVALID_ARGUMENT; only resource failures (mmap) may differ.
    const absl::StatusCode code = file.status().code();
    VG_FUZZ_CHECK(
        code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kResourceExhausted,
        file.status().ToString());
    return 0;
  }
  VG_FUZZ_CHECK((*file)->file_size() == size, "file_size");
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | data[i];
  const char* json_begin = reinterpret_cast<const char*>(data) + 8;
  const nlohmann::json header =
      nlohmann::json::parse(json_begin, json_begin + header_bytes, nullptr, false);
  VG_FUZZ_CHECK(header.is_object(), "accepted a header that is not a JSON object");
  for (const auto& [name, view] : (*file)->tensors()) {
    VG_FUZZ_CHECK(name == view.name, name);
    VG_FUZZ_CHECK(name != "__metadata__", "__metadata__ became a tensor");
    CheckView(view, header, data, size);
  }
  return 0;
}
