// The CPU backend through the Backend interface: uploads, every op's
// argument checks (InvalidArgument, never a crash), ValidateStep, and one
// end-to-end prefill + decode against double references.
#include "kernels/cpu/cpu_backend.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/kernel_test_util.h"

namespace duet::kernels {
namespace {

using ::duet::kernels::testing::AllClose;
using ::duet::kernels::testing::kNaN;
using ::duet::kernels::testing::RandomVector;
using ::testing::HasSubstr;

#define EXPECT_INVALID(expr, substr)                                     \
  do {                                                                   \
    const absl::Status s_ = (expr);                                      \
    EXPECT_EQ(s_.code(), absl::StatusCode::kInvalidArgument) << s_;      \
    EXPECT_THAT(std::string(s_.message()), HasSubstr(substr)) << #expr; \
  } while (0)

// ---------------------------------------------------------------------------
// Hand-built steps. Geometry: block_size 4, 8 blocks (32 slots), vocab 100.
// ---------------------------------------------------------------------------

AttentionShape SmallShape() {
  AttentionShape s;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 8;
  s.block_size = 4;
  s.num_blocks = 8;
  return s;
}
constexpr int32_t kVocab = 100;

// Sequence 0: 5 new tokens (positions 0..4) in blocks {6, 1}.
// Sequence 1: 3 cached tokens + 2 new (positions 3, 4) in blocks {2, 7}.
StepInputs PrefillStep() {
  StepInputs s;
  s.mode = AttentionMode::kPrefill;
  s.token_ids = {5, 17, 99, 0, 42, 8, 63};
  s.positions = {0, 1, 2, 3, 4, 3, 4};
  s.slot_mapping = {24, 25, 26, 27, 4, 11, 28};
  s.query_start = {0, 5, 7};
  s.seq_lens = {5, 5};
  s.max_blocks_per_seq = 3;
  s.block_tables = {6, 1, 0, 2, 7, 0};
  s.logits_rows = {4, 6};
  return s;
}

// Sequence 0 decodes position 5 (blocks {6, 1}); sequence 1 position 0
// (block {3}).
StepInputs DecodeStep() {
  StepInputs s;
  s.mode = AttentionMode::kDecode;
  s.token_ids = {7, 9};
  s.positions = {5, 0};
  s.slot_mapping = {5, 12};
  s.query_start = {0, 1, 2};
  s.seq_lens = {6, 1};
  s.max_blocks_per_seq = 2;
  s.block_tables = {6, 1, 3, 0};
  s.logits_rows = {0, 1};
  return s;
}

TEST(ValidateStepTest, HandBuiltStepsAreValid) {
  EXPECT_TRUE(ValidateStep(PrefillStep(), SmallShape(), kVocab).ok())
      << ValidateStep(PrefillStep(), SmallShape(), kVocab);
  EXPECT_TRUE(ValidateStep(DecodeStep(), SmallShape(), kVocab).ok())
      << ValidateStep(DecodeStep(), SmallShape(), kVocab);
  StepInputs no_logits = PrefillStep();
  no_logits.logits_rows.clear();
  EXPECT_TRUE(ValidateStep(no_logits, SmallShape(), kVocab).ok());
}

TEST(ValidateStepTest, TokenIdOutOfVocab) {
  StepInputs s = PrefillStep();
  s.token_ids[2] = kVocab;
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "token id 100 is outside the vocabulary [0, 100)");
  s.token_ids[2] = -1;
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab), "token id -1");
}

TEST(ValidateStepTest, SlotMismatch) {
  StepInputs s = PrefillStep();
  s.slot_mapping[1] = 26;  // a real slot, but not position 1's
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "token 1 maps to slot 26, expected 25");
  s = PrefillStep();
  s.slot_mapping[6] = 32;  // past the last slot
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab), "maps to slot 32");
  s = PrefillStep();
  s.slot_mapping[0] = -24;
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab), "maps to slot -24");
}

TEST(ValidateStepTest, BlockIdOutOfRange) {
  StepInputs s = PrefillStep();
  s.block_tables[1] = 8;
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "sequence 0 block 1 is 8, outside [0, 8)");
  s = PrefillStep();
  s.block_tables[3] = -1;
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "sequence 1 block 0 is -1");
}

TEST(ValidateStepTest, BlockTableTooSmall) {
  StepInputs s = PrefillStep();
  s.max_blocks_per_seq = 1;
  s.block_tables = {6, 2};
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "needs 2 blocks but its block table holds 1");
  s = PrefillStep();
  s.block_tables.pop_back();
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "num_seqs * max_blocks_per_seq");
  s = PrefillStep();
  s.max_blocks_per_seq = 0;
  s.block_tables.clear();
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab), "block_tables");
}

