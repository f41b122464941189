#include "engine/model/dtype.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/model/safetensors.h"
#include "gtest/gtest.h"

namespace vg::engine {
namespace {

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// Independent reference for F16 -> float: the textbook formula in double.
double F16Reference(uint16_t h) {
  const int sign = (h & 0x8000) ? -1 : 1;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  if (exponent == 31) {
    return mantissa ? std::numeric_limits<double>::quiet_NaN()
                    : sign * std::numeric_limits<double>::infinity();
  }
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

// Round-to-nearest-even reference for positive finite x by search over all finite halves.
uint16_t F16RneReference(float x) {
  static const std::vector<double> values = [] {
    std::vector<double> v;
    for (uint32_t h = 0; h <= 0x7bff; ++h) v.push_back(F16Reference(static_cast<uint16_t>(h)));
    return v;
  }();
  const double d = x;
  if (d >= 65520.0) return 0x7c00;
  auto it = std::lower_bound(values.begin(), values.end(), d);
  if (it == values.end()) return 0x7bff;
  const uint16_t hi = static_cast<uint16_t>(it - values.begin());
  if (*it == d || hi == 0) return hi;
  const uint16_t lo = hi - 1;
  const double dlo = d - values[lo], dhi = values[hi] - d;
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1) ? hi : lo;
}

TEST(DTypeTest, NamesAndSizes) {
  EXPECT_EQ(DTypeName(DType::kF32), "F32");
  EXPECT_EQ(DTypeName(DType::kF16), "F16");
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
    EXPECT_EQ(ParseSafetensorsDType(DTypeName(d)), d);
  }
  for (const char* bad : {"I64", "F64", "U8", "bf16", "", "F8_E4M3", "BOOL"}) {
    EXPECT_FALSE(ParseSafetensorsDType(bad).has_value()) << bad;
  }
}

TEST(DTypeTest, TorchNames) {
  EXPECT_EQ(ParseTorchDType("float32"), DType::kF32);
  EXPECT_EQ(ParseTorchDType("float"), DType::kF32);
  EXPECT_EQ(ParseTorchDType("torch.float32"), DType::kF32);
  EXPECT_EQ(ParseTorchDType("bfloat16"), DType::kBF16);
  EXPECT_EQ(ParseTorchDType("torch.bfloat16"), DType::kBF16);
  EXPECT_EQ(ParseTorchDType("float16"), DType::kF16);
  EXPECT_EQ(ParseTorchDType("half"), DType::kF16);
  EXPECT_EQ(ParseTorchDType("torch.half"), DType::kF16);
  for (const char* bad : {"int8", "float64", "torch.", "", "auto", "BF16", "torch.torch.float"}) {
    EXPECT_FALSE(ParseTorchDType(bad).has_value()) << bad;
  }
}

TEST(DTypeTest, F16ToFloatIsExactForEveryBitPattern) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float got = F16ToFloat(static_cast<uint16_t>(h));
    const double want = F16Reference(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << h;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << std::hex << h;
      EXPECT_EQ(std::signbit(got), (h & 0x8000) != 0) << std::hex << h;
    }
  }
  EXPECT_EQ(F16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(F16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToFloat(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(F16ToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(F16ToFloat(0xfc00), -std::numeric_limits<float>::infinity());
}

TEST(DTypeTest, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = F16ToFloat(static_cast<uint16_t>(h));
    const uint16_t back = FloatToF16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToFloat(back))) << std::hex << h;
      EXPECT_EQ(back & 0x8000, h & 0x8000) << std::hex << h;
    } else {
      EXPECT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(DTypeTest, F16RoundsTiesToEvenIncludingSubnormals) {
  // Midpoints between every pair of adjacent finite halves are exact in float.
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    const float lo = F16ToFloat(static_cast<uint16_t>(h));
    const float hi = F16ToFloat(static_cast<uint16_t>(h + 1));
    const float mid = (lo + hi) / 2;
    const uint16_t even = (h & 1) ? h + 1 : h;
    ASSERT_EQ(FloatToF16(mid), even) << std::hex << h;
    ASSERT_EQ(FloatToF16(-mid), even | 0x8000) << std::hex << h;
    ASSERT_EQ(FloatToF16(std::nextafter(mid, 0.0f)), h) << std::hex << h;
    ASSERT_EQ(FloatToF16(std::nextafter(mid, 1e9f)), h + 1) << std::hex << h;
  }
}

TEST(DTypeTest, F16EdgeCases) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(65519.99f), 0x7bff);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00);  // tie with 65536 rounds to even: infinity
  EXPECT_EQ(FloatToF16(1e6f), 0x7c00);
  EXPECT_EQ(FloatToF16(-1e6f), 0xfc00);
  EXPECT_EQ(FloatToF16(inf), 0x7c00);
  EXPECT_EQ(FloatToF16(-inf), 0xfc00);
  EXPECT_EQ(FloatToF16(0.0f), 0x0000);
  EXPECT_EQ(FloatToF16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25)), 0x0000);  // tie with 2^-24 rounds to even zero
  EXPECT_EQ(FloatToF16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(FloatToF16(std::ldexp(1023.0f, -24)), 0x03ff);
  EXPECT_EQ(FloatToF16(std::ldexp(1023.5f, -24)), 0x0400);  // carry into the smallest normal
  const uint16_t nan = FloatToF16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(F16ToFloat(nan)));
  // A signalling NaN whose payload lives only in low bits must not become infinity.
  float snan;
  const uint32_t snan_bits = 0x7f800001u;
  std::memcpy(&snan, &snan_bits, 4);
  EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(snan))));
}

