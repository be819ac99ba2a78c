// Helpers for the CUDA backend tests: every op runs on the CUDA backend and
// on the fp32 CPU reference backend through the same kernels::Backend
// interface, on identical inputs (random, never zero, rounded to bf16 so
// that both backends see exactly the same numbers), with outputs poisoned
// (NaN) beforehand, and every element is compared.
//
// Tolerance (bf16 outputs): |got - want| <= 1e-2 * rms(want) + 2^-7 * |want|.
// The relative term is two bf16 ulps of the output (storage rounding plus
// bf16 intermediates); the absolute term, relative to the output's RMS,
// covers elements that are small only because of cancellation. Attention
// takes the RMS per (token, head) row instead of over the whole tensor: the
// tensor-core kernel rounds the probabilities to bf16 before P.V, an error
// of up to ~2^-10 of |v| in rows with few keys (large probabilities), where
// the row's own RMS is large, while rows over thousands of keys have tiny
// outputs and tiny errors and must not hide behind the big rows. fp32
// outputs (logits) use 1e-3 for both terms: the GEMM inputs are identical
// and only the summation order differs.
#ifndef DUET_TESTS_KERNELS_CUDA_CUDA_TEST_UTIL_H_
#define DUET_TESTS_KERNELS_CUDA_CUDA_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device_info.h"

namespace duet::kernels::testing {

inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Empty when a CUDA device is usable, else why not (for GTEST_SKIP).
inline std::string NoCudaReason() {
  auto devices = cuda::ListDevices();
  if (!devices.ok()) return devices.status().ToString();
  if (devices->empty()) return "no GPU or driver visible";
  return "";
}

#define DUET_SKIP_WITHOUT_CUDA()                                    \
  do {                                                              \
    const std::string duet_no_cuda_ = NoCudaReason();               \
    if (!duet_no_cuda_.empty()) {                                   \
      GTEST_SKIP() << "no CUDA device: " << duet_no_cuda_;          \
    }                                                               \
  } while (0)

inline float RoundBf16(float v) { return Bf16ToFloat(FloatToBf16(v)); }

// Uniform magnitude in [lo, hi], random sign, rounded to bf16: never zero.
inline std::vector<float> RandomBf16(std::mt19937& rng, size_t n,
                                     float lo = 0.05f, float hi = 1.0f) {
  std::uniform_real_distribution<float> mag(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) {
    const float m = mag(rng);
    x = RoundBf16((rng() & 1u) ? m : -m);
  }
  return v;
}

inline int64_t Numel(const Shape& shape) { return NumElements(shape); }

// Uploads host fp32 data as `dtype` (kBF16 means the backend's activation
// dtype: bf16 on CUDA, fp32 on the CPU reference).
inline Tensor MustUpload(Backend& be, const std::vector<float>& data,
                         const Shape& shape, DType dtype = DType::kBF16) {
  EXPECT_EQ(static_cast<int64_t>(data.size()), Numel(shape));
  const DType d = dtype == DType::kBF16 ? be.activation_dtype() : dtype;
  auto t = be.Upload(data.data(), DType::kF32, d, shape);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : Tensor();
}

// An output tensor filled with NaN, so unwritten elements cannot pass.
inline Tensor Poisoned(Backend& be, const Shape& shape,
                       DType dtype = DType::kBF16) {
  return MustUpload(be, std::vector<float>(Numel(shape), kNaN), shape, dtype);
}

inline std::vector<float> Download(Backend& be, const Tensor& t) {
  std::vector<float> host(static_cast<size_t>(t.view().numel()), kNaN);
  const absl::Status s = be.DownloadF32(t.view(), host.data());
  EXPECT_TRUE(s.ok()) << s;
  return host;
}

struct Tolerance {
  double abs_of_rms = 1e-2;   // times rms(want)
  double rel = 1.0 / 128;     // times |want[i]|
  // > 0: the RMS is taken over consecutive runs of this many elements (one
  // attention head of one token) instead of the whole tensor.
  int64_t rms_run = 0;
};
inline constexpr Tolerance kBf16Tol{};
inline constexpr Tolerance kF32Tol{1e-3, 1e-3};
inline Tolerance AttentionTol(int64_t head_dim) {
  return Tolerance{1e-2, 1.0 / 128, head_dim};
}

// Every element: finite and within tolerance. Prints one summary line per
// comparison (max error, worst error/tolerance) for the logs.
inline ::testing::AssertionResult AllClose(const std::vector<float>& got,
                                           const std::vector<float>& want,
                                           Tolerance tol,
                                           const std::string& what) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << what << ": size " << got.size() << " vs " << want.size();
  }
  double sum_sq = 0.0;
  for (float w : want) sum_sq += double{w} * w;
  const double rms = want.empty() ? 0.0 : std::sqrt(sum_sq / want.size());
  const size_t run = tol.rms_run > 0 ? static_cast<size_t>(tol.rms_run)
                                     : std::max<size_t>(want.size(), 1);
  std::vector<double> run_rms((want.size() + run - 1) / run, rms);
  if (tol.rms_run > 0) {
    for (size_t r = 0; r < run_rms.size(); ++r) {
      double ss = 0.0;
      const size_t end = std::min(want.size(), (r + 1) * run);
      for (size_t i = r * run; i < end; ++i) ss += double{want[i]} * want[i];
      run_rms[r] = std::sqrt(ss / (end - r * run));
    }
  }
  int64_t bad = 0;
  double max_abs = 0.0;
  double worst = 0.0;
  std::string detail;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double{got[i]} - want[i]);
    const double t = tol.abs_of_rms * run_rms[i / run] +
                     tol.rel * std::fabs(want[i]) + 1e-30;
    const bool ok = std::isfinite(got[i]) && std::isfinite(want[i]) &&
                    err <= t;
    if (std::isfinite(err)) {
      max_abs = std::max(max_abs, err);
      worst = std::max(worst, err / t);
    }
    if (!ok && ++bad <= 5) {
      detail += "\n  [" + std::to_string(i) + "] got " +
                std::to_string(got[i]) + " want " + std::to_string(want[i]) +
                " tol " + std::to_string(t);
    }
  }
  std::printf("[compare] %-48s n=%-9zu rms=%.4g max_abs_err=%.3g "
              "worst_err/tol=%.3f%s\n",
              what.c_str(), got.size(), rms, max_abs, worst,
              bad > 0 ? " FAIL" : "");
  if (bad > 0) {
    return ::testing::AssertionFailure()
           << what << ": " << bad << " of " << got.size()
           << " elements differ (rms " << rms << ")" << detail;
  }
  return ::testing::AssertionSuccess();
}

