// Element types of checkpoint tensors and the scalar conversions between them.
//
// Weights stay in the dtype they were stored in (BF16, F16 or F32); kernels widen them to float32
// as they read. The conversions here are exact (BF16/F16 -> F32) or round to nearest even
// (F32 -> BF16/F16), matching what PyTorch does for `tensor.to(dtype)`.
#ifndef VG_ENGINE_MODEL_DTYPE_H_
#define VG_ENGINE_MODEL_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace vg::engine {

enum class DType : uint8_t { kF32, kF16, kBF16 };

// Bytes per element.
constexpr size_t DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

// The safetensors spelling: "F32", "F16", "BF16".
std::string_view DTypeName(DType dtype);

// Parses a safetensors dtype string; nullopt for anything we do not load.
std::optional<DType> ParseSafetensorsDType(std::string_view name);

// The torch spelling, as config.json writes it: "float32", "float16", "bfloat16".
std::string_view TorchDTypeName(DType dtype);

// Parses a torch dtype name as written in config.json ("float32", "bfloat16", "float16",
// also "torch.bfloat16"); nullopt when unknown.
std::optional<DType> ParseTorchDType(std::string_view name);

inline float BF16ToFloat(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &wide, sizeof(out));
  return out;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t FloatToBF16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// IEEE 754 half -> float, exact (subnormals, infinities and NaN included).
float F16ToFloat(uint16_t bits);

// float -> IEEE 754 half, round to nearest even, overflow to infinity.
uint16_t FloatToF16(float value);

}  // namespace vg::engine

#endif  // VG_ENGINE_MODEL_DTYPE_H_
