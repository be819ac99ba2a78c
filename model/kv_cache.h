// Paged KV cache bookkeeping (pure CPU, no device memory): the block pool with
// allocate / free / refcount, and per-sequence block tables. The device
// memory of the pools lives in KvCacheStorage, owned by the model runner.
#ifndef DUET_MODEL_KV_CACHE_H_
#define DUET_MODEL_KV_CACHE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/strong_id.h"
#include "common/tensor.h"
#include "kernels/backend.h"

namespace duet::model {

// Number of blocks that hold `num_tokens` tokens.
int32_t BlocksForTokens(int64_t num_tokens, int32_t block_size);

// Fixed pool of `num_blocks` block ids. Allocation is all-or-nothing; a block
// returns to the free list when its refcount drops to zero (refcounts > 1 are
// for shared prefixes). Not thread-safe: owners serialize access.
class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(refcount_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }

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
  std::vector<int32_t> refcount_;
  std::vector<BlockId> free_;  // LIFO: recently freed blocks are reused first
};

// Per-layer KV pools in backend memory, each [num_blocks][2][num_kv_heads]
// [block_size][head_dim] in the backend's activation dtype.
class KvCacheStorage {
 public:
  static absl::StatusOr<KvCacheStorage> Create(kernels::Backend& backend,
                                               int32_t num_layers,
                                               const kernels::AttentionShape&
                                                   shape);
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
