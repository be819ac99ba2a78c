#include "kernels/cuda/sampling_kernels.h"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include <climits>
#include <cmath>

#include "common/device_status.h"
#include "kernels/cuda/cuda_utils.h"

namespace duet::kernels::cuda {
namespace {

namespace sm = ::duet::kernels::sampling;

constexpr int kThreads = 512;
constexpr int kItems = 8;  // consecutive positions per thread in a scan
constexpr uint64_t kIdMask = (uint64_t{1} << kSampleIdBits) - 1;
// Keys hold 30 bits of weight (w <= 1.0f = 0x3f800000) above the id bits.
constexpr int kKeyBits = 30 + kSampleIdBits;

struct ArgMax {
  float value;
  int index;
};

struct ArgMaxOp {
  __device__ ArgMax operator()(const ArgMax& a, const ArgMax& b) const {
    if (b.value > a.value || (b.value == a.value && b.index < a.index)) {
      return b;
    }
    return a;
  }
};

struct MaxOp {
  __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};

using Reduce64 = cub::BlockReduce<unsigned long long, kThreads>;
using ReduceArg = cub::BlockReduce<ArgMax, kThreads>;
using ReduceF = cub::BlockReduce<float, kThreads>;
using ReduceD = cub::BlockReduce<double, kThreads>;
using Scan64 = cub::BlockScan<unsigned long long, kThreads>;

union SharedScratch {
  typename Reduce64::TempStorage reduce64;
  typename ReduceArg::TempStorage reduce_arg;
  typename ReduceF::TempStorage reduce_f;
  typename ReduceD::TempStorage reduce_d;
  typename Scan64::TempStorage scan;
};

struct ScanResult {
  long long position;          // -1 when not found
  unsigned long long prefix;   // inclusive mass prefix at position
};

// The first position p in [0, n) whose inclusive mass prefix exceeds
// `target`, scanning in position order. mass(p) and the reduction are exact
// integers, so the answer does not depend on how the scan is blocked.
template <typename MassAt>
__device__ ScanResult FindPrefixAbove(unsigned long long target, int64_t n,
                                      MassAt mass_at, SharedScratch& tmp) {
  __shared__ ScanResult found;
  __shared__ unsigned long long carry;
  if (threadIdx.x == 0) {
    found = {-1, 0};
    carry = 0;
  }
  __syncthreads();
  for (int64_t base = 0; base < n; base += int64_t{kThreads} * kItems) {
    const int64_t first = base + int64_t{threadIdx.x} * kItems;
    unsigned long long m[kItems];
    unsigned long long sum = 0;
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      m[j] = first + j < n ? mass_at(first + j) : 0ull;
      sum += m[j];
    }
    unsigned long long excl = 0;
    unsigned long long aggregate = 0;
    Scan64(tmp.scan).ExclusiveSum(sum, excl, aggregate);
    unsigned long long at = carry + excl;
    if (target >= at && target - at < sum) {
      // Exactly one thread's range holds the target.
#pragma unroll
      for (int j = 0; j < kItems; ++j) {
        at += m[j];
        if (at > target) {
          found = {first + j, at};
          break;
        }
      }
    }
    __syncthreads();
    if (found.position >= 0) break;
    if (threadIdx.x == 0) carry += aggregate;
    __syncthreads();
  }
  const ScanResult r = found;
  __syncthreads();
  return r;
}

template <typename MassAt>
__device__ unsigned long long SumMass(int64_t n, MassAt mass_at,
                                      SharedScratch& tmp) {
  unsigned long long sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) sum += mass_at(i);
  __shared__ unsigned long long total;
  const unsigned long long t = Reduce64(tmp.reduce64).Sum(sum);
  if (threadIdx.x == 0) total = t;
  __syncthreads();
  const unsigned long long r = total;
  __syncthreads();
  return r;
}

__device__ uint64_t TokenKey(float weight, int64_t id) {
  return (static_cast<uint64_t>(sm::WeightBits(weight)) << kSampleIdBits) |
         (kIdMask - static_cast<uint64_t>(id));
}

__device__ unsigned long long KeyMass(uint64_t key) {
  return sm::Mass(
      sm::WeightFromBits(static_cast<uint32_t>(key >> kSampleIdBits)));
}

__device__ int32_t KeyId(uint64_t key) {
  return static_cast<int32_t>(kIdMask - (key & kIdMask));
}

