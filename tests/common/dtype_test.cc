#include "common/dtype.h"

#include <bit>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet {
namespace {

using ::testing::HasSubstr;

bool IsBf16Nan(uint16_t b) {
  return (b & 0x7f80u) == 0x7f80u && (b & 0x007fu) != 0;
}
bool IsF16Nan(uint16_t h) {
  return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0;
}

// Independent decoding of an IEEE binary16 value through ldexp.
double F16Reference(uint16_t h) {
  const double sign = (h & 0x8000u) ? -1.0 : 1.0;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  if (exp == 0x1f) {
    return mant == 0 ? sign * std::numeric_limits<double>::infinity()
                     : std::numeric_limits<double>::quiet_NaN();
  }
  return sign * std::ldexp(1024 + mant, exp - 25);
}

// Rounds |x| to a multiple of 2^quantum_exp with ties to even, in double.
// The division by a power of two is exact and std::nearbyint rounds to
// nearest even in the default rounding mode.
double RoundToQuantum(double abs_x, int quantum_exp) {
  return std::ldexp(std::nearbyint(std::ldexp(abs_x, -quantum_exp)),
                    quantum_exp);
}

// Floor of log2 of a positive finite double.
int Exponent(double abs_x) {
  int e = 0;
  std::frexp(abs_x, &e);  // abs_x = m * 2^e with m in [0.5, 1)
  return e - 1;
}

// Independent float -> bf16: 8 significant bits, min exponent -126 (the
// exponent range of float), quantum 2^(e - 7).
uint16_t ReferenceFloatToBf16(float value) {
  const uint32_t u = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  if (std::isnan(value)) return sign | 0x7fc0u;  // any NaN; compared as NaN
  if (std::isinf(value)) return sign | 0x7f80u;
  const double a = std::fabs(static_cast<double>(value));
  if (a == 0.0) return sign;
  const int e = std::max(Exponent(a), -126);
  const double r = RoundToQuantum(a, e - 7);
  if (r >= std::ldexp(1.0, 128)) return sign | 0x7f80u;
  // r is exactly representable as a bf16; build its bits by hand.
  if (r < std::ldexp(1.0, -126)) {  // subnormal: r = m * 2^-133
    return sign | static_cast<uint16_t>(std::ldexp(r, 133));
  }
  const int re = Exponent(r);
  const uint32_t mant =
      static_cast<uint32_t>(std::ldexp(r, 7 - re)) - 128u;  // 7 fraction bits
  return sign | static_cast<uint16_t>(((re + 127) << 7) | mant);
}

// Independent float -> f16: 11 significant bits, min exponent -14, quantum
// 2^(e - 10); anything that rounds past 65504 is infinity.
uint16_t ReferenceFloatToF16(float value) {
  const uint32_t u = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  if (std::isnan(value)) return sign | 0x7e00u;
  if (std::isinf(value)) return sign | 0x7c00u;
  const double a = std::fabs(static_cast<double>(value));
  if (a == 0.0) return sign;
  const int e = std::max(Exponent(a), -14);
  const double r = RoundToQuantum(a, e - 10);
  if (r > 65504.0) return sign | 0x7c00u;
  if (r < std::ldexp(1.0, -14)) {  // subnormal (or zero): r = m * 2^-24
    return sign | static_cast<uint16_t>(std::ldexp(r, 24));
  }
  const int re = Exponent(r);
  const uint32_t mant = static_cast<uint32_t>(std::ldexp(r, 10 - re)) - 1024u;
  return sign | static_cast<uint16_t>(((re + 15) << 10) | mant);
}

TEST(DTypeTest, SizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeName(DType::kF32), "f32");
  EXPECT_EQ(DTypeName(DType::kBF16), "bf16");
  EXPECT_EQ(DTypeName(DType::kF16), "f16");
}

