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
struct Layout {
  size_t specs, slot_of_row, row_of_slot, offsets, done, tokens, total;
};

Layout MakeLayout(int rows) {
  Layout l{};
  PackedLayout packed;
  l.specs = packed.Take(rows * sizeof(SampleSpec));
  l.slot_of_row = packed.Take(rows * sizeof(int32_t));
  l.row_of_slot = packed.Take(rows * sizeof(int32_t));
  l.offsets = packed.Take((DeviceSampler::kWaveRows + 1) * sizeof(int32_t));
  l.done = packed.Take(rows * sizeof(int32_t));
  l.tokens = packed.Take(rows * sizeof(int32_t));
  l.total = packed.size();
  return l;
}

bool NeedsSort(const SampleSpec& s, int64_t vocab) {
  if (sampling::IsGreedy(s)) return false;
  return (s.top_k > 0 && s.top_k < vocab) || s.top_p < 1.0f;
}

}  // namespace

absl::Status DeviceSampler::Run(const TensorView& logits,
                                std::span<const SampleSpec> specs,
                                std::span<int32_t> tokens,
                                cudaStream_t stream) {
  const int rows = static_cast<int>(specs.size());
  const int64_t vocab = logits.dim(1);
  if (rows == 0) return absl::OkStatus();
  const Layout layout = MakeLayout(rows);
  // The previous call waited for its copies: the pinned buffer is free.
  DUET_RETURN_IF_ERROR(pinned_.Reserve(layout.total));
  DUET_RETURN_IF_ERROR(device_.Reserve(allocator_, layout.total));
  char* host = static_cast<char*>(pinned_.data());
  std::memcpy(host + layout.specs, specs.data(), specs.size_bytes());
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
  DUET_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(host + layout.tokens, dev + layout.tokens,
                      rows * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
  // Also keeps the scratch above alive until the kernels are done with it.
  DUET_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  std::memcpy(tokens.data(), host + layout.tokens, rows * sizeof(int32_t));
  return absl::OkStatus();
}

}  // namespace duet::kernels::cuda
