#include "engine/model/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <random>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/model/safetensors_writer.h"

namespace vg::engine {
namespace {

using nlohmann::json;
using test::MakeTensor;
using test::TestTensor;
using ::testing::HasSubstr;

std::vector<TestTensor> SampleTensors() {
  return {
      MakeTensor("model.embed_tokens.weight", DType::kBF16, {3, 2}, {1, 2, 3, 4, 5, 6}),
      MakeTensor("model.norm.weight", DType::kF32, {2}, {0.5f, -0.25f}),
      MakeTensor("half", DType::kF16, {2, 1}, {-1.5f, 1024.0f}),
      MakeTensor("empty", DType::kF32, {0, 4}, {}),
      MakeTensor("scalar", DType::kF32, {}, {42.0f}),
  };
}

class SafetensorsTest : public ::testing::Test {
 protected:
  std::filesystem::path Write(std::string_view contents, const char* name = "model.safetensors") {
    const std::filesystem::path path = dir_.path() / name;
    EXPECT_TRUE(test::WriteFile(path, contents).ok());
    return path;
  }

  // Opens a file holding `header` (serialized) and `data`, expecting INVALID_ARGUMENT.
  std::string ExpectInvalid(const json& header, std::string_view data) {
    return ExpectInvalidBytes(test::SafetensorsBytes(header.dump(), data));
  }

  std::string ExpectInvalidBytes(std::string_view bytes) {
    auto file = SafetensorsFile::Open(Write(bytes));
    EXPECT_FALSE(file.ok());
    if (file.ok()) return "";
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
    const std::string message(file.status().message());
    EXPECT_THAT(message, ::testing::StartsWith("model.safetensors: "));
    return message;
  }

  test::TempDir dir_;
};

// Reads every element of every tensor: under ASan any read outside the mapping fails the test.
float TouchAll(const SafetensorsFile& file) {
  float sum = 0;
  for (const auto& [name, view] : file.tensors()) {
    for (int64_t i = 0; i < view.NumElements(); ++i) sum += view.GetFloat(i);
  }
  return sum;
}

TEST_F(SafetensorsTest, ReadsValidFile) {
  const std::string bytes = test::SafetensorsBytes(SampleTensors());
  auto file = SafetensorsFile::Open(Write(bytes));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->file_size(), bytes.size());
  EXPECT_EQ((*file)->path().filename(), "model.safetensors");
  const auto& tensors = (*file)->tensors();
  ASSERT_EQ(tensors.size(), 5u);

