#include "engine/tokenizer/wire_reader.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace vg::engine {
namespace {

// Deeper nesting than this is certainly not a sentencepiece model; the limit bounds recursion.
constexpr int kMaxGroupDepth = 32;

absl::Status Malformed(std::string_view what, size_t pos) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed protobuf: ", std::string(what), " at byte ", pos));
}

}  // namespace

float WireField::AsFloat() const {
  const uint32_t bits = static_cast<uint32_t>(fixed);
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

absl::StatusOr<uint64_t> WireReader::ReadVarint() {
  uint64_t value = 0;
  // A varint has at most 10 bytes; bits beyond 64 are dropped, as libprotobuf does.
  for (int i = 0; i < 10; ++i) {
    if (pos_ >= data_.size()) return Malformed("truncated varint", pos_);
    const uint8_t byte = static_cast<uint8_t>(data_[pos_++]);
    value |= static_cast<uint64_t>(byte & 0x7F) << (7 * i);
    if ((byte & 0x80) == 0) return value;
  }
  return Malformed("varint longer than 10 bytes", pos_);
}

absl::StatusOr<WireField> WireReader::Next() {
  const size_t field_pos = pos_;
  absl::StatusOr<WireField> field = ReadField(/*group_depth=*/0);
  if (field.ok() && field->type == WireType::kEndGroup) {
    return Malformed("end-group tag outside a group", field_pos);
  }
  return field;
}

absl::StatusOr<WireField> WireReader::ReadField(int group_depth) {
  const size_t tag_pos = pos_;
  absl::StatusOr<uint64_t> tag = ReadVarint();
  if (!tag.ok()) return tag.status();
  WireField field;
  if ((*tag >> 3) == 0 || (*tag >> 3) > 0x1FFFFFFF) return Malformed("bad field number", tag_pos);
  field.number = static_cast<uint32_t>(*tag >> 3);
  const uint32_t type = static_cast<uint32_t>(*tag & 7);
  switch (type) {
    case 0: {
      field.type = WireType::kVarint;
      absl::StatusOr<uint64_t> v = ReadVarint();
      if (!v.ok()) return v.status();
      field.varint = *v;
      return field;
    }
    case 1:
    case 5: {
      const size_t size = type == 1 ? 8 : 4;
      field.type = type == 1 ? WireType::kFixed64 : WireType::kFixed32;
      if (data_.size() - pos_ < size) return Malformed("truncated fixed-width field", pos_);
      uint64_t value = 0;
      for (size_t i = 0; i < size; ++i) {
        value |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
      }
      pos_ += size;
      field.fixed = value;
      return field;
    }
    case 2: {
      field.type = WireType::kLengthDelimited;
      absl::StatusOr<uint64_t> length = ReadVarint();
      if (!length.ok()) return length.status();
      // libprotobuf rejects lengths that do not fit in an int32; so do we.
      if (*length > 0x7FFFFFFF || *length > data_.size() - pos_) {
        return Malformed("length-delimited field runs past the end", pos_);
      }
      field.bytes = data_.substr(pos_, *length);
      pos_ += *length;
      return field;
    }
    case 3: {
      field.type = WireType::kStartGroup;
      const size_t start = pos_;
      absl::Status status = SkipGroup(field.number, group_depth + 1);
      if (!status.ok()) return status;
      field.bytes = data_.substr(start, group_end_ - start);
      return field;
    }
    case 4:
      field.type = WireType::kEndGroup;
      return field;
    default:
      return Malformed("unknown wire type", tag_pos);
  }
}

absl::Status WireReader::SkipGroup(uint32_t number, int group_depth) {
  if (group_depth > kMaxGroupDepth) return Malformed("groups nested too deeply", pos_);
  while (true) {
    if (pos_ >= data_.size()) return Malformed("unterminated group", pos_);
    const size_t field_pos = pos_;
    absl::StatusOr<WireField> field = ReadField(group_depth);
    if (!field.ok()) return field.status();
    if (field->type == WireType::kEndGroup) {
      if (field->number != number) return Malformed("mismatched end-group tag", field_pos);
      group_end_ = field_pos;
      return absl::OkStatus();
    }
  }
}

}  // namespace vg::engine
