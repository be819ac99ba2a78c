// Paged KV cache bookkeeping (pure CPU, no device memory): the block pool with
// allocate / free / refcount, and per-sequence block tables. The device
// memory of the pools lives in KvCacheStorage, owned by the model runner.
#ifndef DUET_MODEL_KV_CACHE_H_
#define DUET_MODEL_KV_CACHE_H_

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/strong_id.h"
#include "common/tensor.h"
#include "kernels/backend.h"

namespace duet::model {

// Number of blocks that hold `num_tokens` tokens.
int32_t BlocksForTokens(int64_t num_tokens, int32_t block_size);

// A cached block as the prefix cache hands it out: the block and the uid
// its children are keyed by.
struct CachedBlock {
  BlockId id;
  uint64_t uid = 0;
};
// The parent uid of a sequence's first block.
inline constexpr uint64_t kNoParentBlock = 0;

// Fixed pool of `num_blocks` block ids. Allocation is all-or-nothing; a block
// returns to the free list when its refcount drops to zero (refcounts > 1 are
// for shared prefixes). Not thread-safe: owners serialize access.
//
// Prefix caching: a full block whose KV is computed may be registered under
// its content, (parent's uid, its block_size token ids), so a later sequence
// with the same tokens from its start takes the block instead of computing
// it. The key holds the token ids themselves and the parent's uid (unique
// per registration, never reused), so a match is exact: equal tokens after
// an equal prefix, no hash collision can hand out wrong KV. A registered
// block no sequence holds stays cached ("idle") and counts as free; when
// the free list runs out, Allocate evicts idle blocks least recently used
// first. Children of an evicted block keep their entries but can no longer
// be reached (their parent's uid is gone) and age out the same way.
class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(refcount_.size()); }
  // Blocks Allocate can hand out: free ones and idle cached ones.
  int32_t num_free() const {
    return static_cast<int32_t>(free_.size() + idle_.size());
  }
  // Registered blocks, held or idle.
  int32_t num_cached() const { return static_cast<int32_t>(index_.size()); }
  int32_t num_idle_cached() const { return static_cast<int32_t>(idle_.size()); }
  int64_t num_evictions() const { return evictions_; }

  // The registered block holding `tokens` right after the block of uid
  // `parent_uid` (kNoParentBlock: a sequence's first block), with a
  // reference taken on it for the caller (an idle block leaves the
  // eviction order); nullopt when none is cached.
  std::optional<CachedBlock> Acquire(uint64_t parent_uid,
                                     std::span<const int32_t> tokens);
  // Registers allocated block `id`, whose KV holds `tokens` after the block
  // of uid `parent_uid`, and returns its uid. When an identical block is
  // registered already, `id` stays unregistered and that block's uid is
  // returned (its children are valid for `id`'s content too).
  // FAILED_PRECONDITION for a block that is not allocated or is registered.
  absl::StatusOr<uint64_t> Register(BlockId id, uint64_t parent_uid,
                                    std::span<const int32_t> tokens);

  // `n` fresh blocks with refcount 1, or RESOURCE_EXHAUSTED (nothing taken).
  absl::StatusOr<std::vector<BlockId>> Allocate(int32_t n);
  // Adds a reference to an allocated block.
  absl::Status AddRef(BlockId id);
  // Drops one reference from each block. Validates every id first (range,
  // allocated, not listed twice beyond its refcount): on error nothing is
  // freed.
  absl::Status Free(std::span<const BlockId> ids);
  // Current refcount (0 = free); -1 for an id outside the pool.
  int32_t RefCount(BlockId id) const;

 private:
  struct Key {
    uint64_t parent_uid = 0;
    std::vector<int32_t> tokens;
    friend bool operator==(const Key&, const Key&) = default;
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.parent_uid, k.tokens);
    }
  };
  struct Meta {
    uint64_t uid = 0;  // 0: not registered
    Key key;
    std::list<BlockId>::iterator idle_at;  // valid while idle
  };
  void Evict();

  std::vector<int32_t> refcount_;
  std::vector<BlockId> free_;  // LIFO: recently freed blocks are reused first
  std::vector<Meta> meta_;
  absl::flat_hash_map<Key, CachedBlock> index_;
  std::list<BlockId> idle_;  // registered, refcount 0; front = least recent
  uint64_t next_uid_ = 1;
  int64_t evictions_ = 0;
};

// Per-layer KV pools in backend memory, each [num_blocks][2][num_kv_heads]
// [block_size][head_dim] in the backend's activation dtype.
class KvCacheStorage {
 public:
  static absl::StatusOr<KvCacheStorage> Create(
      kernels::Backend& backend, int32_t num_layers,
      const kernels::AttentionShape& shape);
  const TensorView& layer(int32_t i) const { return layers_[i].view(); }
  int32_t num_layers() const { return static_cast<int32_t>(layers_.size()); }
  // Bytes of one block across all layers (K and V).
  int64_t bytes_per_block() const { return bytes_per_block_; }

 private:
  std::vector<kernels::Tensor> layers_;
  int64_t bytes_per_block_ = 0;
};

}  // namespace duet::model

#endif  // DUET_MODEL_KV_CACHE_H_
