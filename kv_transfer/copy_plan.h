// Checks and planning shared by every transport (internal to kv_transfer/).
//
// Every transport validates a Send the same way before touching memory, so a
// bad descriptor fails identically (InvalidArgument) whichever transport is
// configured, and every transport moves the same coalesced runs of blocks.
#ifndef DUET_KV_TRANSFER_COPY_PLAN_H_
#define DUET_KV_TRANSFER_COPY_PLAN_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kv_transfer::internal {

// InvalidArgument unless `layout` has positive sizes, tp_size divides
// num_kv_heads and 0 <= tp_rank < tp_size.
absl::Status ValidateLayout(const KvLayout& layout);

// InvalidArgument unless `pool` has a valid layout, num_blocks > 0 and one
// non-null base per layer. `what` names the pool in the message.
absl::Status ValidatePool(const KvPoolView& pool, absl::string_view what);

// InvalidArgument when `dest` is not for `transport`, its layout differs from
// the local pool's, one of its block ids is negative, a copy's logical block
// is outside dest.block_ids or appears twice, or a copy's source block is
// outside the local pool. Destination ids above the receiver's pool size are
// caught by the receiver (Describe) since the descriptor does not carry it.
absl::Status ValidateSend(const KvPoolView& local, const KvDescriptor& dest,
                          std::span<const BlockCopy> copies,
                          Transport transport);

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
