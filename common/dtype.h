// Element types of weights, activations and KV cache, and exact conversions
// between them (round-to-nearest-even, NaN preserved, as PyTorch does).
#ifndef DUET_COMMON_DTYPE_H_
#define DUET_COMMON_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace duet {

enum class DType : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2 };

// Bytes per element.
size_t DTypeSize(DType dtype);
// "f32", "bf16", "f16".
absl::string_view DTypeName(DType dtype);
// Parses DTypeName() output and the safetensors names "F32", "BF16", "F16".
absl::StatusOr<DType> ParseDType(absl::string_view name);

float Bf16ToFloat(uint16_t bits);
uint16_t FloatToBf16(float value);
float F16ToFloat(uint16_t bits);
uint16_t FloatToF16(float value);

// Converts `count` elements of `src` (in dtype `src_dtype`) to fp32.
void ConvertToF32(DType src_dtype, const void* src, size_t count, float* dst);
// Converts fp32 to `dst_dtype` (rounding to nearest even).
void ConvertFromF32(const float* src, size_t count, DType dst_dtype, void* dst);

}  // namespace duet

#endif  // DUET_COMMON_DTYPE_H_
