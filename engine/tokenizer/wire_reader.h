// WireReader: a bounds-checked reader of the protobuf binary wire format, just enough to decode
// sentencepiece.ModelProto without linking libprotobuf (the engine must not include protobuf
// headers, and Debian's libsentencepiece cannot be linked at all; see tokenizer.h).
//
// It walks the fields of one message: Next() returns the field number, wire type and payload, and
// the caller decides what is unknown. Like protoc-generated parsers, callers should treat a known
// field number arriving with an unexpected wire type as an unknown field (skip it). Every length is
// checked against the remaining bytes; malformed input yields INVALID_ARGUMENT, never a crash or an
// overread. Groups (wire types 3/4, deprecated) are skipped whole, nested up to a fixed depth.
//
// Thread-safety: a WireReader is a cursor over caller-owned bytes; not shared between threads.
#ifndef VG_ENGINE_TOKENIZER_WIRE_READER_H_
#define VG_ENGINE_TOKENIZER_WIRE_READER_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vg::engine {

enum class WireType : uint8_t {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5,
};

// One decoded field. Only the member matching `type` is meaningful; `bytes` points into the
// buffer given to the WireReader. A group's `bytes` spans its contents (without the end tag).
struct WireField {
  uint32_t number = 0;
  WireType type = WireType::kVarint;
  uint64_t varint = 0;
  uint64_t fixed = 0;  // fixed32 (zero-extended) or fixed64
  std::string_view bytes;

  // Interpretations of the payload, as protoc-generated code would read them.
  int32_t AsInt32() const { return static_cast<int32_t>(static_cast<uint32_t>(varint)); }
  bool AsBool() const { return varint != 0; }
  float AsFloat() const;
};

class WireReader {
 public:
  // `data` must outlive the reader and every WireField it returns.
  explicit WireReader(std::string_view data) : data_(data) {}

  bool done() const { return pos_ >= data_.size(); }

  // Decodes the next field. Precondition: !done(). INVALID_ARGUMENT on a truncated varint or
  // payload, field number 0, an unknown wire type, or an unbalanced group.
  absl::StatusOr<WireField> Next();

 private:
  absl::StatusOr<uint64_t> ReadVarint();
  absl::StatusOr<WireField> ReadField(int group_depth);
  absl::Status SkipGroup(uint32_t number, int group_depth);

  std::string_view data_;
  size_t pos_ = 0;
  size_t group_end_ = 0;  // position of the end tag of the group SkipGroup last finished
};

}  // namespace vg::engine

#endif  // VG_ENGINE_TOKENIZER_WIRE_READER_H_