  const TensorView& embed = tensors.at("model.embed_tokens.weight");
  EXPECT_EQ(embed.name, "model.embed_tokens.weight");
  EXPECT_EQ(embed.file, "model.safetensors");
  EXPECT_EQ(embed.dtype, DType::kBF16);
  EXPECT_EQ(embed.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(embed.NumElements(), 6);
  EXPECT_EQ(embed.num_bytes, 12u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(embed.GetFloat(i), i + 1.0f);

  const TensorView& norm = tensors.at("model.norm.weight");
  EXPECT_EQ(norm.dtype, DType::kF32);
  EXPECT_EQ(norm.GetFloat(0), 0.5f);
  EXPECT_EQ(norm.GetFloat(1), -0.25f);

  const TensorView& half = tensors.at("half");
  EXPECT_EQ(half.GetFloat(0), -1.5f);
  EXPECT_EQ(half.GetFloat(1), 1024.0f);

  EXPECT_EQ(tensors.at("empty").NumElements(), 0);
  EXPECT_EQ(tensors.at("empty").num_bytes, 0u);
  EXPECT_EQ(tensors.at("scalar").NumElements(), 1);
  EXPECT_EQ(tensors.at("scalar").GetFloat(0), 42.0f);
}

TEST_F(SafetensorsTest, MetadataAndPaddedHeader) {
  const auto tensors = SampleTensors();
  json header = test::SafetensorsHeader(tensors);
  header["__metadata__"] = {{"format", "pt"}};
  // The format allows trailing spaces after the JSON to align the data section.
  std::string text = header.dump();
  text.append(8 - text.size() % 8, ' ');
  auto file =
      SafetensorsFile::Open(Write(test::SafetensorsBytes(text, test::SafetensorsData(tensors))));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().count("__metadata__"), 0u);
  EXPECT_EQ((*file)->tensors().size(), tensors.size());

  header["__metadata__"] = {{"format", 1}};
  EXPECT_THAT(ExpectInvalid(header, test::SafetensorsData(tensors)),
              HasSubstr("__metadata__ value for 'format' is not a string"));
  header["__metadata__"] = "pt";
  EXPECT_THAT(ExpectInvalid(header, test::SafetensorsData(tensors)),
              HasSubstr("__metadata__ is not an object"));
}

// The data section is copied so that it starts on a cache line, whatever the header length.
TEST_F(SafetensorsTest, DataSectionStartsOnACacheLine) {
  for (int pad = 0; pad < 9; ++pad) {
    const json header = {{"t", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
                         {"__metadata__", {{"pad", std::string(pad, 'x')}}}};
    const float values[2] = {1.5f, -2.0f};
    auto file = SafetensorsFile::Open(Write(test::SafetensorsBytes(
        header.dump(), std::string_view(reinterpret_cast<const char*>(values), 8))));
    ASSERT_TRUE(file.ok()) << file.status();
    const TensorView& t = (*file)->tensors().at("t");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << "pad " << pad;
    EXPECT_EQ(t.GetFloat(0), 1.5f);
    EXPECT_EQ(t.GetFloat(1), -2.0f);
  }
}

TEST_F(SafetensorsTest, EmptyHeaderObjectIsAValidEmptyFile) {
  auto file = SafetensorsFile::Open(Write(test::SafetensorsBytes("{}", "")));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
}

TEST_F(SafetensorsTest, MissingFileDirectoryAndTinyFiles) {
  auto missing = SafetensorsFile::Open(dir_.path() / "nope.safetensors");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.safetensors"));

  auto directory = SafetensorsFile::Open(dir_.path());
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(directory.status().message()), HasSubstr("is a directory"));

  EXPECT_THAT(ExpectInvalidBytes(""), HasSubstr("0 bytes, too short"));
  EXPECT_THAT(ExpectInvalidBytes("1234567"), HasSubstr("too short"));
}

TEST_F(SafetensorsTest, DevicesAreNotRegularFiles) {
  auto file = SafetensorsFile::Open("/dev/null");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("not a regular file"));
}

TEST_F(SafetensorsTest, EveryTruncationIsAnErrorNotACrash) {
  const std::string bytes = test::SafetensorsBytes(SampleTensors());
  for (size_t length = 0; length <= bytes.size(); ++length) {
    auto file = SafetensorsFile::Open(Write(bytes.substr(0, length)));
    if (length == bytes.size()) {
      ASSERT_TRUE(file.ok()) << file.status();
    } else {
      ASSERT_FALSE(file.ok()) << "prefix of " << length << " bytes was accepted";
      EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  std::string bytes = test::SafetensorsBytes(SampleTensors());
  bytes[0] = static_cast<char>(0xff);
  bytes[7] = static_cast<char>(0x7f);
  EXPECT_THAT(ExpectInvalidBytes(bytes), HasSubstr("runs past the end of the file"));
  std::string all_ones(16, static_cast<char>(0xff));
  EXPECT_THAT(ExpectInvalidBytes(all_ones), HasSubstr("runs past the end of the file"));
}

TEST_F(SafetensorsTest, HeaderOverLimitIsRefused) {
  // A sparse file: 8-byte length prefix claiming a 100'000'001-byte header, and that many bytes.
  const uint64_t n = 100'000'001;
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  const auto path = Write(prefix);
  ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(8 + n)), 0);
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("exceeds the 100000000-byte limit"));
}

TEST_F(SafetensorsTest, InvalidJson) {
  EXPECT_THAT(ExpectInvalidBytes(test::SafetensorsBytes("{\"a\": ", "")),
              HasSubstr("header is not valid JSON"));
  EXPECT_THAT(ExpectInvalidBytes(test::SafetensorsBytes("[1, 2]", "")),
              HasSubstr("header is not a JSON object"));
  // Invalid UTF-8 inside a JSON string.
  EXPECT_THAT(ExpectInvalidBytes(test::SafetensorsBytes("{\"\xff\": 1}", "")),
              HasSubstr("header is not valid JSON"));
  EXPECT_THAT(ExpectInvalidBytes(test::SafetensorsBytes(std::string("{}\0", 3), "")),
              HasSubstr("header is not valid JSON"));
}