TEST(DTypeTest, ParseDTypeAcceptsAllSpellings) {
  struct Case {
    const char* name;
    DType want;
  };
  for (const Case& c : {Case{"f32", DType::kF32}, Case{"F32", DType::kF32},
                        Case{"float32", DType::kF32},
                        Case{"bf16", DType::kBF16}, Case{"BF16", DType::kBF16},
                        Case{"bfloat16", DType::kBF16},
                        Case{"f16", DType::kF16}, Case{"F16", DType::kF16},
                        Case{"float16", DType::kF16}}) {
    absl::StatusOr<DType> got = ParseDType(c.name);
    ASSERT_TRUE(got.ok()) << c.name << ": " << got.status();
    EXPECT_EQ(*got, c.want) << c.name;
  }
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
    absl::StatusOr<DType> got = ParseDType(DTypeName(d));
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(*got, d);
  }
}

TEST(DTypeTest, ParseDTypeRejectsUnknownNames) {
  for (const char* name : {"F8_E4M3", "fp32", "", "Bf16", "f64", "I32"}) {
    absl::StatusOr<DType> got = ParseDType(name);
    ASSERT_FALSE(got.ok()) << name;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(got.status().message()),
                HasSubstr(absl::StrCat("unsupported dtype '", name, "'")));
    EXPECT_THAT(std::string(got.status().message()),
                HasSubstr("F32, BF16, F16"));
  }
}

TEST(DTypeTest, Bf16RoundTripsEveryBitPattern) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t bits = static_cast<uint16_t>(i);
    const float f = Bf16ToFloat(bits);
    // Decoding is the upper half of the fp32 bit pattern.
    ASSERT_EQ(std::bit_cast<uint32_t>(f), i << 16) << std::hex << i;
    const uint16_t back = FloatToBf16(f);
    if (IsBf16Nan(bits)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << i;
      ASSERT_TRUE(IsBf16Nan(back)) << std::hex << i << " -> " << back;
      ASSERT_EQ(back & 0x8000u, bits & 0x8000u) << "NaN sign lost " << i;
    } else {
      ASSERT_EQ(back, bits) << std::hex << i;
    }
  }
}

TEST(DTypeTest, F16RoundTripsEveryBitPattern) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t bits = static_cast<uint16_t>(i);
    const float f = F16ToFloat(bits);
    const double want = F16Reference(bits);
    if (IsF16Nan(bits)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << i;
      const uint16_t back = FloatToF16(f);
      ASSERT_TRUE(IsF16Nan(back)) << std::hex << i << " -> " << back;
      ASSERT_EQ(back & 0x8000u, bits & 0x8000u) << "NaN sign lost " << i;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), want) << std::hex << i;
    ASSERT_EQ(std::signbit(f), (bits & 0x8000u) != 0) << std::hex << i;
    ASSERT_EQ(FloatToF16(f), bits) << std::hex << i;
  }
}

TEST(DTypeTest, Bf16RoundsTiesToEven) {
  // For every finite non-negative/negative bf16 b, the fp32 value exactly
  // halfway to the next bf16 (low 16 bits = 0x8000) rounds to the even one
  // of the two; a hair above goes up and a hair below goes down.
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t b = static_cast<uint16_t>(i);
    if ((b & 0x7f80u) == 0x7f80u) continue;  // inf / NaN
    const uint32_t tie = (i << 16) | 0x8000u;
    const uint16_t even = (b & 1u) ? static_cast<uint16_t>(b + 1) : b;
    ASSERT_EQ(FloatToBf16(std::bit_cast<float>(tie)), even) << std::hex << i;
    ASSERT_EQ(FloatToBf16(std::bit_cast<float>(tie + 1)), b + 1)
        << std::hex << i;
    ASSERT_EQ(FloatToBf16(std::bit_cast<float>(tie - 1)), b) << std::hex << i;
  }
  // Spot values: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> 1 (even).
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80u);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 -> up.
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82u);
  // The largest finite float rounds up to infinity.
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7f80u);
  EXPECT_EQ(FloatToBf16(-std::numeric_limits<float>::max()), 0xff80u);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::infinity()), 0x7f80u);
}

