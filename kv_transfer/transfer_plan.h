// Heterogeneous tensor parallelism for KV handover: which bytes of which
// prefill rank's block go to which decode rank's block when the prefill
// node runs TP=N and the decode node TP=M (any N, M dividing the KV heads).
//
// A rank's block of one layer is [2 (K, V)][its heads][block_size][head_dim]
// (kernels/backend.h), so the heads two ranks share form one contiguous run
// for K and one for V in both blocks: a slice is two (offset, length) pairs
// per block and layer, the same for every block. One plan, computed once
// from the two layouts, drives every transport; a sender rank takes the
// slices whose src_rank is its own.
#ifndef DUET_KV_TRANSFER_TRANSFER_PLAN_H_
#define DUET_KV_TRANSFER_TRANSFER_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kv_transfer {

// The heads [head_begin, head_begin + num_heads) of the model that source
// rank src_rank and destination rank dst_rank both hold.
struct TransferSlice {
  int32_t src_rank = 0;
  int32_t dst_rank = 0;
  int32_t head_begin = 0;  // in the whole model
  int32_t num_heads = 0;
  // Byte offsets of the K run (kv = 0) and the V run (kv = 1) inside one
  // source and one destination block of a layer; both runs are `bytes` long.
  int64_t src_offset[2] = {0, 0};
  int64_t dst_offset[2] = {0, 0};
  int64_t bytes = 0;
};

struct TransferPlan {
  KvLayout src;  // tp_rank ignored: the plan covers every rank
  KvLayout dst;
  std::vector<TransferSlice> slices;  // by src_rank, then dst_rank

  // The slices source rank `rank` sends.
  std::vector<TransferSlice> FromRank(int32_t rank) const;
  // The slices destination rank `rank` receives.
  std::vector<TransferSlice> ToRank(int32_t rank) const;
};

// INVALID_ARGUMENT when the layouts differ in anything but the TP fields,
// or a TP size does not divide the KV heads.
absl::StatusOr<TransferPlan> MakeTransferPlan(const KvLayout& src,
                                              const KvLayout& dst);

}  // namespace duet::kv_transfer

#endif  // DUET_KV_TRANSFER_TRANSFER_PLAN_H_
