#include "kv_transfer/copy_plan.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace duet::kv_transfer::internal {

absl::Status ValidateLayout(const KvLayout& layout) {
  if (layout.num_layers <= 0 || layout.num_kv_heads <= 0 ||
      layout.head_dim <= 0 || layout.block_size <= 0 || layout.tp_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV layout needs positive sizes: ", KvLayoutString(layout)));
  }
  if (layout.num_kv_heads % layout.tp_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV layout: tp_size does not divide num_kv_heads: ",
                     KvLayoutString(layout)));
  }
  if (layout.tp_rank < 0 || layout.tp_rank >= layout.tp_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV layout: tp_rank out of range: ", KvLayoutString(layout)));
  }
  return absl::OkStatus();
}

absl::Status ValidatePool(const KvPoolView& pool, absl::string_view what) {
  if (absl::Status s = ValidateLayout(pool.layout); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", s.message()));
  }
  if (pool.num_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": num_blocks must be positive, got ", pool.num_blocks));
  }
  if (pool.layer_base.size() != static_cast<size_t>(pool.layout.num_layers)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", pool.layer_base.size(), " layer bases for ",
                     pool.layout.num_layers, " layers"));
  }
  for (size_t l = 0; l < pool.layer_base.size(); ++l) {
    if (pool.layer_base[l] == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": layer ", l, " has no base address"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<int32_t, int32_t>> ResolveLayers(
    const KvLayout& layout, LayerRange layers) {
  const int32_t end = std::min(layers.end, layout.num_layers);
  if (layers.begin < 0 || layers.begin >= end) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV send: layer range [", layers.begin, ", ", layers.end,
        ") is empty or outside the model's ", layout.num_layers, " layers"));
  }
  return std::make_pair(layers.begin, end);
}

kernels::KvBlockPool LayerSlice(kernels::KvBlockPool pool, int32_t begin,
                                int32_t end) {
  pool.layer_base = std::vector<void*>(pool.layer_base.begin() + begin,
                                       pool.layer_base.begin() + end);
  return pool;
}

absl::Status ValidateSend(const KvPoolView& local, const KvDescriptor& dest,
                          std::span<const BlockCopy> copies,
                          Transport transport) {
  if (dest.transport != transport) {
    return absl::InvalidArgumentError(absl::StrCat(
        "descriptor is for transport ", static_cast<int>(dest.transport),
        ", this sender is ", static_cast<int>(transport)));
  }
  if (absl::Status s = CheckSameLayout(local.layout, dest.layout); !s.ok()) {
    return s;
  }
  return ValidateSendIds(local, dest, copies);
}

absl::Status ValidateSliceSend(const KvPoolView& local,
                               const KvDescriptor& dest,
                               std::span<const BlockCopy> copies,
                               Transport transport,
                               const TransferSlice& slice) {
  if (dest.transport != transport) {
    return absl::InvalidArgumentError(absl::StrCat(
        "descriptor is for transport ", static_cast<int>(dest.transport),
        ", this sender is ", static_cast<int>(transport)));
  }
  absl::StatusOr<TransferPlan> plan = MakeTransferPlan(local.layout, dest.layout);
  if (!plan.ok()) return plan.status();
  // The slice must be the plan's for this pair of ranks: offsets and sizes
  // that come from anywhere else could reach past a block.
  bool found = false;
  for (const TransferSlice& s : plan->slices) {
    if (s.src_rank == local.layout.tp_rank &&
        s.dst_rank == dest.layout.tp_rank) {
      found = s.head_begin == slice.head_begin &&
              s.num_heads == slice.num_heads && s.bytes == slice.bytes &&
              s.src_offset[0] == slice.src_offset[0] &&
              s.src_offset[1] == slice.src_offset[1] &&
              s.dst_offset[0] == slice.dst_offset[0] &&
              s.dst_offset[1] == slice.dst_offset[1];
    }
  }
  if (!found) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV slice of heads [", slice.head_begin, ", ",
        slice.head_begin + slice.num_heads, ") is not what source rank ",
        local.layout.tp_rank, " sends destination rank ", dest.layout.tp_rank,
        " (", KvLayoutString(local.layout), " -> ",
        KvLayoutString(dest.layout), ")"));
  }
  return ValidateSendIds(local, dest, copies);
}

