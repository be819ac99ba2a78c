#include "kv_transfer/transfer_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace duet::kv_transfer {

std::vector<TransferSlice> TransferPlan::FromRank(int32_t rank) const {
  std::vector<TransferSlice> out;
  for (const TransferSlice& s : slices) {
    if (s.src_rank == rank) out.push_back(s);
  }
  return out;
}

std::vector<TransferSlice> TransferPlan::ToRank(int32_t rank) const {
  std::vector<TransferSlice> out;
  for (const TransferSlice& s : slices) {
    if (s.dst_rank == rank) out.push_back(s);
  }
  return out;
}

absl::StatusOr<TransferPlan> MakeTransferPlan(const KvLayout& src,
                                              const KvLayout& dst) {
  KvLayout a = src, b = dst;
  a.tp_rank = b.tp_rank = 0;
  a.tp_size = b.tp_size = 1;
  if (!(a == b)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV layouts differ beyond tensor parallelism: ", KvLayoutString(src),
        " vs ", KvLayoutString(dst)));
  }
  const int32_t heads = src.num_kv_heads;
  for (const KvLayout* l : {&src, &dst}) {
    if (heads <= 0 || l->tp_size <= 0 || heads % l->tp_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor-parallel size ", l->tp_size, " does not divide the ", heads,
          " KV heads"));
    }
  }
  TransferPlan plan;
  plan.src = src;
  plan.dst = dst;
  const int32_t src_heads = heads / src.tp_size;  // per source rank
  const int32_t dst_heads = heads / dst.tp_size;
  const int64_t head_bytes = int64_t{src.block_size} * src.head_dim *
                             static_cast<int64_t>(DTypeSize(src.dtype));
  for (int32_t p = 0; p < src.tp_size; ++p) {
    const int32_t p_begin = p * src_heads;
    for (int32_t d = 0; d < dst.tp_size; ++d) {
      const int32_t d_begin = d * dst_heads;
      const int32_t lo = std::max(p_begin, d_begin);
      const int32_t hi = std::min(p_begin + src_heads, d_begin + dst_heads);
      if (lo >= hi) continue;
      TransferSlice s;
      s.src_rank = p;
      s.dst_rank = d;
      s.head_begin = lo;
      s.num_heads = hi - lo;
      s.bytes = s.num_heads * head_bytes;
      for (int kv = 0; kv < 2; ++kv) {
        s.src_offset[kv] = (kv * src_heads + (lo - p_begin)) * head_bytes;
        s.dst_offset[kv] = (kv * dst_heads + (lo - d_begin)) * head_bytes;
      }
      plan.slices.push_back(s);
    }
  }
  return plan;
}

}  // namespace duet::kv_transfer
