// The KV layout and pool memory of a node's cache, as kv_transfer sees them.
#ifndef DUET_SERVING_KV_POOL_H_
#define DUET_SERVING_KV_POOL_H_

#include "kv_transfer/kv_transfer.h"
#include "model/config.h"
#include "model/kv_cache.h"

namespace duet::serving {

// Layout of a TP=1 cache of `config`'s heads in blocks of `block_size`.
kv_transfer::KvLayout KvLayoutFor(const model::ModelConfig& config,
                                  int32_t block_size, DType dtype);

// Per-layer base pointers of `cache`.
kv_transfer::KvPoolView PoolViewOf(const model::KvCacheStorage& cache,
                                   const kv_transfer::KvLayout& layout,
                                   int32_t num_blocks);

}  // namespace duet::serving

#endif  // DUET_SERVING_KV_POOL_H_
