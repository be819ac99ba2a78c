// The router's record of which prompt prefixes each node's KV cache likely
// holds, for cache-aware routing (--routing prefix-aware). The router keeps
// it from what it sent where (the prompt's full blocks to the prefill node
// that computed them, prompt and output to the decode node that held them),
// bounded per node by the node's pool size and aged LRU, as the node's own
// cache is. It is a hint: a node's cache keys blocks by their exact tokens,
// so a stale or colliding entry here costs a miss, never wrong KV; that is
// why 64-bit hashes are enough.
#ifndef DUET_ROUTER_PREFIX_INDEX_H_
#define DUET_ROUTER_PREFIX_INDEX_H_

#include <cstdint>
#include <list>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "router/node_registry.h"

namespace duet::router {

// Chained hashes of the full blocks of `tokens`: entry i covers tokens
// [0, (i + 1) * block_size), so equal entries mean equal prefixes.
std::vector<uint64_t> PrefixBlockHashes(std::span<const int32_t> tokens,
                                        int32_t block_size);

class PrefixIndex {
 public:
  // How many leading entries of `hashes` node `node` holds (0 for an
  // unknown node).
  int32_t Match(uint64_t node, std::span<const uint64_t> hashes);
  // Records that `node` holds `hashes` (most recently used now); beyond
  // `capacity` blocks the least recently used are forgotten.
  void Record(uint64_t node, std::span<const uint64_t> hashes,
              int64_t capacity);
  // Forgets a node (gone, or restarted with an empty cache).
  void Forget(uint64_t node);
  // Forgets every node not in `live`.
  void Retain(const absl::flat_hash_set<uint64_t>& live);
  int64_t num_nodes();
  int64_t size(uint64_t node);

 private:
  struct NodeBlocks {
    std::list<uint64_t> lru;  // front: least recently used
    absl::flat_hash_map<uint64_t, std::list<uint64_t>::iterator> at;
  };
  absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, NodeBlocks> nodes_ ABSL_GUARDED_BY(mu_);
};

// --routing: how the router picks among nodes.
enum class RoutingMode {
  // Prefill: fewest queued prompt tokens; decode: most free KV blocks.
  kLeastLoaded,
  // The same loads, weighed against the work a cached prefix saves (below).
  kPrefixAware,
};
absl::StatusOr<RoutingMode> ParseRoutingMode(absl::string_view name);
const char* RoutingModeName(RoutingMode mode);

// Leading blocks of a prompt of `prompt_tokens` a node may reuse when it
// holds `matched` of them: never the block of the last prompt token, which
// is always computed (prefill) and always sent (decode).
int32_t UsableCachedBlocks(int32_t matched, int64_t prompt_tokens,
                           int32_t block_size);

// Orders prefill candidates by the prompt tokens each would compute before
// this request's first token: its queue plus the part of this prompt it
// does not hold. A node holding the prefix wins unless its queue is longer
// than what the prefix saves (then it is overloaded for this request).
// Ties keep the given (least-loaded) order. Returns the usable cached
// blocks of the first node.
int32_t OrderPrefillByPrefix(std::vector<NodeRef>& nodes, PrefixIndex& index,
                             std::span<const uint64_t> hashes,
                             int64_t prompt_tokens, int32_t block_size);
// Orders decode (or colocated) candidates by the free KV blocks each keeps
// after taking this request's prompt blocks it does not hold. Returns the
// usable cached blocks of the first node.
int32_t OrderDecodeByPrefix(std::vector<NodeRef>& nodes, PrefixIndex& index,
                            std::span<const uint64_t> hashes,
                            int64_t prompt_tokens, int32_t block_size);

}  // namespace duet::router

#endif  // DUET_ROUTER_PREFIX_INDEX_H_