absl::Status ValidateSendIds(const KvPoolView& local, const KvDescriptor& dest,
                             std::span<const BlockCopy> copies) {
  if (dest.num_blocks <= 0 ||
      dest.block_ids.size() > static_cast<size_t>(dest.num_blocks)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "descriptor addresses ", dest.num_blocks, " blocks but lists ",
        dest.block_ids.size(), " block ids"));
  }
  for (size_t i = 0; i < dest.block_ids.size(); ++i) {
    if (dest.block_ids[i] < 0 || dest.block_ids[i] >= dest.num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("descriptor block_ids[", i, "] = ", dest.block_ids[i],
                       " outside the receiver's [0, ", dest.num_blocks, ")"));
    }
  }
  const int64_t num_logical = static_cast<int64_t>(dest.block_ids.size());
  std::vector<bool> seen(dest.block_ids.size(), false);
  for (size_t i = 0; i < copies.size(); ++i) {
    const BlockCopy& c = copies[i];
    if (c.logical_block < 0 || c.logical_block >= num_logical) {
      return absl::InvalidArgumentError(
          absl::StrCat("copy ", i, ": logical block ", c.logical_block,
                       " outside the descriptor's ", num_logical, " blocks"));
    }
    if (seen[static_cast<size_t>(c.logical_block)]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "copy ", i, ": logical block ", c.logical_block, " copied twice"));
    }
    seen[static_cast<size_t>(c.logical_block)] = true;
    if (c.src_block < 0 || c.src_block >= local.num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "copy ", i, ": source block ", c.src_block,
          " outside the local pool's ", local.num_blocks, " blocks"));
    }
  }
  // Two copies into one block would race (and a receiver never mints such
  // a descriptor). Sorting, not a bitmap: num_blocks comes from the wire.
  std::vector<int32_t> targets;
  targets.reserve(copies.size());
  for (const BlockCopy& c : copies) {
    targets.push_back(dest.block_ids[static_cast<size_t>(c.logical_block)]);
  }
  std::sort(targets.begin(), targets.end());
  if (auto dup = std::adjacent_find(targets.begin(), targets.end());
      dup != targets.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "destination block ", *dup, " is the target of two copies"));
  }
  return absl::OkStatus();
}

absl::Status ValidateDescribeIds(std::span<const int32_t> block_ids,
                                 int32_t num_blocks, absl::string_view what) {
  std::vector<bool> used(static_cast<size_t>(std::max(num_blocks, 0)), false);
  for (size_t i = 0; i < block_ids.size(); ++i) {
    const int32_t b = block_ids[i];
    if (b < 0 || b >= num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat("block_ids[", i, "] = ", b,
                                                     " outside ", what, " of ",
                                                     num_blocks, " blocks"));
    }
    if (used[static_cast<size_t>(b)]) {
      return absl::InvalidArgumentError(
          absl::StrCat("block ", b, " appears twice in block_ids"));
    }
    used[static_cast<size_t>(b)] = true;
  }
  return absl::OkStatus();
}

absl::Status DescribedKeys::Add(uint64_t key) {
  absl::MutexLock lock(&mu_);
  if (!keys_.insert(key).second) {
    return absl::AlreadyExistsError(
        absl::StrCat("KV key ", key, " is already described"));
  }
  return absl::OkStatus();
}

absl::Status DescribedKeys::Land(uint64_t key) {
  absl::MutexLock lock(&mu_);
  if (keys_.erase(key) == 0) {
    return absl::NotFoundError(absl::StrCat("KV key ", key,
                                            " was never described, or already "
                                            "landed or dropped"));
  }
  return absl::OkStatus();
}

void DescribedKeys::Drop(uint64_t key) {
  absl::MutexLock lock(&mu_);
  keys_.erase(key);
}

std::vector<CopyRun> PlanCopyRuns(const KvDescriptor& dest,
                                  std::span<const BlockCopy> copies) {
  std::vector<std::pair<int32_t, int32_t>> pairs;  // (src, dst)
  pairs.reserve(copies.size());
  for (const BlockCopy& c : copies) {
    pairs.emplace_back(c.src_block,
                       dest.block_ids[static_cast<size_t>(c.logical_block)]);
  }
  std::sort(pairs.begin(), pairs.end());
  std::vector<CopyRun> runs;
  for (const auto& [src, dst] : pairs) {
    if (!runs.empty()) {
      CopyRun& last = runs.back();
      if (src == last.src_block + last.num_blocks &&
          dst == last.dst_block + last.num_blocks) {
        ++last.num_blocks;
        continue;
      }
    }
    runs.push_back(CopyRun{src, dst, 1});
  }
  return runs;
}

}  // namespace duet::kv_transfer::internal