TEST(ValidateStepTest, DecodeWithTwoTokensInASequence) {
  StepInputs s = DecodeStep();
  // Sequence 0 now brings positions 4 and 5: fine for prefill, not decode.
  s.token_ids = {7, 8, 9};
  s.positions = {4, 5, 0};
  s.slot_mapping = {4, 5, 12};
  s.query_start = {0, 2, 3};
  s.logits_rows = {1, 2};
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "decode step: sequence 0 has 2 new tokens (must be 1)");
  s.mode = AttentionMode::kPrefill;
  EXPECT_TRUE(ValidateStep(s, SmallShape(), kVocab).ok());
  // The whole prefill step in decode mode.
  StepInputs p = PrefillStep();
  p.mode = AttentionMode::kDecode;
  EXPECT_INVALID(ValidateStep(p, SmallShape(), kVocab), "must be 1");
}

TEST(ValidateStepTest, QueryStartInconsistent) {
  StepInputs s = PrefillStep();
  s.query_start = {0, 5, 6};  // does not end at num_tokens
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab), "query_start");
  s.query_start = {1, 5, 7};  // does not start at 0
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab), "query_start");
  s.query_start = {0, 7};  // wrong length
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab), "query_start");
  s.query_start = {0, 0, 7};  // sequence 0 empty
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "sequence 0 has 0 new tokens");
  s.query_start = {0, 8, 7};  // decreasing
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab), "new tokens");
  s.query_start = {0, 3, 7};  // boundaries disagree with positions
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab), "position");
}

TEST(ValidateStepTest, LogitsRowOutOfRange) {
  StepInputs s = PrefillStep();
  s.logits_rows = {4, 7};
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "logits row 7 outside [0, 7)");
  s.logits_rows = {-1};
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab), "logits row -1");
}

TEST(ValidateStepTest, PositionsAndSizes) {
  StepInputs s = PrefillStep();
  s.positions[5] = 2;
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "token 5 has position 2, expected 3");
  s = PrefillStep();
  s.positions.pop_back();
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "one entry per token");
  s = PrefillStep();
  s.slot_mapping.push_back(0);
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "one entry per token");
  s = PrefillStep();
  s.seq_lens[1] = 1;  // fewer tokens in the cache than new tokens
  EXPECT_INVALID(ValidateStep(s, SmallShape(), kVocab),
                 "sequence 1 has 2 new tokens and seq_len 1");
  EXPECT_INVALID(ValidateStep(StepInputs{}, SmallShape(), kVocab),
                 "no sequences or no tokens");
}

TEST(ValidateStepTest, BackendBeginStepValidates) {
  std::unique_ptr<Backend> be = MakeCpuBackend();
  EXPECT_TRUE(be->BeginStep(PrefillStep(), SmallShape(), kVocab).ok());
  StepInputs s = PrefillStep();
  s.block_tables[0] = 100;
  EXPECT_INVALID(be->BeginStep(s, SmallShape(), kVocab), "outside [0, 8)");
  EXPECT_INVALID(be->BeginStep(PrefillStep(), SmallShape(), 50), "token id 99");
}

// ---------------------------------------------------------------------------
// Memory: Allocate, Upload, UploadConcat, DownloadF32
// ---------------------------------------------------------------------------

class CpuBackendTest : public ::testing::Test {
 protected:
  Tensor Alloc(const Shape& shape, DType dtype = DType::kF32) {
    absl::StatusOr<Tensor> t = be_->Allocate(dtype, shape);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(t).value() : Tensor();
  }
  Tensor Up(const std::vector<float>& v, const Shape& shape) {
    EXPECT_EQ(static_cast<int64_t>(v.size()), NumElements(shape));
    absl::StatusOr<Tensor> t =
        be_->Upload(v.data(), DType::kF32, DType::kF32, shape);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(t).value() : Tensor();
  }
  std::vector<float> Down(const Tensor& t) {
    std::vector<float> v(static_cast<size_t>(t.view().numel()));
    EXPECT_TRUE(be_->DownloadF32(t.view(), v.data()).ok());
    return v;
  }
  std::unique_ptr<Backend> be_ = MakeCpuBackend();
  std::mt19937 rng_{1234};
};

TEST_F(CpuBackendTest, Identity) {
  EXPECT_EQ(be_->name(), "cpu");
  EXPECT_EQ(be_->device(), Device::kCpu);
  EXPECT_EQ(be_->activation_dtype(), DType::kF32);
  EXPECT_TRUE(be_->Synchronize().ok());
}

TEST_F(CpuBackendTest, Allocate) {
  Tensor t = Alloc({3, 5});
  EXPECT_NE(t.view().data, nullptr);
  EXPECT_EQ(t.view().shape, (Shape{3, 5}));
  EXPECT_EQ(t.view().device, Device::kCpu);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.view().data) % 64, 0u);
  Tensor empty = Alloc({0, 5});
  EXPECT_NE(empty.view().data, nullptr);  // never a null data pointer
  EXPECT_INVALID(be_->Allocate(DType::kF32, {2, -1}).status(), "negative dim");
  // Moving transfers ownership.
  Tensor moved = std::move(t);
  EXPECT_TRUE(t.empty());
  EXPECT_FALSE(moved.empty());
}

