// Internal to kv_transfer/: which slots of a staged receiver's staging
// memory are free. A request takes one run of consecutive slots, so its
// staging is one contiguous region laid out [layer][i][block_bytes]: what
// kernels::Backend::ScatterKvBlocks reads, and what the sender addresses
// with one base per layer and ids 0..n-1.
#ifndef DUET_KV_TRANSFER_STAGING_SLOTS_H_
#define DUET_KV_TRANSFER_STAGING_SLOTS_H_

#include <cstdint>
#include <deque>
#include <map>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace duet::kv_transfer::internal {

// First-fit allocator of runs of slots in [0, num_slots). Runs given back
// by Quarantine become free only `quarantine` later. Not thread-safe.
class StagingSlots {
 public:
  StagingSlots(int32_t num_slots, absl::Duration quarantine);

  // The first slot of a free run of `n` (> 0) slots. RESOURCE_EXHAUSTED
  // when no free run is that long (quarantined runs count as taken).
  absl::StatusOr<int32_t> Allocate(int32_t n, absl::Time now);
  // Returns a run at once (its transfer completed).
  void Free(int32_t first, int32_t n);
  // Returns a run after the quarantine (its transfer may still land).
  void Quarantine(int32_t first, int32_t n, absl::Time now);

  int32_t num_slots() const { return num_slots_; }
  // Free now, after reaping what left quarantine by `now`.
  int32_t NumFree(absl::Time now);

 private:
  struct Held {
    absl::Time until;
    int32_t first;
    int32_t n;
  };
  void Reap(absl::Time now);

  const int32_t num_slots_;
  const absl::Duration quarantine_;
  std::map<int32_t, int32_t> free_;  // first slot -> length; never adjacent
  std::deque<Held> quarantined_;     // by `until` (one quarantine length)
};

}  // namespace duet::kv_transfer::internal

#endif  // DUET_KV_TRANSFER_STAGING_SLOTS_H_