TEST_F(SafetensorsTest, MalformedEntries) {
  const std::string data(16, '\0');
  auto entry = [](json value) { return json{{"t", std::move(value)}}; };
  EXPECT_THAT(ExpectInvalid(entry(3), data), HasSubstr("tensor 't': entry is not an object"));
  EXPECT_THAT(ExpectInvalid(entry({{"shape", {4}}, {"data_offsets", {0, 16}}}), data),
              HasSubstr("tensor 't': missing string 'dtype'"));
  EXPECT_THAT(ExpectInvalid(entry({{"dtype", "F32"}, {"data_offsets", {0, 16}}}), data),
              HasSubstr("missing array 'shape'"));
  EXPECT_THAT(ExpectInvalid(entry({{"dtype", "F32"}, {"shape", {4}}}), data),
              HasSubstr("missing array 'data_offsets'"));
  EXPECT_THAT(
      ExpectInvalid(entry({{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16, 3}}}), data),
      HasSubstr("data_offsets must be two non-negative integers"));
  EXPECT_THAT(
      ExpectInvalid(entry({{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {-1, 15}}}), data),
      HasSubstr("data_offsets must be two non-negative integers"));
  EXPECT_THAT(
      ExpectInvalid(entry({{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0.0, 16}}}), data),
      HasSubstr("data_offsets must be two non-negative integers"));
}

TEST_F(SafetensorsTest, UnsupportedDType) {
  json header = {
      {"model.norm.weight", {{"dtype", "I64"}, {"shape", {2}}, {"data_offsets", {0, 16}}}}};
  const std::string message = ExpectInvalid(header, std::string(16, '\0'));
  EXPECT_THAT(message, HasSubstr("model.safetensors"));
  EXPECT_THAT(message, HasSubstr("'model.norm.weight'"));
  EXPECT_THAT(message, HasSubstr("I64"));
}

TEST_F(SafetensorsTest, BadShapes) {
  const std::string data(16, '\0');
  auto with_shape = [](json shape) {
    return json{{"t", {{"dtype", "F32"}, {"shape", std::move(shape)}, {"data_offsets", {0, 16}}}}};
  };
  EXPECT_THAT(ExpectInvalid(with_shape({-4}), data),
              HasSubstr("shape entries must be non-negative integers"));
  EXPECT_THAT(ExpectInvalid(with_shape({2.0, 2}), data),
              HasSubstr("shape entries must be non-negative integers"));
  EXPECT_THAT(ExpectInvalid(with_shape({"4"}), data),
              HasSubstr("shape entries must be non-negative integers"));
  EXPECT_THAT(ExpectInvalid(with_shape(4), data), HasSubstr("missing array 'shape'"));
  // Products that overflow 64 bits, even when they wrap to zero.
  EXPECT_THAT(ExpectInvalid(with_shape({int64_t{1} << 40, int64_t{1} << 40}), data),
              HasSubstr("is too large"));
  EXPECT_THAT(ExpectInvalid(with_shape({int64_t{1} << 32, int64_t{1} << 32}), data),
              HasSubstr("is too large"));
  EXPECT_THAT(ExpectInvalid(with_shape({int64_t{1} << 62}), data), HasSubstr("is too large"));
  EXPECT_THAT(ExpectInvalid(with_shape(json::parse("[18446744073709551615]")), data),
              HasSubstr("shape entries must be non-negative integers"));
}

TEST_F(SafetensorsTest, ZeroDimensionAfterHugeOnesIsEmpty) {
  json header = {{"t",
                  {{"dtype", "F32"},
                   {"shape", {int64_t{1} << 40, int64_t{1} << 40, 0}},
                   {"data_offsets", {0, 0}}}}};
  auto file = SafetensorsFile::Open(Write(test::SafetensorsBytes(header.dump(), "")));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().at("t").num_bytes, 0u);
}

