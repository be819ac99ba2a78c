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

}  // namespace duet::kv_transfer
