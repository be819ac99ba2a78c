#include "serving/kv_pool.h"

namespace duet::serving {

kv_transfer::KvLayout KvLayoutFor(const model::ModelConfig& c,
                                  int32_t block_size, DType dtype) {
  kv_transfer::KvLayout l;
  l.num_layers = c.num_layers;
  l.num_kv_heads = c.num_kv_heads;
  l.head_dim = c.head_dim;
  l.block_size = block_size;
  l.dtype = dtype;
  return l;
}

kv_transfer::KvPoolView PoolViewOf(const model::KvCacheStorage& cache,
                                   const kv_transfer::KvLayout& layout,
                                   int32_t num_blocks) {
  kv_transfer::KvPoolView view;
  view.layout = layout;
  view.num_blocks = num_blocks;
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    view.layer_base.push_back(cache.layer(l).data);
  }
  view.device = cache.layer(0).device;
  return view;
}

}  // namespace duet::serving
