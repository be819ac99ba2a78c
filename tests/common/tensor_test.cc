#include "common/tensor.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace duet {
namespace {

TEST(TensorTest, NumElements) {
  EXPECT_EQ(NumElements({}), 1);
  EXPECT_EQ(NumElements({5}), 5);
  EXPECT_EQ(NumElements({2, 3, 4}), 24);
  EXPECT_EQ(NumElements({0, 7}), 0);
  EXPECT_EQ(NumElements({1, 1, 1, 1, 1, 9}), 9);  // beyond inline capacity
  EXPECT_EQ(NumElements({1 << 20, 1 << 20}), int64_t{1} << 40);  // no overflow
}

TEST(TensorTest, ShapeString) {
  EXPECT_EQ(ShapeString({}), "[]");
  EXPECT_EQ(ShapeString({3}), "[3]");
  EXPECT_EQ(ShapeString({2, 3, 4}), "[2, 3, 4]");
  EXPECT_EQ(ShapeString({0, -1}), "[0, -1]");
  EXPECT_EQ(ShapeString({1, 2, 3, 4, 5}), "[1, 2, 3, 4, 5]");
}

TEST(TensorTest, ViewAccessors) {
  std::vector<uint16_t> data(24);
  TensorView t{data.data(), DType::kBF16, {2, 3, 4}, Device::kCpu};
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_EQ(t.rank(), 3);
  EXPECT_EQ(t.dim(0), 2);
  EXPECT_EQ(t.dim(2), 4);
  EXPECT_EQ(t.as<uint16_t>(), data.data());
  TensorView f{nullptr, DType::kF32, {5, 2}};
  EXPECT_EQ(f.nbytes(), 40u);
  EXPECT_EQ(f.device, Device::kCpu);
}

TEST(TensorTest, CheckTensorOk) {
  std::vector<float> data(6);
  TensorView t{data.data(), DType::kF32, {2, 3}};
  EXPECT_TRUE(CheckTensor(t, DType::kF32, {2, 3}, "x").ok());
  // Null data is fine for an empty tensor of the right shape.
  TensorView empty{nullptr, DType::kF16, {0, 3}};
  EXPECT_TRUE(CheckTensor(empty, DType::kF16, {0, 3}, "e").ok());
}

TEST(TensorTest, CheckTensorDTypeMismatch) {
  std::vector<uint16_t> data(6);
  TensorView t{data.data(), DType::kBF16, {2, 3}};
  const absl::Status s = CheckTensor(t, DType::kF32, {2, 3}, "weight");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "weight: expected f32[2, 3], got bf16[2, 3]");
}

TEST(TensorTest, CheckTensorShapeMismatch) {
  std::vector<float> data(6);
  TensorView t{data.data(), DType::kF32, {3, 2}};
  absl::Status s = CheckTensor(t, DType::kF32, {2, 3}, "qkv");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "qkv: expected f32[2, 3], got f32[3, 2]");
  // Rank differs, same element count.
  TensorView flat{data.data(), DType::kF32, {6}};
  s = CheckTensor(flat, DType::kF32, {2, 3}, "flat");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "flat: expected f32[2, 3], got f32[6]");
}

TEST(TensorTest, CheckTensorNullData) {
  TensorView t{nullptr, DType::kF16, {2, 3}};
  const absl::Status s = CheckTensor(t, DType::kF16, {2, 3}, "cache");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "cache: null data");
}

}  // namespace
}  // namespace duet
