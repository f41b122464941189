// Test helpers that write safetensors files and tiny VaultGemma checkpoints.
//
// Used by the model tests and reusable by any test that needs a checkpoint on disk (backend,
// runner). The writers are deliberately dumb: they write whatever they are given, so tests can
// build valid files and then corrupt the header (wrong dtypes, offsets, lengths) on purpose.
#ifndef VG_TESTS_ENGINE_MODEL_SAFETENSORS_WRITER_H_
#define VG_TESTS_ENGINE_MODEL_SAFETENSORS_WRITER_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/dtype.h"
#include "nlohmann/json.hpp"

namespace vg::test {

struct TestTensor {
  std::string name;
  std::string dtype;  // safetensors spelling, written verbatim ("F32", or "I64" to test errors)
  std::vector<int64_t> shape;
  std::string bytes;  // raw little-endian data
};

// Raw bytes of `values` in the given dtype (F32 exact, F16/BF16 rounded to nearest even).
std::string EncodeFloats(const std::vector<float>& values, engine::DType dtype);

// A tensor of `shape` filled with `values` (cycled if shorter than the element count).
TestTensor MakeTensor(std::string name, engine::DType dtype, std::vector<int64_t> shape,
                      const std::vector<float>& values);

// The JSON header for `tensors`, data laid out back to back in the given order.
nlohmann::json SafetensorsHeader(const std::vector<TestTensor>& tensors);
// The concatenated data section for `tensors` (matches SafetensorsHeader's offsets).
std::string SafetensorsData(const std::vector<TestTensor>& tensors);
// `<u64 LE len(header_text)><header_text><data>`; header_text may be anything.
std::string SafetensorsBytes(std::string_view header_text, std::string_view data);
// A complete valid file.
std::string SafetensorsBytes(const std::vector<TestTensor>& tensors);

absl::Status WriteFile(const std::filesystem::path& path, std::string_view contents);
absl::Status WriteSafetensors(const std::filesystem::path& path,
                              const std::vector<TestTensor>& tensors);

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A valid config.json for a tiny VaultGemma: vocab 32, hidden 8, intermediate 16, 2 layers,
// 2 heads, 1 KV head, head_dim 4, full attention everywhere, tied embeddings.
nlohmann::json TinyConfigJson();

// Every tensor `config` requires (biases when attention_bias, lm_head.weight when untied), with
// deterministic pseudo-random values from `seed`. Names sorted as Hugging Face writes them.
std::vector<TestTensor> TinyCheckpointTensors(const nlohmann::json& config, engine::DType dtype,
                                              uint32_t seed = 1);

// Writes config.json and model.safetensors into `dir` (which must exist).
absl::Status WriteTinyCheckpoint(const std::filesystem::path& dir, const nlohmann::json& config,
                                 const std::vector<TestTensor>& tensors);

}  // namespace vg::test

#endif  // VG_TESTS_ENGINE_MODEL_SAFETENSORS_WRITER_H_