TEST_F(CpuBackendTest, UploadConvertsEverySourceDType) {
  const std::vector<float> src = {1.0f, -2.5f, 0.1f, 3.14159f, -65504.0f,
                                  1e-6f};
  const Shape shape = {2, 3};
  // f32: exact copy.
  absl::StatusOr<Tensor> f32 =
      be_->Upload(src.data(), DType::kF32, DType::kF32, shape);
  ASSERT_TRUE(f32.ok()) << f32.status();
  EXPECT_EQ(f32->view().dtype, DType::kF32);
  EXPECT_EQ(f32->view().shape, shape);
  EXPECT_EQ(Down(*f32), src);
  // bf16 and f16: the decoded value of each 16-bit pattern.
  for (DType d : {DType::kBF16, DType::kF16}) {
    std::vector<uint16_t> bits(src.size());
    for (size_t i = 0; i < src.size(); ++i) {
      bits[i] = d == DType::kBF16 ? FloatToBf16(src[i]) : FloatToF16(src[i]);
    }
    absl::StatusOr<Tensor> t = be_->Upload(bits.data(), d, DType::kF32, shape);
    ASSERT_TRUE(t.ok()) << t.status();
    const std::vector<float> got = Down(*t);
    for (size_t i = 0; i < src.size(); ++i) {
      const float want =
          d == DType::kBF16 ? Bf16ToFloat(bits[i]) : F16ToFloat(bits[i]);
      EXPECT_EQ(got[i], want) << DTypeName(d) << " " << i;
      EXPECT_NEAR(got[i], src[i], std::fabs(src[i]) * 1e-2 + 1e-7);
    }
  }
  // The CPU backend stores fp32 only.
  EXPECT_INVALID(
      be_->Upload(src.data(), DType::kF32, DType::kBF16, shape).status(),
      "fp32 only");
  EXPECT_INVALID(
      be_->Upload(src.data(), DType::kF32, DType::kF32, {-1, 6}).status(),
      "negative dim");
}

TEST_F(CpuBackendTest, UploadConcatConvertsAndConcatenates) {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};  // [2, 3] f32
  std::vector<uint16_t> b = {FloatToBf16(7), FloatToBf16(8),
                             FloatToBf16(9)};  // [1, 3] bf16
  std::vector<uint16_t> c;                     // [3, 3] f16
  for (int i = 10; i < 19; ++i) c.push_back(FloatToF16(i + 0.5f));
  std::vector<TensorView> parts = {
      TensorView{const_cast<float*>(a.data()), DType::kF32, {2, 3}},
      TensorView{b.data(), DType::kBF16, {1, 3}},
      TensorView{c.data(), DType::kF16, {3, 3}},
  };
  absl::StatusOr<Tensor> t = be_->UploadConcat(parts, DType::kF32);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->view().shape, (Shape{6, 3}));
  EXPECT_EQ(Down(*t),
            (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10.5f, 11.5f, 12.5f,
                                13.5f, 14.5f, 15.5f, 16.5f, 17.5f, 18.5f}));
  // A single part, and a 3-D concat.
  std::vector<float> d(2 * 2 * 2, 1.5f), e(1 * 2 * 2, -1.5f);
  absl::StatusOr<Tensor> t3 = be_->UploadConcat(
      {TensorView{d.data(), DType::kF32, {2, 2, 2}},
       TensorView{e.data(), DType::kF32, {1, 2, 2}}},
      DType::kF32);
  ASSERT_TRUE(t3.ok());
  EXPECT_EQ(t3->view().shape, (Shape{3, 2, 2}));
  EXPECT_EQ(Down(*t3).back(), -1.5f);
}

TEST_F(CpuBackendTest, UploadConcatRejectsMismatchedParts) {
  std::vector<float> a(6, 1.0f), b(8, 2.0f);
  EXPECT_INVALID(be_->UploadConcat({TensorView{a.data(), DType::kF32, {2, 3}},
                                    TensorView{b.data(), DType::kF32, {2, 4}}},
                                   DType::kF32)
                     .status(),
                 "part 1 shape [2, 4] does not match [2, 3] beyond dim 0");
  EXPECT_INVALID(be_->UploadConcat({TensorView{a.data(), DType::kF32, {2, 3}},
                                    TensorView{a.data(), DType::kF32, {6}}},
                                   DType::kF32)
                     .status(),
                 "does not match");
  EXPECT_INVALID(
      be_->UploadConcat({TensorView{a.data(), DType::kF32, {2, 3}},
                         TensorView{a.data(), DType::kF32, {1, 2, 3}}},
                        DType::kF32)
          .status(),
      "does not match");
  EXPECT_INVALID(be_->UploadConcat({}, DType::kF32).status(), "no parts");
  EXPECT_INVALID(
      be_->UploadConcat({TensorView{a.data(), DType::kF32, {}}}, DType::kF32)
          .status(),
      "scalar");
  EXPECT_INVALID(
      be_->UploadConcat({TensorView{a.data(), DType::kF32, {2, 3}}},
                        DType::kF16)
          .status(),
      "fp32 only");
}

