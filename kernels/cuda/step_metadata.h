// Internal to kernels/cuda: the per-step metadata (token ids, positions,
// slots, block tables, ...) on the device. BeginStep packs it into one
// pinned host buffer and sends it with a single async copy into a
// persistent device buffer; the ops of the step read it from there.
#ifndef DUET_KERNELS_CUDA_STEP_METADATA_H_
#define DUET_KERNELS_CUDA_STEP_METADATA_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/cuda/allocator.h"
#include "kernels/cuda/cuda_utils.h"

namespace duet::kernels::cuda {

// Device copies of StepInputs' arrays plus the host-side facts kernels need
// for their launch configuration.
struct DeviceStep {
  AttentionMode mode = AttentionMode::kPrefill;
  AttentionShape shape;
  int32_t num_tokens = 0;
  int32_t num_seqs = 0;
  int32_t max_blocks_per_seq = 0;
  int32_t num_logits_rows = 0;
  int32_t max_query_len = 0;
  int32_t max_seq_len = 0;
  // logits_rows == 0, 1, ..., num_tokens - 1: Logits can skip the gather.
  bool logits_rows_identity = false;

  const int32_t* token_ids = nullptr;
  const int32_t* positions = nullptr;
  const int64_t* slot_mapping = nullptr;
  const int32_t* query_start = nullptr;
  const int32_t* seq_lens = nullptr;
  const int32_t* block_tables = nullptr;
  const int32_t* logits_rows = nullptr;
  const int32_t* token_seq = nullptr;  // sequence of each token (derived)
};

class StepMetadata {
 public:
  StepMetadata() = default;
  StepMetadata(const StepMetadata&) = delete;
  StepMetadata& operator=(const StepMetadata&) = delete;

  absl::Status Init();
  // Copies an already validated `step` to the device on `stream`. Waits only
  // for the previous step's copy out of the pinned buffer (long done in
  // steady state, since every step ends with a download of the logits).
  absl::Status Upload(const StepInputs& step, const AttentionShape& shape,
                      cudaStream_t stream,
                      const std::shared_ptr<CachingAllocator>& allocator);
  // Forgets the current step (BeginStep failed): ops then refuse to run.
  void Invalidate() { valid_ = false; }

  // FailedPrecondition unless `step` and `shape` are the ones of the last
  // successful Upload (an op must never read another step's metadata, and a
  // bigger shape than the one validated could index past the cache).
  absl::Status Check(const StepInputs& step, const char* op) const;
  absl::Status Check(const StepInputs& step, const AttentionShape& shape,
                     const char* op) const;
  const DeviceStep& device() const { return view_; }

 private:
  PinnedBuffer pinned_;
  DeviceBuffer buffer_;
  CudaEvent copied_;
  bool copy_pending_ = false;
  bool valid_ = false;
  DeviceStep view_;
};

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_STEP_METADATA_H_
