// Internal to kernels/cuda: token sampling on the device by the procedure of
// kernels/sampling.h, bit-identical to the CPU reference SampleRow.
//
// Before the waves, ApplyPenaltiesKernel (one thread per seen token of a
// row with penalties) penalizes the logits in place. Per wave of rows:
// SampleRowsKernel (one CTA per row) takes the argmax and
// finishes greedy rows, and rows with neither top-k nor top-p (CDF inverted
// in id order by a block-wide scan). Rows with a cut write one 64-bit key
// per token, (weight bits << 21) | (2^21 - 1 - id), unique and ordered as
// the procedure orders tokens; cub::DeviceSegmentedRadixSort sorts them
// descending per row; SampleSortedKernel then scans each sorted row for
// top-k, top-p and the draw. After the waves, LogprobsKernel (one CTA per
// row that asks) reads the penalized logits (rows with logprobs keep them:
// their no-cut draw recomputes weights instead of writing them in place).
#ifndef DUET_KERNELS_CUDA_SAMPLING_KERNELS_H_
#define DUET_KERNELS_CUDA_SAMPLING_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/sampling.h"

namespace duet::kernels::cuda {

inline constexpr int kSampleIdBits = 21;  // vocabulary <= 2^21

struct SampleWaveParams {
  float* logits = nullptr;  // [rows][vocab]; no-cut rows get weights in place
  int64_t vocab = 0;
  int row0 = 0;                       // first row of this wave
  int num_rows = 0;                   // rows in this wave
  const SampleSpec* specs = nullptr;  // [rows], device
  // Per row of the wave: its slot in `keys`, or -1 (no sort needed).
  const int32_t* slot_of_row = nullptr;  // indexed by row - row0
  const int32_t* row_of_slot = nullptr;  // [num_slots]
  int num_slots = 0;
  const int32_t* segment_offsets = nullptr;  // [num_slots + 1] = slot * vocab
  uint64_t* keys = nullptr;                  // [num_slots][vocab] (sort input)
  uint64_t* keys_alt = nullptr;  // [num_slots][vocab] (sort ping-pong)
  int32_t* done = nullptr;       // [rows]: 1 = token final after pass 1
  int32_t* tokens = nullptr;     // [rows]
  void* sort_temp = nullptr;
  size_t sort_temp_bytes = 0;
};

struct PenaltyParams {
  float* logits = nullptr;  // [rows][vocab]
  int64_t vocab = 0;
  const SampleSpec* specs = nullptr;     // [rows]
  const SeenToken* seen = nullptr;       // [num_seen], rows with penalties only
  const int32_t* row_of_seen = nullptr;  // [num_seen]
  int num_seen = 0;
};

struct LogprobParams {
  const float* logits = nullptr;  // [rows][vocab], penalized
  int64_t vocab = 0;
  const SampleSpec* specs = nullptr;  // [rows]
  const int32_t* tokens = nullptr;    // [rows], drawn
  const int32_t* rows = nullptr;      // [num_rows]: the rows that ask
  int num_rows = 0;
  TokenLogprobs* out = nullptr;  // [rows]
};

absl::Status LaunchApplyPenalties(const PenaltyParams& p, cudaStream_t stream);
absl::Status LaunchLogprobs(const LogprobParams& p, cudaStream_t stream);

// Scratch bytes cub needs to sort `num_slots` rows of `vocab` keys.
absl::Status SampleSortTempBytes(int num_slots, int64_t vocab, size_t* bytes);

// Queues the whole wave (pass 1, sort, pass 2) on `stream`.
absl::Status LaunchSampleWave(const SampleWaveParams& p, cudaStream_t stream);

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_SAMPLING_KERNELS_H_
