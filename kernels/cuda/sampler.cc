#include "kernels/cuda/sampler.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/device_status.h"
#include "common/status.h"
#include "kernels/cuda/sampling_kernels.h"

namespace duet::kernels::cuda {
namespace {

// Offsets of the arrays inside the pinned and device buffers (same layout).
// Everything before `done` is input, copied in one transfer.
struct Layout {
  size_t specs, slot_of_row, row_of_slot, offsets, seen, row_of_seen,
      logprob_rows, done, tokens, logprobs, total;
};

Layout MakeLayout(int rows, int num_seen, int num_logprob_rows) {
  Layout l{};
  PackedLayout packed;
  l.specs = packed.Take(rows * sizeof(SampleSpec));
  l.slot_of_row = packed.Take(rows * sizeof(int32_t));
  l.row_of_slot = packed.Take(rows * sizeof(int32_t));
  l.offsets = packed.Take((DeviceSampler::kWaveRows + 1) * sizeof(int32_t));
  l.seen = packed.Take(num_seen * sizeof(SeenToken));
  l.row_of_seen = packed.Take(num_seen * sizeof(int32_t));
  l.logprob_rows = packed.Take(num_logprob_rows * sizeof(int32_t));
  l.done = packed.Take(rows * sizeof(int32_t));
  l.tokens = packed.Take(rows * sizeof(int32_t));
  l.logprobs =
      packed.Take(num_logprob_rows > 0 ? rows * sizeof(TokenLogprobs) : 0);
  l.total = packed.size();
  return l;
}

bool NeedsSort(const SampleSpec& s, int64_t vocab) {
  if (sampling::IsGreedy(s)) return false;
  return (s.top_k > 0 && s.top_k < vocab) || s.top_p < 1.0f;
}

}  // namespace

absl::Status DeviceSampler::Run(const TensorView& logits,
                                const SampleBatch& batch,
                                std::span<int32_t> tokens,
                                std::span<TokenLogprobs> logprobs,
                                cudaStream_t stream) {
  const std::span<const SampleSpec> specs = batch.specs;
  const int rows = static_cast<int>(specs.size());
  const int64_t vocab = logits.dim(1);
  if (rows == 0) return absl::OkStatus();
  // Only rows with penalties send their seen tokens.
  int num_seen = 0;
  std::vector<int32_t> logprob_rows;
  for (int r = 0; r < rows; ++r) {
    if (!batch.seen_offsets.empty() && sampling::HasPenalties(specs[r])) {
      num_seen += batch.seen_offsets[r + 1] - batch.seen_offsets[r];
    }
    if (specs[r].num_logprobs >= 0) logprob_rows.push_back(r);
  }
  const int num_lp = static_cast<int>(logprob_rows.size());
  const Layout layout = MakeLayout(rows, num_seen, num_lp);
  // The previous call waited for its copies: the pinned buffer is free.
  DUET_RETURN_IF_ERROR(pinned_.Reserve(layout.total));
  DUET_RETURN_IF_ERROR(device_.Reserve(allocator_, layout.total));
  char* host = static_cast<char*>(pinned_.data());
  std::memcpy(host + layout.specs, specs.data(), specs.size_bytes());
  {
    auto* seen = reinterpret_cast<SeenToken*>(host + layout.seen);
    auto* row_of_seen = reinterpret_cast<int32_t*>(host + layout.row_of_seen);
    int e = 0;
    for (int r = 0; r < rows && num_seen > 0; ++r) {
      if (!sampling::HasPenalties(specs[r])) continue;
      for (int32_t i = batch.seen_offsets[r]; i < batch.seen_offsets[r + 1];
           ++i, ++e) {
        seen[e] = batch.seen[static_cast<size_t>(i)];
        row_of_seen[e] = r;
      }
    }
    if (num_lp > 0) {
      std::memcpy(host + layout.logprob_rows, logprob_rows.data(),
                  logprob_rows.size() * sizeof(int32_t));
    }
  }
  auto* slot_of_row = reinterpret_cast<int32_t*>(host + layout.slot_of_row);
  auto* row_of_slot = reinterpret_cast<int32_t*>(host + layout.row_of_slot);
  auto* offsets = reinterpret_cast<int32_t*>(host + layout.offsets);
  // Slots restart at 0 in every wave; row_of_slot of wave w starts at row0.
  int max_slots = 0;
  std::vector<int> wave_slots;
  for (int row0 = 0; row0 < rows; row0 += kWaveRows) {
    const int n = std::min(kWaveRows, rows - row0);
    int slots = 0;
    for (int i = 0; i < n; ++i) {
      const bool sort = NeedsSort(specs[row0 + i], vocab);
      slot_of_row[row0 + i] = sort ? slots : -1;
      if (sort) row_of_slot[row0 + slots++] = row0 + i;
    }
    wave_slots.push_back(slots);
    max_slots = std::max(max_slots, slots);
  }
  for (int j = 0; j <= kWaveRows; ++j) {
    offsets[j] = static_cast<int32_t>(j * vocab);
  }
  char* dev = device_.as<char>();
  // Inputs only: done and tokens are written by the kernels.
  DUET_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dev, host, layout.done, cudaMemcpyHostToDevice, stream));

  PenaltyParams pen;
  pen.logits = static_cast<float*>(logits.data);
  pen.vocab = vocab;
  pen.specs = reinterpret_cast<const SampleSpec*>(dev + layout.specs);
  pen.seen = reinterpret_cast<const SeenToken*>(dev + layout.seen);
  pen.row_of_seen = reinterpret_cast<const int32_t*>(dev + layout.row_of_seen);
  pen.num_seen = num_seen;
  DUET_RETURN_IF_ERROR(LaunchApplyPenalties(pen, stream));

  DeviceBuffer keys, keys_alt, temp;
  size_t temp_bytes = 0;
  if (max_slots > 0) {
    const size_t key_bytes = static_cast<size_t>(max_slots) * vocab * 8;
    DUET_ASSIGN_OR_RETURN(keys, DeviceBuffer::Make(allocator_, key_bytes));
    DUET_ASSIGN_OR_RETURN(keys_alt, DeviceBuffer::Make(allocator_, key_bytes));
    DUET_RETURN_IF_ERROR(SampleSortTempBytes(max_slots, vocab, &temp_bytes));
    DUET_ASSIGN_OR_RETURN(temp,
                          DeviceBuffer::Make(allocator_, temp_bytes + 16));
  }
  for (size_t w = 0; w < wave_slots.size(); ++w) {
    const int row0 = static_cast<int>(w) * kWaveRows;
    SampleWaveParams p;
    p.logits = static_cast<float*>(logits.data);
    p.vocab = vocab;
    p.row0 = row0;
    p.num_rows = std::min(kWaveRows, rows - row0);
    p.specs = reinterpret_cast<const SampleSpec*>(dev + layout.specs);
    p.slot_of_row =
        reinterpret_cast<const int32_t*>(dev + layout.slot_of_row) + row0;
    p.row_of_slot =
        reinterpret_cast<const int32_t*>(dev + layout.row_of_slot) + row0;
    p.num_slots = wave_slots[w];
    p.segment_offsets = reinterpret_cast<const int32_t*>(dev + layout.offsets);
    p.keys = keys.as<uint64_t>();
    p.keys_alt = keys_alt.as<uint64_t>();
    p.done = reinterpret_cast<int32_t*>(dev + layout.done);
    p.tokens = reinterpret_cast<int32_t*>(dev + layout.tokens);
    p.sort_temp = temp.data();
    p.sort_temp_bytes = temp_bytes;
    DUET_RETURN_IF_ERROR(LaunchSampleWave(p, stream));
  }
  if (num_lp > 0) {
    LogprobParams lp;
    lp.logits = static_cast<const float*>(logits.data);
    lp.vocab = vocab;
    lp.specs = pen.specs;
    lp.tokens = reinterpret_cast<const int32_t*>(dev + layout.tokens);
    lp.rows = reinterpret_cast<const int32_t*>(dev + layout.logprob_rows);
    lp.num_rows = num_lp;
    lp.out = reinterpret_cast<TokenLogprobs*>(dev + layout.logprobs);
    DUET_RETURN_IF_ERROR(LaunchLogprobs(lp, stream));
  }
  // tokens and logprobs are adjacent: one copy back.
  DUET_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      host + layout.tokens, dev + layout.tokens, layout.total - layout.tokens,
      cudaMemcpyDeviceToHost, stream));
  // Also keeps the scratch above alive until the kernels are done with it.
  DUET_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  std::memcpy(tokens.data(), host + layout.tokens, rows * sizeof(int32_t));
  if (num_lp > 0) {
    const auto* got =
        reinterpret_cast<const TokenLogprobs*>(host + layout.logprobs);
    for (int32_t r : logprob_rows) logprobs[r] = got[r];
  }
  return absl::OkStatus();
}

}  // namespace duet::kernels::cuda