TEST(DTypeTest, F16RoundsTiesToEven) {
  // Midpoints of adjacent finite f16 values (12 significant bits) are exact
  // in fp32; each must round to the neighbour with an even mantissa.
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    if ((h & 0x7c00u) == 0x7c00u) continue;  // inf / NaN
    const uint16_t next = static_cast<uint16_t>(h + 1);  // away from zero
    const double lo = F16Reference(h);
    const double hi = F16Reference(next);  // may be +-inf for 0x7bff
    const double mid = std::isinf(hi) ? (lo > 0 ? 65520.0 : -65520.0)
                                      : (lo + hi) / 2;
    const float fmid = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(fmid), mid) << "midpoint not exact " << i;
    const uint16_t even = (h & 1u) ? next : h;
    ASSERT_EQ(FloatToF16(fmid), even) << std::hex << i << " mid " << mid;
    const float above = std::nextafter(fmid, 2 * fmid);  // away from zero
    const float below = std::nextafter(fmid, 0.0f);
    ASSERT_EQ(FloatToF16(above), next) << std::hex << i;
    ASSERT_EQ(FloatToF16(below), h) << std::hex << i;
  }
}

TEST(DTypeTest, F16OverflowsToInfinity) {
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bffu);
  EXPECT_EQ(FloatToF16(65519.0f), 0x7bffu);
  EXPECT_EQ(FloatToF16(std::nextafter(65520.0f, 0.0f)), 0x7bffu);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00u);  // tie, 0x7bff is odd -> inf
  EXPECT_EQ(FloatToF16(65536.0f), 0x7c00u);
  EXPECT_EQ(FloatToF16(1e10f), 0x7c00u);
  EXPECT_EQ(FloatToF16(-1e10f), 0xfc00u);
  EXPECT_EQ(FloatToF16(-65520.0f), 0xfc00u);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::max()), 0x7c00u);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::infinity()), 0x7c00u);
  EXPECT_EQ(FloatToF16(-std::numeric_limits<float>::infinity()), 0xfc00u);
  EXPECT_TRUE(std::isinf(F16ToFloat(0x7c00u)));
  EXPECT_GT(F16ToFloat(0x7c00u), 0.0f);
  EXPECT_LT(F16ToFloat(0xfc00u), 0.0f);
  EXPECT_TRUE(IsF16Nan(FloatToF16(std::numeric_limits<float>::quiet_NaN())));
}

TEST(DTypeTest, F16Subnormals) {
  const float min_sub = std::ldexp(1.0f, -24);
  EXPECT_EQ(F16ToFloat(0x0001u), min_sub);
  EXPECT_EQ(F16ToFloat(0x8001u), -min_sub);
  EXPECT_EQ(F16ToFloat(0x03ffu), std::ldexp(1023.0f, -24));
  EXPECT_EQ(F16ToFloat(0x0400u), std::ldexp(1.0f, -14));
  EXPECT_EQ(F16ToFloat(0x0200u), std::ldexp(1.0f, -15));
  EXPECT_EQ(FloatToF16(min_sub), 0x0001u);
  EXPECT_EQ(FloatToF16(-min_sub), 0x8001u);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25)), 0x0000u);  // tie -> even (0)
  EXPECT_EQ(FloatToF16(-std::ldexp(1.0f, -25)), 0x8000u);
  EXPECT_EQ(FloatToF16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001u);
  EXPECT_EQ(FloatToF16(3 * std::ldexp(1.0f, -25)), 0x0002u);  // tie 1|2 -> 2
  EXPECT_EQ(FloatToF16(5 * std::ldexp(1.0f, -25)), 0x0002u);  // tie 2|3 -> 2
  EXPECT_EQ(FloatToF16(std::ldexp(1023.0f, -24)), 0x03ffu);
  EXPECT_EQ(FloatToF16(std::ldexp(1023.5f, -24)), 0x0400u);  // tie -> even
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -14)), 0x0400u);
  EXPECT_EQ(FloatToF16(1e-10f), 0x0000u);
  EXPECT_EQ(FloatToF16(-1e-10f), 0x8000u);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::denorm_min()), 0x0000u);
  EXPECT_EQ(FloatToF16(0.0f), 0x0000u);
  EXPECT_EQ(FloatToF16(-0.0f), 0x8000u);
}