TEST_F(SafetensorsTest, OffsetsBeyondDataAndSizeMismatch) {
  const std::string data(12, '\0');
  json header = {
      {"model.norm.weight", {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {4, 16}}}}};
  EXPECT_THAT(ExpectInvalid(header, data),
              HasSubstr("tensor 'model.norm.weight': data_offsets [4, 16) run past the data "
                        "section (12 bytes)"));
  header["model.norm.weight"]["data_offsets"] = {8, 4};
  EXPECT_THAT(ExpectInvalid(header, data), HasSubstr("end before they begin"));
  header["model.norm.weight"]["shape"] = {64};
  header["model.norm.weight"]["data_offsets"] = {0, 12};
  EXPECT_EQ(ExpectInvalid(header, data),
            "model.safetensors: tensor 'model.norm.weight': data_offsets [0, 12) do not match "
            "shape [64] x F32 (256 bytes)");
  header["model.norm.weight"]["dtype"] = "BF16";
  header["model.norm.weight"]["shape"] = {2, 2};
  EXPECT_THAT(ExpectInvalid(header, data), HasSubstr("do not match shape [2, 2] x BF16 (8 bytes)"));
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  const std::string data(32, '\0');
  json header = {{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}}},
                 {"b", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {12, 28}}}}};
  EXPECT_THAT(ExpectInvalid(header, data),
              HasSubstr("tensors 'a' [0, 16) and 'b' [12, 28) overlap"));
  header["b"]["data_offsets"] = {0, 16};
  EXPECT_THAT(ExpectInvalid(header, data), HasSubstr("overlap"));
  // Adjacent, gapped and empty tensors are fine, even an empty one "inside" another.
  header["b"]["data_offsets"] = {16, 32};
  header["c"] = {{"dtype", "F16"}, {"shape", {0}}, {"data_offsets", {8, 8}}};
  auto file = SafetensorsFile::Open(Write(test::SafetensorsBytes(header.dump(), data)));
  ASSERT_TRUE(file.ok()) << file.status();
  header["b"]["data_offsets"] = {20, 36};
  header.erase("c");
  auto gapped = SafetensorsFile::Open(
      Write(test::SafetensorsBytes(header.dump(), data + std::string(8, '\0'))));
  EXPECT_TRUE(gapped.ok()) << gapped.status();
}

// Byte flips anywhere in the length prefix and header: Open either succeeds with tensors that lie
// inside the file, or fails cleanly. ASan turns any out-of-mapping read into a failure.
TEST_F(SafetensorsTest, RandomHeaderMutationsNeverCrash) {
  const auto tensors = SampleTensors();
  const std::string header = test::SafetensorsHeader(tensors).dump();
  const std::string valid = test::SafetensorsBytes(header, test::SafetensorsData(tensors));
  const size_t header_end = 8 + header.size();
  std::mt19937 rng(42);
  const std::string interesting = "{}[]\",:0123456789-e ";
  int accepted = 0;
  for (int i = 0; i < 400; ++i) {
    std::string bytes = valid;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) {
      const size_t pos = rng() % header_end;
      switch (rng() % 3) {
        case 0:
          bytes[pos] = static_cast<char>(bytes[pos] ^ (1 << (rng() % 8)));
          break;
        case 1:
          bytes[pos] = interesting[rng() % interesting.size()];
          break;
        default:
          bytes[pos] = static_cast<char>(rng() % 256);
      }
    }
    auto file = SafetensorsFile::Open(Write(bytes));
    if (file.ok()) {
      ++accepted;
      TouchAll(**file);
      for (const auto& [name, view] : (*file)->tensors()) {
        const auto* begin = reinterpret_cast<const char*>(view.data);
        ASSERT_GE(view.num_bytes, 0u);
        ASSERT_TRUE(view.num_bytes == 0 || begin != nullptr);
      }
    } else {
      EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
    }
  }
  // Some flips (inside float data values of JSON strings) leave a valid file; most do not.
  EXPECT_LT(accepted, 400);
}

}  // namespace
}  // namespace vg::engine