TEST_F(CpuBackendTest, DownloadRejectsNonF32OrDeviceTensors) {
  std::vector<uint16_t> h(4);
  std::vector<float> f(4);
  EXPECT_INVALID(be_->DownloadF32(TensorView{h.data(), DType::kBF16, {4}},
                                  f.data()),
                 "fp32 host tensor");
  EXPECT_INVALID(
      be_->DownloadF32(
          TensorView{f.data(), DType::kF32, {4}, Device::kCuda}, f.data()),
      "fp32 host tensor");
  EXPECT_INVALID(
      be_->DownloadF32(TensorView{nullptr, DType::kF32, {4}}, f.data()),
      "fp32 host tensor");
}

// ---------------------------------------------------------------------------
// Op argument checks. Each op is first called with valid arguments (so the
// failures below are about the one thing changed).
// ---------------------------------------------------------------------------

TEST_F(CpuBackendTest, EmbeddingChecks) {
  const StepInputs step = PrefillStep();  // 7 tokens, ids < 100
  Tensor table = Up(RandomVector(rng_, 100 * 16), {100, 16});
  Tensor out = Alloc({7, 16});
  ASSERT_TRUE(be_->Embedding(step, table.view(), out.view()).ok());
  const std::vector<float> tab = Down(table), got = Down(out);
  for (int t = 0; t < 7; ++t) {
    for (int i = 0; i < 16; ++i) {
      ASSERT_EQ(got[t * 16 + i], tab[step.token_ids[t] * 16 + i]);
    }
  }
  Tensor wrong_rows = Alloc({6, 16});
  EXPECT_INVALID(be_->Embedding(step, table.view(), wrong_rows.view()),
                 "embedding out: expected [7, 16], got [6, 16]");
  Tensor wrong_cols = Alloc({7, 15});
  EXPECT_INVALID(be_->Embedding(step, table.view(), wrong_cols.view()),
                 "embedding out");
  Tensor flat = Up(RandomVector(rng_, 1600), {1600});
  EXPECT_INVALID(be_->Embedding(step, flat.view(), out.view()), "2-D");
  std::vector<uint16_t> bf(100 * 16);
  EXPECT_INVALID(be_->Embedding(step, TensorView{bf.data(), DType::kBF16,
                                                 {100, 16}},
                                out.view()),
                 "embedding table");
  Tensor small_table = Up(RandomVector(rng_, 50 * 16), {50, 16});
  EXPECT_INVALID(be_->Embedding(step, small_table.view(), out.view()),
                 "token id 99 is outside the vocabulary [0, 50)");
}

TEST_F(CpuBackendTest, RmsNormAndAddRmsNormChecks) {
  Tensor x = Up(RandomVector(rng_, 3 * 8), {3, 8});
  Tensor w = Up(RandomVector(rng_, 8), {8});
  Tensor out = Alloc({3, 8});
  ASSERT_TRUE(be_->RmsNorm(x.view(), w.view(), 1e-6f, out.view()).ok());
  {
    const std::vector<float> xv = Down(x), wv = Down(w), ov = Down(out);
    std::vector<double> want, mag;
    for (int r = 0; r < 3; ++r) {
      double ss = 0;
      for (int i = 0; i < 8; ++i) ss += double{xv[r * 8 + i]} * xv[r * 8 + i];
      const double inv = 1.0 / std::sqrt(ss / 8 + 1e-6);
      for (int i = 0; i < 8; ++i) {
        want.push_back(double{wv[i]} * xv[r * 8 + i] * inv);
        mag.push_back(std::fabs(want.back()));
      }
    }
    EXPECT_TRUE(AllClose(ov, want, mag, 1e-5));
  }
  Tensor w9 = Up(RandomVector(rng_, 9), {9});
  EXPECT_INVALID(be_->RmsNorm(x.view(), w9.view(), 1e-6f, out.view()),
                 "rmsnorm: x must be [rows, dim]");
  Tensor x1 = Up(RandomVector(rng_, 8), {8});
  EXPECT_INVALID(be_->RmsNorm(x1.view(), w.view(), 1e-6f, out.view()),
                 "rmsnorm: x must be [rows, dim]");
  Tensor out_bad = Alloc({2, 8});
  EXPECT_INVALID(be_->RmsNorm(x.view(), w.view(), 1e-6f, out_bad.view()),
                 "rmsnorm out: expected [3, 8], got [2, 8]");
  std::vector<uint16_t> wbf(8);
  EXPECT_INVALID(be_->RmsNorm(x.view(), TensorView{wbf.data(), DType::kBF16,
                                                   {8}},
                              1e-6f, out.view()),
                 "rmsnorm weight");

  // AddRmsNorm: residual += x, out = RmsNorm(residual).
  Tensor residual = Up(RandomVector(rng_, 3 * 8), {3, 8});
  const std::vector<float> r0 = Down(residual), xv = Down(x);
  ASSERT_TRUE(
      be_->AddRmsNorm(x.view(), residual.view(), w.view(), 1e-6f, out.view())
          .ok());
  const std::vector<float> r1 = Down(residual);
  for (int i = 0; i < 24; ++i) ASSERT_EQ(r1[i], r0[i] + xv[i]);
  Tensor plain = Alloc({3, 8});
  ASSERT_TRUE(
      be_->RmsNorm(residual.view(), w.view(), 1e-6f, plain.view()).ok());
  EXPECT_EQ(Down(out), Down(plain));
  Tensor residual_bad = Alloc({3, 9});
  EXPECT_INVALID(be_->AddRmsNorm(x.view(), residual_bad.view(), w.view(),
                                 1e-6f, out.view()),
                 "add_rmsnorm residual");
  std::vector<uint16_t> xbf(24);
  EXPECT_INVALID(
      be_->AddRmsNorm(TensorView{xbf.data(), DType::kBF16, {3, 8}},
                      residual.view(), w.view(), 1e-6f, out.view()),
      "add_rmsnorm x");
  EXPECT_INVALID(
      be_->AddRmsNorm(x.view(), residual.view(), w.view(), 1e-6f,
                      out_bad.view()),
      "rmsnorm out");
}