TEST(DTypeTest, ReferenceImplementationsSelfCheck) {
  // Guards the test's own reference on a few known values.
  EXPECT_EQ(ReferenceFloatToBf16(1.0f), 0x3f80u);
  EXPECT_EQ(ReferenceFloatToBf16(-2.0f), 0xc000u);
  EXPECT_EQ(ReferenceFloatToBf16(std::numeric_limits<float>::denorm_min()),
            0x0000u);
  EXPECT_EQ(ReferenceFloatToBf16(std::ldexp(1.0f, -133)), 0x0001u);
  EXPECT_EQ(ReferenceFloatToF16(1.0f), 0x3c00u);
  EXPECT_EQ(ReferenceFloatToF16(-2.0f), 0xc000u);
  EXPECT_EQ(ReferenceFloatToF16(65504.0f), 0x7bffu);
  EXPECT_EQ(ReferenceFloatToF16(0.333251953125f), 0x3555u);
  EXPECT_EQ(ReferenceFloatToF16(std::ldexp(1.0f, -24)), 0x0001u);
}

void ExpectMatchesReference(float f) {
  const uint16_t bf = FloatToBf16(f);
  const uint16_t bf_ref = ReferenceFloatToBf16(f);
  const uint16_t h = FloatToF16(f);
  const uint16_t h_ref = ReferenceFloatToF16(f);
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if (std::isnan(f)) {
    ASSERT_TRUE(IsBf16Nan(bf)) << std::hex << u;
    ASSERT_TRUE(IsF16Nan(h)) << std::hex << u;
    ASSERT_EQ(bf & 0x8000u, bf_ref & 0x8000u) << std::hex << u;
    ASSERT_EQ(h & 0x8000u, h_ref & 0x8000u) << std::hex << u;
    return;
  }
  ASSERT_EQ(bf, bf_ref) << "bf16 of " << f << " bits " << std::hex << u;
  ASSERT_EQ(h, h_ref) << "f16 of " << f << " bits " << std::hex << u;
}

TEST(DTypeTest, MatchesIndependentRoundingOnRandomFloats) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<uint32_t> bits;
  std::uniform_real_distribution<float> unit(1.0f, 2.0f);
  std::uniform_int_distribution<int> f16_exp(-27, 17);
  constexpr int kCount = 1000000;
  for (int n = 0; n < kCount; ++n) {
    float f;
    switch (n % 4) {
      case 0:  // any bit pattern: NaN, inf, subnormal, every exponent
        f = std::bit_cast<float>(bits(rng));
        break;
      case 1:  // spread over the f16 range incl. its subnormals and overflow
        f = std::ldexp(unit(rng), f16_exp(rng)) * ((bits(rng) & 1) ? -1 : 1);
        break;
      case 2: {  // f16 tie patterns (low 13 bits 0x1000) over its range
        const uint32_t exp = 100 + bits(rng) % 46;  // 2^-27 .. 2^18
        const uint32_t low = 0x0fffu + bits(rng) % 3;  // 0fff, 1000, 1001
        f = std::bit_cast<float>((bits(rng) & 0x807fe000u) | (exp << 23) |
                                 low);
        break;
      }
      default: {  // exact bf16 ties and their neighbours
        const uint32_t base = bits(rng) & 0xffff0000u;
        const uint32_t low = (bits(rng) % 3) + 0x7fffu;  // 7fff, 8000, 8001
        f = std::bit_cast<float>(base | low);
        break;
      }
    }
    ExpectMatchesReference(f);
    if (HasFatalFailure()) return;
  }
}

TEST(DTypeTest, ConvertArraysAllDTypes) {
  const std::vector<float> src = {0.0f,   -0.0f,  1.0f,    -1.5f, 3.140625f,
                                  65504.0f, 1e-7f, -2.5e-3f, 1e6f, 0.1f};
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
    std::vector<uint8_t> buf(src.size() * DTypeSize(d));
    ConvertFromF32(src.data(), src.size(), d, buf.data());
    std::vector<float> back(src.size(), -7.0f);
    ConvertToF32(d, buf.data(), src.size(), back.data());
    for (size_t i = 0; i < src.size(); ++i) {
      float want = src[i];
      if (d == DType::kBF16) want = Bf16ToFloat(FloatToBf16(src[i]));
      if (d == DType::kF16) want = F16ToFloat(FloatToF16(src[i]));
      EXPECT_EQ(std::bit_cast<uint32_t>(back[i]), std::bit_cast<uint32_t>(want))
          << DTypeName(d) << " element " << i;
    }
  }
}

}  // namespace
}  // namespace duet
