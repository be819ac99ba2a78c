// KV transfer between tensor-parallel nodes: a node of TP size N holds one
// KV pool per rank, and each rank has its own sender or receiver over its
// pool. These wrappers make the N of them one KvSender / KvReceiver:
// - the receiver describes every rank's pool in one descriptor
//   (KvDescriptor::ranks) and lands, drops and discards on all ranks;
// - the sender follows one TransferPlan from its layout (TP N) to the
//   descriptor's (TP M): with N == M each rank sends its whole blocks to
//   the same rank, otherwise each rank sends the head slices it shares
//   with each receiving rank (KvSender::SendSlice).
#ifndef DUET_KV_TRANSFER_TENSOR_PARALLEL_H_
#define DUET_KV_TRANSFER_TENSOR_PARALLEL_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kv_transfer {

// `ranks[r]` sends from rank r's pool; `layout` is the node's (tp_size =
// ranks.size(); tp_rank ignored). INVALID_ARGUMENT for no ranks or a size
// that does not match.
absl::StatusOr<std::unique_ptr<KvSender>> MakeTensorParallelSender(
    std::vector<std::unique_ptr<KvSender>> ranks, const KvLayout& layout);

// `ranks[r]` receives into rank r's pool. One rank: that receiver as is.
absl::StatusOr<std::unique_ptr<KvReceiver>> MakeTensorParallelReceiver(
    std::vector<std::unique_ptr<KvReceiver>> ranks);

}  // namespace duet::kv_transfer

#endif  // DUET_KV_TRANSFER_TENSOR_PARALLEL_H_