TEST_F(CpuBackendTest, LinearChecksAndResult) {
  const std::vector<float> xv = RandomVector(rng_, 5 * 12);
  const std::vector<float> wv = RandomVector(rng_, 7 * 12);
  Tensor x = Up(xv, {5, 12});
  Tensor w = Up(wv, {7, 12});
  Tensor out = Alloc({5, 7});
  ASSERT_TRUE(be_->Linear(x.view(), w.view(), out.view()).ok());
  std::vector<double> want, mag;
  for (int t = 0; t < 5; ++t) {
    for (int n = 0; n < 7; ++n) {
      double acc = 0, m = 0;
      for (int k = 0; k < 12; ++k) {
        acc += double{xv[t * 12 + k]} * wv[n * 12 + k];
        m += std::fabs(double{xv[t * 12 + k]} * wv[n * 12 + k]);
      }
      want.push_back(acc);
      mag.push_back(m);
    }
  }
  EXPECT_TRUE(AllClose(Down(out), want, mag, 1e-5));

  Tensor w_bad = Up(RandomVector(rng_, 7 * 11), {7, 11});
  EXPECT_INVALID(be_->Linear(x.view(), w_bad.view(), out.view()),
                 "linear: x [5, 12] does not match weight [7, 11]");
  Tensor w3 = Up(RandomVector(rng_, 7 * 12), {7, 12, 1});
  EXPECT_INVALID(be_->Linear(x.view(), w3.view(), out.view()),
                 "does not match weight");
  Tensor x1 = Up(RandomVector(rng_, 12), {12});
  EXPECT_INVALID(be_->Linear(x1.view(), w.view(), out.view()),
                 "does not match weight");
  Tensor out_bad = Alloc({5, 8});
  EXPECT_INVALID(be_->Linear(x.view(), w.view(), out_bad.view()),
                 "linear out: expected [5, 7], got [5, 8]");
  EXPECT_INVALID(
      be_->Linear(x.view(), TensorView{w.view().data, DType::kF32, {7, 12},
                                       Device::kCuda},
                  out.view()),
      "linear weight");
}

TEST_F(CpuBackendTest, SiluMulChecks) {
  Tensor gu = Up(RandomVector(rng_, 4 * 10), {4, 10});
  Tensor out = Alloc({4, 5});
  ASSERT_TRUE(be_->SiluMul(gu.view(), out.view()).ok());
  const std::vector<float> g = Down(gu), o = Down(out);
  for (int t = 0; t < 4; ++t) {
    for (int i = 0; i < 5; ++i) {
      const double gate = g[t * 10 + i], up = g[t * 10 + 5 + i];
      const double want = gate / (1 + std::exp(-gate)) * up;
      EXPECT_NEAR(o[t * 5 + i], want, std::fabs(want) * 1e-5);
    }
  }
  Tensor odd = Up(RandomVector(rng_, 4 * 9), {4, 9});
  EXPECT_INVALID(be_->SiluMul(odd.view(), out.view()),
                 "silu_mul: gate_up must be [T, 2I]");
  Tensor flat = Up(RandomVector(rng_, 10), {10});
  EXPECT_INVALID(be_->SiluMul(flat.view(), out.view()), "[T, 2I]");
  Tensor out_bad = Alloc({4, 10});
  EXPECT_INVALID(be_->SiluMul(gu.view(), out_bad.view()),
                 "silu_mul out: expected [4, 5], got [4, 10]");
}