__global__ void __launch_bounds__(kThreads)
    SampleRowsKernel(SampleWaveParams p) {
  __shared__ SharedScratch tmp;
  __shared__ ArgMax best_s;
  const int local = blockIdx.x;
  const int row = p.row0 + local;
  const SampleSpec spec = p.specs[row];
  float* logits = p.logits + int64_t{row} * p.vocab;
  const int64_t vocab = p.vocab;

  ArgMax mine{-INFINITY, INT_MAX};
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = logits[i];
    if (v > mine.value) mine = {v, static_cast<int>(i)};  // NaN never wins
    else if (v == mine.value && i < mine.index) mine.index = static_cast<int>(i);
  }
  const ArgMax best = ReduceArg(tmp.reduce_arg).Reduce(mine, ArgMaxOp{});
  if (threadIdx.x == 0) {
    best_s = best.index == INT_MAX ? ArgMax{logits[0], 0} : best;
  }
  __syncthreads();
  const ArgMax b = best_s;
  if (sm::IsGreedy(spec) || !isfinite(b.value)) {
    if (threadIdx.x == 0) {
      p.tokens[row] = b.index;
      p.done[row] = 1;
    }
    return;
  }
  const int slot = p.slot_of_row[local];
  if (slot >= 0) {
    uint64_t* keys = p.keys + int64_t{slot} * vocab;
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      keys[i] = TokenKey(
          sm::MinPWeight(sm::Weight(logits[i], b.value, spec.temperature),
                         spec.min_p),
          i);
    }
    if (threadIdx.x == 0) p.done[row] = 0;
    return;
  }
  // No cut: the CDF over ids. Weights go in place (each thread rewrites
  // only what it read) unless the row's logprobs still need the logits;
  // then both passes recompute them.
  unsigned long long target = 0;
  ScanResult r;
  if (spec.num_logprobs < 0) {
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      logits[i] = sm::MinPWeight(
          sm::Weight(logits[i], b.value, spec.temperature), spec.min_p);
    }
    __syncthreads();
    auto mass_at = [&](int64_t i) -> unsigned long long {
      return sm::Mass(logits[i]);
    };
    const unsigned long long total = SumMass(vocab, mass_at, tmp);
    target = sm::Target(sm::Uniform(spec.seed, spec.step), total);
    r = FindPrefixAbove(target, vocab, mass_at, tmp);
  } else {
    auto mass_at = [&](int64_t i) -> unsigned long long {
      return sm::Mass(sm::MinPWeight(
          sm::Weight(logits[i], b.value, spec.temperature), spec.min_p));
    };
    const unsigned long long total = SumMass(vocab, mass_at, tmp);
    target = sm::Target(sm::Uniform(spec.seed, spec.step), total);
    r = FindPrefixAbove(target, vocab, mass_at, tmp);
  }
  if (threadIdx.x == 0) {
    p.tokens[row] = r.position >= 0 ? static_cast<int32_t>(r.position)
                                    : b.index;
    p.done[row] = 1;
  }
}

__global__ void __launch_bounds__(kThreads)
    SampleSortedKernel(SampleWaveParams p, const uint64_t* sorted) {
  __shared__ SharedScratch tmp;
  const int slot = blockIdx.x;
  const int row = p.row_of_slot[slot];
  if (p.done[row]) return;
  const SampleSpec spec = p.specs[row];
  const uint64_t* keys = sorted + int64_t{slot} * p.vocab;
  const int64_t k =
      spec.top_k > 0 && spec.top_k < p.vocab ? spec.top_k : p.vocab;
  auto mass_at = [&](int64_t i) { return KeyMass(keys[i]); };
  const unsigned long long total = SumMass(k, mass_at, tmp);
  int64_t keep = k;
  unsigned long long kept_total = total;
  if (spec.top_p < 1.0f) {
    const unsigned long long need = sm::TopPNeed(spec.top_p, total);
    const ScanResult r = FindPrefixAbove(need - 1, k, mass_at, tmp);
    if (r.position >= 0) {
      keep = r.position + 1;
      kept_total = r.prefix;
    }
  }
  const unsigned long long target =
      sm::Target(sm::Uniform(spec.seed, spec.step), kept_total);
  const ScanResult r = FindPrefixAbove(target, keep, mass_at, tmp);
  if (threadIdx.x == 0) {
    p.tokens[row] = KeyId(keys[r.position >= 0 ? r.position : 0]);
  }
}

__global__ void ApplyPenaltiesKernel(PenaltyParams p) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= p.num_seen) return;
  const int row = p.row_of_seen[e];
  const SeenToken t = p.seen[e];
  // Ids are unique within a row: no two threads write one logit.
  float& l = p.logits[int64_t{row} * p.vocab + t.id];
  l = sm::Penalize(l, p.specs[row], t.output_count, t.in_prompt != 0);
}