TEST(DTypeTest, F16MatchesReferenceOnRandomFloats) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> exponent(-30, 17);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  for (int i = 0; i < 200000; ++i) {
    const float x = std::ldexp(mantissa(rng), exponent(rng));
    ASSERT_EQ(FloatToF16(x), F16RneReference(x)) << x;
    ASSERT_EQ(FloatToF16(-x), F16RneReference(x) | 0x8000) << x;
  }
}

TEST(DTypeTest, BF16RoundTripsEveryValue) {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const float f = BF16ToFloat(static_cast<uint16_t>(b));
    EXPECT_EQ(Bits(f), b << 16);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(f)))) << std::hex << b;
    } else {
      EXPECT_EQ(FloatToBF16(f), b) << std::hex << b;
    }
  }
}

TEST(DTypeTest, BF16RoundsTiesToEven) {
  const float one = 1.0f;
  // 1 + 2^-8 is halfway between 1 (even) and 1 + 2^-7 (odd): rounds down.
  EXPECT_EQ(FloatToBF16(one + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up.
  EXPECT_EQ(FloatToBF16(one + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(FloatToBF16(std::nextafter(one + std::ldexp(1.0f, -8), 2.0f)), 0x3f81);
  // Largest finite float rounds up to infinity; infinity stays.
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(FloatToBF16(-std::numeric_limits<float>::infinity()), 0xff80);
  // Subnormal floats round like any other.
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::denorm_min()), 0x0000);
  float snan;
  const uint32_t snan_bits = 0x7f800001u;
  std::memcpy(&snan, &snan_bits, 4);
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(snan))));
}

TEST(DTypeTest, TensorViewGetFloatReadsEachDType) {
  const float values[] = {1.5f, -2.0f, 0.25f};
  alignas(4) std::byte f32[12];
  std::memcpy(f32, values, sizeof(f32));
  std::byte f16[6], bf16[6];
  for (int i = 0; i < 3; ++i) {
    const uint16_t h = FloatToF16(values[i]), b = FloatToBF16(values[i]);
    std::memcpy(f16 + 2 * i, &h, 2);
    std::memcpy(bf16 + 2 * i, &b, 2);
  }
  TensorView view;
  view.shape = {3};
  EXPECT_EQ(view.NumElements(), 3);
  for (auto [dtype, data] :
       {std::pair{DType::kF32, f32}, std::pair{DType::kF16, f16}, std::pair{DType::kBF16, bf16}}) {
    view.dtype = dtype;
    view.data = data;
    for (int i = 0; i < 3; ++i) EXPECT_EQ(view.GetFloat(i), values[i]) << DTypeName(dtype);
  }
  view.shape = {};
  EXPECT_EQ(view.NumElements(), 1);  // a scalar
  view.shape = {4, 0, 2};
  EXPECT_EQ(view.NumElements(), 0);
}

}  // namespace
}  // namespace vg::engine