TEST_F(CpuBackendTest, LogitsChecksAndGather) {
  const StepInputs step = PrefillStep();  // logits rows {4, 6} of 7 tokens
  const std::vector<float> xv = RandomVector(rng_, 7 * 6);
  const std::vector<float> hv = RandomVector(rng_, 11 * 6);
  Tensor x = Up(xv, {7, 6});
  Tensor lm = Up(hv, {11, 6});
  Tensor logits = Alloc({2, 11});
  ASSERT_TRUE(be_->Logits(step, x.view(), lm.view(), logits.view()).ok());
  std::vector<double> want, mag;
  for (int r : step.logits_rows) {
    for (int v = 0; v < 11; ++v) {
      double acc = 0, m = 0;
      for (int k = 0; k < 6; ++k) {
        acc += double{xv[r * 6 + k]} * hv[v * 6 + k];
        m += std::fabs(double{xv[r * 6 + k]} * hv[v * 6 + k]);
      }
      want.push_back(acc);
      mag.push_back(m);
    }
  }
  EXPECT_TRUE(AllClose(Down(logits), want, mag, 1e-5));
  // No rows wanted: an empty [0, V] result is fine.
  StepInputs none = step;
  none.logits_rows.clear();
  Tensor empty = Alloc({0, 11});
  EXPECT_TRUE(be_->Logits(none, x.view(), lm.view(), empty.view()).ok());

  Tensor lm_bad = Up(RandomVector(rng_, 11 * 5), {11, 5});
  EXPECT_INVALID(be_->Logits(step, x.view(), lm_bad.view(), logits.view()),
                 "logits: x and lm_head disagree");
  Tensor logits_bad = Alloc({7, 11});
  EXPECT_INVALID(be_->Logits(step, x.view(), lm.view(), logits_bad.view()),
                 "logits out: expected [2, 11], got [7, 11]");
  Tensor logits_v = Alloc({2, 10});
  EXPECT_INVALID(be_->Logits(step, x.view(), lm.view(), logits_v.view()),
                 "logits out");
}

// Geometry for the attention-related ops: 4 query heads, 2 KV heads,
// head_dim 8, 8 blocks of 4 slots; qkv width (4 + 2 * 2) * 8 = 64.
TEST_F(CpuBackendTest, QkNormRopeChecks) {
  const StepInputs step = PrefillStep();
  const AttentionShape s = SmallShape();
  Tensor qkv = Up(RandomVector(rng_, 7 * 64), {7, 64});
  Tensor inv_freq = Up({1.0f, 0.1f, 0.01f, 0.001f}, {4});
  Tensor qn = Up(RandomVector(rng_, 8), {8});
  Tensor kn = Up(RandomVector(rng_, 8), {8});
  const TensorView qnv = qn.view(), knv = kn.view();
  ASSERT_TRUE(
      be_->QkNormRope(step, s, qkv.view(), nullptr, nullptr, 1e-6f,
                      inv_freq.view())
          .ok());
  ASSERT_TRUE(
      be_->QkNormRope(step, s, qkv.view(), &qnv, &knv, 1e-6f, inv_freq.view())
          .ok());
  Tensor qkv_bad = Up(RandomVector(rng_, 7 * 63), {7, 63});
  EXPECT_INVALID(be_->QkNormRope(step, s, qkv_bad.view(), nullptr, nullptr,
                                 1e-6f, inv_freq.view()),
                 "qkv: expected [7, 64], got [7, 63]");
  Tensor qkv_rows = Up(RandomVector(rng_, 6 * 64), {6, 64});
  EXPECT_INVALID(be_->QkNormRope(step, s, qkv_rows.view(), nullptr, nullptr,
                                 1e-6f, inv_freq.view()),
                 "qkv: expected [7, 64]");
  Tensor freq_bad = Up({1.0f, 0.1f, 0.01f}, {3});
  EXPECT_INVALID(be_->QkNormRope(step, s, qkv.view(), nullptr, nullptr, 1e-6f,
                                 freq_bad.view()),
                 "inv_freq must hold head_dim / 2");
  EXPECT_INVALID(be_->QkNormRope(step, s, qkv.view(), &qnv, nullptr, 1e-6f,
                                 inv_freq.view()),
                 "both or neither");
  EXPECT_INVALID(be_->QkNormRope(step, s, qkv.view(), nullptr, &knv, 1e-6f,
                                 inv_freq.view()),
                 "both or neither");
  Tensor qn_bad = Up(RandomVector(rng_, 7), {7});
  const TensorView qn_bad_v = qn_bad.view();
  EXPECT_INVALID(be_->QkNormRope(step, s, qkv.view(), &qn_bad_v, &knv, 1e-6f,
                                 inv_freq.view()),
                 "q_norm/k_norm must hold head_dim");
  std::vector<uint16_t> bf(4);
  EXPECT_INVALID(be_->QkNormRope(step, s, qkv.view(), nullptr, nullptr, 1e-6f,
                                 TensorView{bf.data(), DType::kBF16, {4}}),
                 "inv_freq");
}

