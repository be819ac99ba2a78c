// Checks, planning and key tracking shared by every transport (internal to
// kv_transfer/).
//
// Every transport validates a Send (and a Describe) the same way before
// touching memory, so a bad descriptor fails identically (InvalidArgument)
// whichever transport is configured, and every transport moves the same
// coalesced runs of blocks.
#ifndef DUET_KV_TRANSFER_COPY_PLAN_H_
#define DUET_KV_TRANSFER_COPY_PLAN_H_

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "kv_transfer/kv_transfer.h"
#include "kv_transfer/transfer_plan.h"

namespace duet::kv_transfer::internal {

// InvalidArgument unless `layout` has positive sizes, tp_size divides
// num_kv_heads and 0 <= tp_rank < tp_size.
absl::Status ValidateLayout(const KvLayout& layout);

// InvalidArgument unless `pool` has a valid layout, num_blocks > 0 and one
// non-null base per layer. `what` names the pool in the message.
absl::Status ValidatePool(const KvPoolView& pool, absl::string_view what);

// InvalidArgument when `dest` is not for `transport`, its layout differs from
// the local pool's, its num_blocks is not positive or smaller than its
// number of block ids, one of its block ids is outside [0, num_blocks), two
// copies go to one destination block, a copy's logical block is outside
// dest.block_ids or appears twice, or a copy's source block is outside the
// local pool.
absl::Status ValidateSend(const KvPoolView& local, const KvDescriptor& dest,
                          std::span<const BlockCopy> copies,
                          Transport transport);
// As ValidateSend for a slice of each block (heterogeneous TP): the layouts
// may differ in their TP fields only, and `slice` must be the one
// MakeTransferPlan gives for (local rank, destination rank).
absl::Status ValidateSliceSend(const KvPoolView& local,
                               const KvDescriptor& dest,
                               std::span<const BlockCopy> copies,
                               Transport transport,
                               const TransferSlice& slice);
// The id checks ValidateSend ends with (no layout check).
absl::Status ValidateSendIds(const KvPoolView& local, const KvDescriptor& dest,
                             std::span<const BlockCopy> copies);

// [begin, end) of `layers` within `layout`'s layers: InvalidArgument for
// a negative begin or an empty range.
absl::StatusOr<std::pair<int32_t, int32_t>> ResolveLayers(
    const KvLayout& layout, LayerRange layers);

// `pool` restricted to layers [begin, end) (the layer bases only).
kernels::KvBlockPool LayerSlice(kernels::KvBlockPool pool, int32_t begin,
                                int32_t end);

// What every receiver checks in Describe: InvalidArgument for an id outside
// [0, num_blocks) or listed twice. `what` names the pool in the message.
absl::Status ValidateDescribeIds(std::span<const int32_t> block_ids,
                                 int32_t num_blocks, absl::string_view what);

// The keys a direct receiver has described and not yet landed or dropped
// (it moves no data itself, but keeps the same contract as a staged one).
// Thread-safe.
class DescribedKeys {
 public:
  // AlreadyExists when `key` is present.
  absl::Status Add(uint64_t key);
  // NotFound when `key` is absent.
  absl::Status Land(uint64_t key);
  void Drop(uint64_t key);

 private:
  absl::Mutex mu_;
  absl::flat_hash_set<uint64_t> keys_ ABSL_GUARDED_BY(mu_);
};

// A run of `num_blocks` consecutive blocks: local [src_block, +num_blocks)
// into remote [dst_block, +num_blocks). One run is one memcpy / one UCX put
// per layer; coalescing matters because per-message overhead dominates at
// KV-block sizes (DESIGN.md §1).
struct CopyRun {
  int32_t src_block = 0;
  int32_t dst_block = 0;
  int32_t num_blocks = 0;
};

// Maps copies to destination block ids and merges them into maximal runs
// (sorted by source block). Assumes ValidateSend passed.
std::vector<CopyRun> PlanCopyRuns(const KvDescriptor& dest,
                                  std::span<const BlockCopy> copies);

}  // namespace duet::kv_transfer::internal

#endif  // DUET_KV_TRANSFER_COPY_PLAN_H_
