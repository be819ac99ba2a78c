#include "kv_transfer/kv_transfer.h"

#include "absl/strings/str_cat.h"

namespace duet::kv_transfer {

int64_t KvLayout::block_bytes() const {
  // A malformed layout (tp_size <= 0) has no meaningful size; callers validate
  // layouts (ValidatePool) before they use this for pointer arithmetic.
  if (tp_size <= 0) return 0;
  return int64_t{2} * (num_kv_heads / tp_size) * block_size * head_dim *
         static_cast<int64_t>(DTypeSize(dtype));
}

std::string KvLayoutString(const KvLayout& layout) {
  return absl::StrCat(
      "{layers=", layout.num_layers, " kv_heads=", layout.num_kv_heads,
      " head_dim=", layout.head_dim, " block_size=", layout.block_size,
      " dtype=", DTypeName(layout.dtype), " tp=", layout.tp_rank, "/",
      layout.tp_size, "}");
}

absl::Status CheckSameLayout(const KvLayout& expected, const KvLayout& got) {
  if (expected == got) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("KV layout mismatch: expected ", KvLayoutString(expected),
                   ", got ", KvLayoutString(got)));
}

const char* TransportName(Transport transport) {
  switch (transport) {
    case Transport::kInProcess:
      return "in-process";
    case Transport::kUcx:
      return "ucx";
    case Transport::kCudaIpc:
      return "cuda-ipc";
    case Transport::kNccl:
      return "nccl";
  }
  return "unknown";
}

absl::StatusOr<KvDescriptor> KvReceiver::DescribeFor(
    Transport transport, uint64_t key, std::span<const int32_t> block_ids) {
  absl::StatusOr<KvDescriptor> d = Describe(key, block_ids);
  if (!d.ok() || d->transport == transport) return d;
  // Nothing can have been sent to it yet.
  Discard(key);
  return absl::InvalidArgumentError(absl::StrCat(
      "this decode node receives KV over ", TransportName(d->transport),
      ", not ", TransportName(transport)));
}

const KvDescriptor& DescriptorForRank(const KvDescriptor& d, int32_t rank) {
  return d.ranks.empty() ? d : d.ranks[static_cast<size_t>(rank)];
}

absl::Status KvSender::SendSlice(const KvDescriptor& dest,
                                 std::span<const BlockCopy>, LayerRange,
                                 const TransferSlice&,
                                 std::shared_ptr<const kernels::StreamMark>,
                                 absl::Duration) {
  return absl::FailedPreconditionError(absl::StrCat(
      "the ", TransportName(dest.transport),
      " KV transport moves whole blocks only: give the prefill and decode "
      "nodes the same --tensor-parallel-size, or use a transport that moves "
      "head slices (UCX between host pools, in-process)"));
}

}  // namespace duet::kv_transfer
