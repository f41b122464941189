#include "engine/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace vg::engine {
namespace {

using nlohmann::json;

// The reference implementation refuses headers over 100 MB; a larger one is corrupt or hostile.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Closes the descriptor on every return path; the mapping outlives it.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Non-negative JSON integer that fits in uint64.
bool AsCount(const json& value, uint64_t* out) {
  if (value.is_number_unsigned()) {
    *out = value.get<uint64_t>();
    return true;
  }
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(value.get<int64_t>());
    return true;
  }
  return false;
}

struct Extent {
  uint64_t begin;
  uint64_t end;
  std::string name;
};

}  // namespace

int64_t TensorView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

float TensorView::GetFloat(int64_t i) const {
  const std::byte* p = data + static_cast<size_t>(i) * DTypeSize(dtype);
  switch (dtype) {
    case DType::kF32: {
      float v;
      std::memcpy(&v, p, sizeof(v));
      return v;
    }
    case DType::kF16:
    case DType::kBF16: {
      uint16_t bits;
      std::memcpy(&bits, p, sizeof(bits));
      return dtype == DType::kF16 ? F16ToFloat(bits) : BF16ToFloat(bits);
    }
  }
  return 0.0f;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_bytes_);
}

absl::Status SafetensorsFile::SetWritable(bool writable) {
  if (mapping_ == nullptr) return absl::OkStatus();
  const int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  if (mprotect(mapping_, mapping_bytes_, prot) != 0) {
    return absl::InternalError(
        absl::StrCat(path_.string(), ": mprotect failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status SafetensorsFile::MoveToHugePages(int fd, uint64_t data_start) {
  constexpr size_t kHugePage = size_t{2} << 20;
  // The data section starts on a cache line, so vector loads of tensor rows split fewer lines.
  const size_t pad = static_cast<size_t>((64 - data_start % 64) % 64);
  const size_t length = size_ + pad + kHugePage;
  void* region = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) return absl::OkStatus();  // keep reading through the file mapping
  const uintptr_t start = reinterpret_cast<uintptr_t>(region);
  const uintptr_t aligned = (start + kHugePage - 1) & ~(kHugePage - 1);
  madvise(reinterpret_cast<void*>(aligned), length - (aligned - start), MADV_HUGEPAGE);
  std::byte* base = reinterpret_cast<std::byte*>(aligned) + pad;
  for (size_t done = 0; done < size_;) {
    const ssize_t n = pread(fd, base + done, size_ - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      munmap(region, length);
      return absl::DataLossError(absl::StrCat(path_.string(), ": read failed at byte ", done, ": ",
                                              n == 0 ? "the file shrank" : std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  // Keep only the pages that hold the file, so that (as with the file mapping) a read past its
  // end faults instead of finding zeros.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t kept = (pad + size_ + page - 1) / page * page;
  if (aligned > start) munmap(region, aligned - start);
  if (aligned + kept < start + length) {
    munmap(reinterpret_cast<void*>(aligned + kept), start + length - (aligned + kept));
  }
  mprotect(reinterpret_cast<void*>(aligned), kept, PROT_READ);
  const std::byte* old_base = static_cast<const std::byte*>(mapping_);
  for (auto& [name, view] : tensors_) {
    if (view.data != nullptr) view.data = base + (view.data - old_base);
  }
  munmap(mapping_, mapping_bytes_);
  mapping_ = reinterpret_cast<void*>(aligned);
  mapping_bytes_ = kept;
  // The copy is what is read from now on; the page cache's copy would only double the memory
  // charged to this process's cgroup.
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::filesystem::path& path) {
  const std::string file = path.filename().string();
  const std::string shown = path.string();
  auto invalid = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", parts...));
  };

  FileDescriptor fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat(shown, ": no such file"));
    }
    return absl::PermissionDeniedError(absl::StrCat(shown, ": cannot open: ", std::strerror(err)));
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    return absl::InternalError(absl::StrCat(shown, ": fstat failed: ", std::strerror(errno)));
  }
  if (S_ISDIR(st.st_mode)) return invalid("is a directory, not a safetensors file");
  if (!S_ISREG(st.st_mode)) return invalid("is not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    return invalid("file is ", size, " bytes, too short for a safetensors header (8 bytes)");
  }

  auto result = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  result->path_ = path;
  void* mapping = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (mapping == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat(shown, ": mmap of ", size, " bytes failed: ", std::strerror(errno)));
  }
  result->mapping_ = mapping;  // unmapped by the destructor on every error below
  result->mapping_bytes_ = size;
  result->size_ = size;
  const auto* base = static_cast<const unsigned char*>(mapping);

  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | base[i];
  if (header_bytes > size - 8) {
    return invalid("header length ", header_bytes, " runs past the end of the file (", size,
                   " bytes)");
  }
  if (header_bytes > kMaxHeaderBytes) {
    return invalid("header length ", header_bytes, " exceeds the ", kMaxHeaderBytes, "-byte limit");
  }
  const char* header_begin = reinterpret_cast<const char*>(base + 8);
  // nlohmann's lexer stops at a NUL byte as if the input ended there; valid JSON never holds a
  // raw NUL, so refuse it rather than ignore what follows.
  if (std::memchr(header_begin, '\0', header_bytes) != nullptr) {
    return invalid("header is not valid JSON (it contains a NUL byte)");
  }
  const json header =
      json::parse(header_begin, header_begin + header_bytes, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return invalid("header is not valid JSON");
  if (!header.is_object()) return invalid("header is not a JSON object");

  const uint64_t data_start = 8 + header_bytes;
  const uint64_t data_size = size - data_start;
  const std::byte* data = reinterpret_cast<const std::byte*>(base + data_start);
  std::vector<Extent> extents;
  for (const auto& item : header.items()) {
    // Named locals, not a structured binding: the lambda below captures `name` (clang 14, which
    // `make lint` uses, rejects capturing structured bindings).
    const std::string& name = item.key();
    const auto& entry = item.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return invalid("__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return invalid("__metadata__ value for '", key, "' is not a string");
        }
      }
      continue;
    }
    auto bad = [&](auto&&... parts) { return invalid("tensor '", name, "': ", parts...); };
    if (!entry.is_object()) return bad("entry is not an object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return bad("missing string 'dtype'");
    if (shape_it == entry.end() || !shape_it->is_array()) return bad("missing array 'shape'");
    if (offsets_it == entry.end() || !offsets_it->is_array()) {
      return bad("missing array 'data_offsets'");
    }
    const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
    std::optional<DType> dtype = ParseSafetensorsDType(dtype_name);
    if (!dtype.has_value()) {
      return bad("dtype ", dtype_name, " is not supported (F32, F16 and BF16 are)");
    }

    TensorView view;
    view.name = name;
    view.dtype = *dtype;
    view.file = file;
    // Elements and bytes are accumulated in uint64 with overflow checks; a shape whose byte size
    // does not fit cannot match any offsets.
    uint64_t num_elements = 1;
    bool overflow = false;
    bool empty = false;
    for (const json& dim : *shape_it) {
      uint64_t d = 0;
      if (!AsCount(dim, &d) || d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return bad("shape entries must be non-negative integers");
      }
      view.shape.push_back(static_cast<int64_t>(d));
      if (d == 0) empty = true;
      if (!empty && num_elements > std::numeric_limits<uint64_t>::max() / d) overflow = true;
      num_elements = empty ? 0 : num_elements * d;
    }
    const uint64_t element_size = DTypeSize(*dtype);
    // A zero dimension makes the tensor empty whatever overflowed before it.
    if (empty) overflow = false;
    if (overflow ||
        num_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / element_size) {
      return bad("shape ", ShapeString(view.shape), " x ", dtype_name, " is too large");
    }
    const uint64_t expected_bytes = num_elements * element_size;

    uint64_t begin = 0, end = 0;
    if (offsets_it->size() != 2 || !AsCount((*offsets_it)[0], &begin) ||
        !AsCount((*offsets_it)[1], &end)) {
      return bad("data_offsets must be two non-negative integers [begin, end]");
    }
    if (begin > end) return bad("data_offsets [", begin, ", ", end, ") end before they begin");
    if (end > data_size) {
      return bad("data_offsets [", begin, ", ", end, ") run past the data section (", data_size,
                 " bytes)");
    }
    if (end - begin != expected_bytes) {
      return bad("data_offsets [", begin, ", ", end, ") do not match shape ",
                 ShapeString(view.shape), " x ", dtype_name, " (", expected_bytes, " bytes)");
    }
    view.data = data + begin;
    view.num_bytes = static_cast<size_t>(expected_bytes);
    if (begin != end) extents.push_back(Extent{begin, end, name});
    result->tensors_.emplace(name, std::move(view));
  }

  std::sort(extents.begin(), extents.end(),
            [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < extents.size(); ++i) {
    if (extents[i].begin < extents[i - 1].end) {
      return invalid("tensors '", extents[i - 1].name, "' [", extents[i - 1].begin, ", ",
                     extents[i - 1].end, ") and '", extents[i].name, "' [", extents[i].begin, ", ",
                     extents[i].end, ") overlap");
    }
  }
  if (absl::Status moved = result->MoveToHugePages(fd.get(), data_start); !moved.ok()) return moved;
  return result;
}

}  // namespace vg::engine