TEST_F(CpuBackendTest, QkNormRopeMatchesDouble) {
  const StepInputs step = PrefillStep();
  const AttentionShape s = SmallShape();
  const int hd = 8, width = 64;
  const std::vector<float> x0 = RandomVector(rng_, 7 * width);
  const std::vector<float> freq = {1.0f, 0.3f, 0.05f, 0.001f};
  const std::vector<float> qw = RandomVector(rng_, hd, 0.5f, 2.0f);
  const std::vector<float> kw = RandomVector(rng_, hd, 0.5f, 2.0f);
  Tensor qkv = Up(x0, {7, width});
  Tensor inv_freq = Up(freq, {4});
  Tensor qn = Up(qw, {8});
  Tensor kn = Up(kw, {8});
  const TensorView qnv = qn.view(), knv = kn.view();
  ASSERT_TRUE(
      be_->QkNormRope(step, s, qkv.view(), &qnv, &knv, 1e-6f, inv_freq.view())
          .ok());
  const std::vector<float> got = Down(qkv);
  std::vector<double> want, mag;
  for (int t = 0; t < 7; ++t) {
    for (int h = 0; h < 8; ++h) {  // 4 Q heads, 2 K heads, 2 V heads
      const float* a = x0.data() + t * width + h * hd;
      if (h >= 6) {  // V heads untouched
        for (int i = 0; i < hd; ++i) {
          want.push_back(a[i]);
          mag.push_back(std::fabs(a[i]));
        }
        continue;
      }
      const std::vector<float>& w = h < 4 ? qw : kw;
      double ss = 0;
      for (int i = 0; i < hd; ++i) ss += double{a[i]} * a[i];
      const double inv = 1.0 / std::sqrt(ss / hd + 1e-6);
      std::vector<double> n(hd);
      for (int i = 0; i < hd; ++i) n[i] = double{w[i]} * a[i] * inv;
      for (int i = 0; i < hd; ++i) {
        const int j = i % 4;
        const double angle = static_cast<double>(
            static_cast<float>(step.positions[t]) * freq[j]);
        const double c = std::cos(angle), sn = std::sin(angle);
        if (i < 4) {
          want.push_back(n[j] * c - n[j + 4] * sn);
          mag.push_back(std::fabs(n[j] * c) + std::fabs(n[j + 4] * sn));
        } else {
          want.push_back(n[j + 4] * c + n[j] * sn);
          mag.push_back(std::fabs(n[j + 4] * c) + std::fabs(n[j] * sn));
        }
      }
    }
  }
  EXPECT_TRUE(AllClose(got, want, mag, 1e-5));
}

TEST_F(CpuBackendTest, WriteKvCacheAndAttentionChecks) {
  const StepInputs step = PrefillStep();
  const AttentionShape s = SmallShape();
  Tensor qkv = Up(RandomVector(rng_, 7 * 64), {7, 64});
  Tensor cache = Alloc({8, 2, 2, 4, 8});
  Tensor out = Alloc({7, 32});
  ASSERT_TRUE(be_->WriteKvCache(step, s, qkv.view(), cache.view()).ok());
  ASSERT_TRUE(
      be_->Attention(step, s, qkv.view(), cache.view(), 0.35f, out.view())
          .ok());

  Tensor qkv_bad = Up(RandomVector(rng_, 7 * 60), {7, 60});
  EXPECT_INVALID(be_->WriteKvCache(step, s, qkv_bad.view(), cache.view()),
                 "qkv: expected [7, 64], got [7, 60]");
  EXPECT_INVALID(be_->Attention(step, s, qkv_bad.view(), cache.view(), 0.35f,
                                out.view()),
                 "qkv: expected [7, 64]");
  Tensor cache_bad = Alloc({8, 2, 4, 2, 8});  // kv_heads and block swapped
  EXPECT_INVALID(be_->WriteKvCache(step, s, qkv.view(), cache_bad.view()),
                 "kv_cache: expected [8, 2, 2, 4, 8], got [8, 2, 4, 2, 8]");
  EXPECT_INVALID(be_->Attention(step, s, qkv.view(), cache_bad.view(), 0.35f,
                                out.view()),
                 "kv_cache: expected [8, 2, 2, 4, 8]");
  Tensor cache_small = Alloc({7, 2, 2, 4, 8});
  EXPECT_INVALID(be_->WriteKvCache(step, s, qkv.view(), cache_small.view()),
                 "kv_cache");
  std::vector<uint16_t> bf(8 * 2 * 2 * 4 * 8);
  const TensorView cache_bf{bf.data(), DType::kBF16, {8, 2, 2, 4, 8}};
  EXPECT_INVALID(be_->WriteKvCache(step, s, qkv.view(), cache_bf), "kv_cache");
  EXPECT_INVALID(
      be_->Attention(step, s, qkv.view(), cache_bf, 0.35f, out.view()),
      "kv_cache");
  Tensor out_bad = Alloc({7, 64});
  EXPECT_INVALID(be_->Attention(step, s, qkv.view(), cache.view(), 0.35f,
                                out_bad.view()),
                 "attention out: expected [7, 32], got [7, 64]");
  // 3 query heads over 2 KV heads: not grouped-query.
  AttentionShape s3 = s;
  s3.num_heads = 3;
  Tensor qkv3 = Up(RandomVector(rng_, 7 * 56), {7, 56});
  Tensor out3 = Alloc({7, 24});
  EXPECT_INVALID(be_->Attention(step, s3, qkv3.view(), cache.view(), 0.35f,
                                out3.view()),
                 "num_heads must be a multiple of num_kv_heads");
}

