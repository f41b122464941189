// Read-only access to safetensors files.
//
// A safetensors file is `<u64 LE header length><JSON header><data>`; the header maps tensor names
// to {dtype, shape, data_offsets [begin, end)} relative to the start of the data section, plus an
// optional "__metadata__" object. Open() validates everything before any byte of tensor data is
// exposed: header length within the file, JSON well formed, known dtypes, non-negative shapes,
// byte size == product(shape) * dtype size, offsets within the data section, no two tensors
// overlapping. Whatever the file says, no accessor reads outside the mapping.
//
// Once validated, the whole file is read into anonymous memory advised into transparent huge
// pages (MADV_HUGEPAGE; the page cache's copy is then dropped with POSIX_FADV_DONTNEED). Decode
// streams every weight once per token: with 4 KiB pages the hardware prefetchers stop at every
// page boundary and each page costs a TLB miss (kernel_benchmark: 8-16% more bandwidth for
// decode-shaped products in huge pages). The data section starts on a 64-byte boundary. Where
// that memory cannot be had, the validated file mapping is used as it is.
#ifndef VG_ENGINE_MODEL_SAFETENSORS_H_
#define VG_ENGINE_MODEL_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/dtype.h"
#include "engine/model/matrix_layout.h"

namespace vg::engine {

// A tensor inside a mapped file. `data` stays valid as long as the owning SafetensorsFile lives.
// `data` has no alignment guarantee (the header length need not be a multiple of 8): read it with
// memcpy or copy it out before using aligned loads. Empty tensors have num_bytes == 0.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t num_bytes = 0;
  std::string file;  // file name (no directory) for error messages
  // How a 2-D tensor's elements are ordered: as the file stores them (row-major), or rearranged
  // in memory into tiles by Checkpoint (matrix_layout.h).
  MatrixLayout layout = MatrixLayout::kRowMajor;

  int64_t NumElements() const;
  // Element i widened to float32 (slow path for tests and small tensors).
  float GetFloat(int64_t i) const;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. NOT_FOUND if missing; INVALID_ARGUMENT (message names the file and,
  // where one is at fault, the tensor) for every malformed header.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::filesystem::path& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::filesystem::path& path() const { return path_; }
  size_t file_size() const { return size_; }

  // The tensor memory is read-only; SetWritable(true) lets its owner rearrange tensors in place
  // (Checkpoint's tile layout) until SetWritable(false). INTERNAL if mprotect fails.
  absl::Status SetWritable(bool writable);

 private:
  SafetensorsFile() = default;
  // Replaces the file mapping by a copy in huge pages (see above); DATA_LOSS if reading fails.
  absl::Status MoveToHugePages(int fd, uint64_t data_start);

  std::filesystem::path path_;
  void* mapping_ = nullptr;  // the file mapping, or the anonymous copy
  size_t mapping_bytes_ = 0;
  size_t size_ = 0;
  std::map<std::string, TensorView> tensors_;
};

}  // namespace vg::engine

#endif  // VG_ENGINE_MODEL_SAFETENSORS_H_