// One CTA per row that asks: max, log-sum-exp (double) and the top list
// (each thread keeps its own k best in order, then k block-wide argmax
// rounds pop the heads), as ComputeLogprobs in kernels/sampling.cc.
__global__ void __launch_bounds__(kThreads) LogprobsKernel(LogprobParams p) {
  __shared__ SharedScratch tmp;
  __shared__ float max_s;
  __shared__ double lse_s;
  __shared__ ArgMax winner_s;
  const int row = p.rows[blockIdx.x];
  const SampleSpec spec = p.specs[row];
  const float* logits = p.logits + int64_t{row} * p.vocab;
  const int64_t vocab = p.vocab;
  const double t = sm::LogprobTemperature(spec);

  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    if (logits[i] > m) m = logits[i];
  }
  const float block_max = ReduceF(tmp.reduce_f).Reduce(m, MaxOp{});
  if (threadIdx.x == 0) max_s = block_max;
  __syncthreads();
  const float max_logit = max_s;
  const bool finite = isfinite(max_logit);
  auto x = [&](float l) -> double {
    if (!finite) return l == max_logit ? 0.0 : -INFINITY;
    return (static_cast<double>(l) - max_logit) / t;
  };
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    if (!isnan(logits[i])) sum += exp(x(logits[i]));
  }
  const double block_sum = ReduceD(tmp.reduce_d).Sum(sum);
  if (threadIdx.x == 0) lse_s = log(block_sum);
  __syncthreads();
  const double lse = lse_s;
  auto logprob = [&](float l) -> float {
    return isnan(l) ? NAN : static_cast<float>(x(l) - lse);
  };
  TokenLogprobs* out = p.out + row;
  if (threadIdx.x == 0) out->logprob = logprob(logits[p.tokens[row]]);

  const int k = min(spec.num_logprobs, kMaxTopLogprobs);
  float top_v[kMaxTopLogprobs];
  int top_i[kMaxTopLogprobs];
  int n = 0;
  for (int64_t i = threadIdx.x; i < vocab && k > 0; i += kThreads) {
    const float l = logits[i];
    if (isnan(l) || (n == k && !(l > top_v[k - 1]))) continue;
    int j = n < k ? n++ : k - 1;
    while (j > 0 && l > top_v[j - 1]) {
      top_v[j] = top_v[j - 1];
      top_i[j] = top_i[j - 1];
      --j;
    }
    top_v[j] = l;
    top_i[j] = static_cast<int>(i);
  }
  int head = 0;
  int found = 0;
  for (int round = 0; round < k; ++round) {
    const ArgMax mine = head < n ? ArgMax{top_v[head], top_i[head]}
                                 : ArgMax{-INFINITY, INT_MAX};
    const ArgMax best = ReduceArg(tmp.reduce_arg).Reduce(mine, ArgMaxOp{});
    if (threadIdx.x == 0) winner_s = best;
    __syncthreads();
    const ArgMax w = winner_s;
    __syncthreads();
    if (w.index == INT_MAX) break;  // fewer than k non-NaN logits
    if (head < n && top_i[head] == w.index) ++head;
    if (threadIdx.x == 0) {
      out->top_ids[round] = w.index;
      out->top_logprobs[round] = logprob(w.value);
    }
    ++found;
  }
  if (threadIdx.x == 0) out->num_top = found;
}

}  // namespace

absl::Status LaunchApplyPenalties(const PenaltyParams& p, cudaStream_t stream) {
  if (p.num_seen == 0) return absl::OkStatus();
  constexpr int kPenaltyThreads = 256;
  ApplyPenaltiesKernel<<<(p.num_seen + kPenaltyThreads - 1) / kPenaltyThreads,
                         kPenaltyThreads, 0, stream>>>(p);
  DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchLogprobs(const LogprobParams& p, cudaStream_t stream) {
  if (p.num_rows == 0) return absl::OkStatus();
  LogprobsKernel<<<p.num_rows, kThreads, 0, stream>>>(p);
  DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status SampleSortTempBytes(int num_slots, int64_t vocab, size_t* bytes) {
  *bytes = 0;
  if (num_slots == 0) return absl::OkStatus();
  cub::DoubleBuffer<unsigned long long> keys(nullptr, nullptr);
  DUET_CUDA_RETURN_IF_ERROR(
      cub::DeviceSegmentedRadixSort::SortKeysDescending(
          nullptr, *bytes, keys, static_cast<int>(num_slots * vocab),
          num_slots, static_cast<const int*>(nullptr),
          static_cast<const int*>(nullptr), 0, kKeyBits));
  return absl::OkStatus();
}

absl::Status LaunchSampleWave(const SampleWaveParams& p, cudaStream_t stream) {
  if (p.num_rows == 0) return absl::OkStatus();
  SampleRowsKernel<<<p.num_rows, kThreads, 0, stream>>>(p);
  DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  if (p.num_slots == 0) return absl::OkStatus();
  static_assert(sizeof(unsigned long long) == sizeof(uint64_t));
  cub::DoubleBuffer<unsigned long long> keys(
      reinterpret_cast<unsigned long long*>(p.keys),
      reinterpret_cast<unsigned long long*>(p.keys_alt));
  size_t temp_bytes = p.sort_temp_bytes;
  DUET_CUDA_RETURN_IF_ERROR(
      cub::DeviceSegmentedRadixSort::SortKeysDescending(
          p.sort_temp, temp_bytes, keys,
          static_cast<int>(p.num_slots * p.vocab), p.num_slots,
          p.segment_offsets, p.segment_offsets + 1, 0, kKeyBits, stream));
  SampleSortedKernel<<<p.num_slots, kThreads, 0, stream>>>(
      p, reinterpret_cast<const uint64_t*>(keys.Current()));
  DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace duet::kernels::cuda