// ---------------------------------------------------------------------------
// End to end: QkNormRope -> WriteKvCache -> Attention for a prefill step and
// a following decode step, checked against dense double attention over the
// K/V rows the steps produced.
// ---------------------------------------------------------------------------

TEST_F(CpuBackendTest, PrefillThenDecodeMatchesDenseAttention) {
  AttentionShape s = SmallShape();  // 4 heads, 2 kv heads, hd 8, bs 4
  const int hd = 8, width = s.qkv_width(), nh = 4, kvh = 2;
  // Step 1: sequence 0 prefills 5 tokens into blocks {6, 1}; sequence 1
  // prefills 3 tokens into block {2}.
  StepInputs p;
  p.mode = AttentionMode::kPrefill;
  p.token_ids = {1, 2, 3, 4, 5, 6, 7, 8};
  p.positions = {0, 1, 2, 3, 4, 0, 1, 2};
  p.slot_mapping = {24, 25, 26, 27, 4, 8, 9, 10};
  p.query_start = {0, 5, 8};
  p.seq_lens = {5, 3};
  p.max_blocks_per_seq = 2;
  p.block_tables = {6, 1, 2, 5};
  p.logits_rows = {4, 7};
  // Step 2: both decode one token (positions 5 and 3).
  StepInputs d;
  d.mode = AttentionMode::kDecode;
  d.token_ids = {9, 10};
  d.positions = {5, 3};
  d.slot_mapping = {5, 11};
  d.query_start = {0, 1, 2};
  d.seq_lens = {6, 4};
  d.max_blocks_per_seq = 2;
  d.block_tables = {6, 1, 2, 5};
  d.logits_rows = {0, 1};

  Tensor cache = Alloc({8, 2, 2, 4, 8});
  {  // Poison the whole cache.
    float* c = cache.view().as<float>();
    for (int64_t i = 0; i < cache.view().numel(); ++i) c[i] = kNaN;
  }
  Tensor inv_freq = Up({1.0f, 0.2f, 0.04f, 0.008f}, {4});
  // Dense post-rope K/V rows of each sequence, in position order.
  std::vector<std::vector<std::vector<float>>> rows(2);
  const float scale = 0.3535534f;

  for (const StepInputs* step : {&p, &d}) {
    SCOPED_TRACE(step == &p ? "prefill" : "decode");
    ASSERT_TRUE(be_->BeginStep(*step, s, kVocab).ok());
    const int T = step->num_tokens();
    Tensor qkv = Up(RandomVector(rng_, T * width), {T, width});
    ASSERT_TRUE(be_->QkNormRope(*step, s, qkv.view(), nullptr, nullptr, 1e-6f,
                                inv_freq.view())
                    .ok());
    ASSERT_TRUE(be_->WriteKvCache(*step, s, qkv.view(), cache.view()).ok());
    Tensor out = Alloc({T, nh * hd});
    ASSERT_TRUE(
        be_->Attention(*step, s, qkv.view(), cache.view(), scale, out.view())
            .ok());
    const std::vector<float> q = Down(qkv);
    for (int seq = 0; seq < 2; ++seq) {
      for (int t = step->query_start[seq]; t < step->query_start[seq + 1];
           ++t) {
        rows[seq].emplace_back(q.begin() + t * width,
                               q.begin() + (t + 1) * width);
      }
    }
    std::vector<double> want, mag;
    for (int seq = 0; seq < 2; ++seq) {
      for (int t = step->query_start[seq]; t < step->query_start[seq + 1];
           ++t) {
        const int pos = step->positions[t];
        for (int h = 0; h < nh; ++h) {
          const int kv = h / (nh / kvh);
          const float* qh = q.data() + t * width + h * hd;
          std::vector<double> sc(pos + 1);
          double mx = -INFINITY;
          for (int j = 0; j <= pos; ++j) {
            const float* kj = rows[seq][j].data() + nh * hd + kv * hd;
            double dot = 0;
            for (int i = 0; i < hd; ++i) dot += double{qh[i]} * kj[i];
            sc[j] = dot * scale;
            mx = std::max(mx, sc[j]);
          }
          double den = 0;
          for (double& x : sc) den += (x = std::exp(x - mx));
          for (int i = 0; i < hd; ++i) {
            double acc = 0, m = 0;
            for (int j = 0; j <= pos; ++j) {
              const double vj = rows[seq][j][(nh + kvh) * hd + kv * hd + i];
              acc += sc[j] / den * vj;
              m += sc[j] / den * std::fabs(vj);
            }
            want.push_back(acc);
            mag.push_back(m);
          }
        }
      }
    }
    EXPECT_TRUE(AllClose(Down(out), want, mag, 1e-5));
  }
}

}  // namespace
}  // namespace duet::kernels