// One sequence of a hand-made step: `prefix` tokens already cached, then
// `q_len` new ones.
struct SeqSpec {
  int32_t prefix = 0;
  int32_t q_len = 1;
};

// A valid step for `seqs`: physical blocks are a random permutation (block
// tables are not contiguous), table entries past a sequence's last block
// hold an out-of-range id that a kernel must never follow, and logits are
// asked for the last token of each sequence.
inline StepInputs MakeStep(AttentionMode mode, const std::vector<SeqSpec>& seqs,
                           int32_t block_size, int32_t num_blocks,
                           int32_t vocab, std::mt19937& rng) {
  StepInputs step;
  step.mode = mode;
  std::vector<int32_t> free_blocks(num_blocks);
  for (int32_t i = 0; i < num_blocks; ++i) free_blocks[i] = i;
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
  int32_t max_blocks = 1;
  for (const SeqSpec& s : seqs) {
    max_blocks = std::max(
        max_blocks, (s.prefix + s.q_len + block_size - 1) / block_size);
  }
  step.max_blocks_per_seq = max_blocks;
  step.block_tables.assign(seqs.size() * max_blocks, num_blocks + 1000);
  step.query_start.push_back(0);
  size_t next_block = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int32_t len = seqs[i].prefix + seqs[i].q_len;
    const int32_t need = (len + block_size - 1) / block_size;
    int32_t* table = step.block_tables.data() + i * max_blocks;
    for (int32_t b = 0; b < need; ++b) {
      EXPECT_LT(next_block, free_blocks.size()) << "test needs more blocks";
      table[b] = free_blocks[next_block++ % free_blocks.size()];
    }
    for (int32_t j = 0; j < seqs[i].q_len; ++j) {
      const int32_t pos = seqs[i].prefix + j;
      step.token_ids.push_back(static_cast<int32_t>(rng() % vocab));
      step.positions.push_back(pos);
      step.slot_mapping.push_back(int64_t{table[pos / block_size]} *
                                      block_size + pos % block_size);
    }
    step.query_start.push_back(step.num_tokens());
    step.seq_lens.push_back(len);
    step.logits_rows.push_back(step.num_tokens() - 1);
  }
  return step;
}

inline int32_t BlocksFor(const std::vector<SeqSpec>& seqs, int32_t block_size) {
  int32_t n = 0;
  for (const SeqSpec& s : seqs) {
    n += (s.prefix + s.q_len + block_size - 1) / block_size;
  }
  return n;
}

// A CPU reference backend and a CUDA backend per test; skips visibly when
// there is no GPU.
class CudaVsCpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DUET_SKIP_WITHOUT_CUDA();
    auto be = MakeCudaBackend(0);
    ASSERT_TRUE(be.ok()) << be.status();
    cuda_ = std::move(*be);
    cpu_ = MakeCpuBackend();
  }
  std::unique_ptr<Backend> cpu_;
  std::unique_ptr<Backend> cuda_;
};

}  // namespace duet::kernels::testing

#endif  // DUET_TESTS_KERNELS_CUDA_CUDA_TEST_UTIL_H_
