#include "model/kv_cache.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace duet::model {

int32_t BlocksForTokens(int64_t num_tokens, int32_t block_size) {
  return static_cast<int32_t>((num_tokens + block_size - 1) / block_size);
}

BlockPool::BlockPool(int32_t num_blocks)
    : refcount_(num_blocks, 0), meta_(num_blocks) {
  free_.reserve(num_blocks);
  // Push in reverse so the first allocation hands out block 0, 1, 2, ...
  for (int32_t i = num_blocks - 1; i >= 0; --i) free_.push_back(BlockId(i));
}

absl::StatusOr<std::vector<BlockId>> BlockPool::Allocate(int32_t n) {
  if (n < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot allocate ", n, " blocks"));
  }
  if (n > num_free()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache full: need ", n, " blocks, ", num_free(), " of ",
                     num_blocks(), " free"));
  }
  while (static_cast<int32_t>(free_.size()) < n) Evict();
  std::vector<BlockId> out;
  out.reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    BlockId id = free_.back();
    free_.pop_back();
    refcount_[id.value()] = 1;
    out.push_back(id);
  }
  return out;
}

absl::Status BlockPool::AddRef(BlockId id) {
  if (RefCount(id) <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "AddRef on block ", id.value(), " which is not allocated"));
  }
  ++refcount_[id.value()];
  return absl::OkStatus();
}

absl::Status BlockPool::Free(std::span<const BlockId> ids) {
  absl::flat_hash_map<int32_t, int32_t> drops;
  for (BlockId id : ids) {
    const int32_t rc = RefCount(id);
    if (rc < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Free: block ", id.value(), " is outside the pool [0, ",
                       num_blocks(), ")"));
    }
    if (++drops[id.value()] > rc) {
      return absl::FailedPreconditionError(
          absl::StrCat("Free: block ", id.value(),
                       " freed more times than it is referenced (", rc, ")"));
    }
  }
  for (BlockId id : ids) {
    if (--refcount_[id.value()] > 0) continue;
    Meta& m = meta_[id.value()];
    if (m.uid != 0) {
      // Cached: idle until a sequence takes it again or it is evicted.
      m.idle_at = idle_.insert(idle_.end(), id);
    } else {
      free_.push_back(id);
    }
  }
  return absl::OkStatus();
}

void BlockPool::Evict() {
  // Only called with free_ short and idle_ holding the difference.
  const BlockId id = idle_.front();
  idle_.pop_front();
  Meta& m = meta_[id.value()];
  index_.erase(m.key);
  m = Meta{};
  free_.push_back(id);
  ++evictions_;
}

std::optional<CachedBlock> BlockPool::Acquire(uint64_t parent_uid,
                                              std::span<const int32_t> tokens) {
  auto it = index_.find(
      Key{parent_uid, std::vector<int32_t>(tokens.begin(), tokens.end())});
  if (it == index_.end()) return std::nullopt;
  const BlockId id = it->second.id;
  if (refcount_[id.value()]++ == 0) idle_.erase(meta_[id.value()].idle_at);
  return it->second;
}

absl::StatusOr<uint64_t> BlockPool::Register(BlockId id, uint64_t parent_uid,
                                             std::span<const int32_t> tokens) {
  if (RefCount(id) <= 0 || meta_[id.value()].uid != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Register: block ", id.value(), " is not allocated or already cached"));
  }
  Key key{parent_uid, std::vector<int32_t>(tokens.begin(), tokens.end())};
  auto [it, inserted] = index_.try_emplace(key, CachedBlock{id, next_uid_});
  if (!inserted) return it->second.uid;
  Meta& m = meta_[id.value()];
  m.uid = next_uid_++;
  m.key = std::move(key);
  return m.uid;
}

int32_t BlockPool::RefCount(BlockId id) const {
  if (id.value() < 0 || id.value() >= num_blocks()) return -1;
  return refcount_[id.value()];
}

absl::StatusOr<KvCacheStorage> KvCacheStorage::Create(
    kernels::Backend& backend, int32_t num_layers,
    const kernels::AttentionShape& s) {
  if (num_layers <= 0 || s.num_blocks <= 0 || s.block_size <= 0) {
    return absl::InvalidArgumentError(
        "KV cache needs positive num_layers, num_blocks and block_size");
  }
  KvCacheStorage storage;
  const Shape shape = {s.num_blocks, 2, s.num_kv_heads, s.block_size,
                       s.head_dim};
  for (int32_t l = 0; l < num_layers; ++l) {
    DUET_ASSIGN_OR_RETURN(kernels::Tensor t,
                          backend.Allocate(backend.activation_dtype(), shape));
    storage.layers_.push_back(std::move(t));
  }
  storage.bytes_per_block_ =
      static_cast<int64_t>(num_layers) * 2 * s.num_kv_heads * s.block_size *
      s.head_dim * static_cast<int64_t>(DTypeSize(backend.activation_dtype()));
  return storage;
}

}  // namespace duet::model
