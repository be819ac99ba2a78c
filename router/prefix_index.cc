#include "router/prefix_index.h"

#include <algorithm>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"

namespace duet::router {

std::vector<uint64_t> PrefixBlockHashes(std::span<const int32_t> tokens,
                                        int32_t block_size) {
  std::vector<uint64_t> out;
  if (block_size <= 0) return out;
  uint64_t parent = 0;
  for (size_t end = static_cast<size_t>(block_size); end <= tokens.size();
       end += static_cast<size_t>(block_size)) {
    parent = absl::HashOf(
        parent, absl::MakeConstSpan(
                    tokens.data() + end - static_cast<size_t>(block_size),
                    static_cast<size_t>(block_size)));
    out.push_back(parent);
  }
  return out;
}

int32_t PrefixIndex::Match(uint64_t node, std::span<const uint64_t> hashes) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(node);
  if (it == nodes_.end()) return 0;
  int32_t n = 0;
  for (uint64_t h : hashes) {
    if (!it->second.at.contains(h)) break;
    ++n;
  }
  return n;
}

void PrefixIndex::Record(uint64_t node, std::span<const uint64_t> hashes,
                         int64_t capacity) {
  if (capacity <= 0) return;
  absl::MutexLock lock(&mu_);
  NodeBlocks& b = nodes_[node];
  // Leaves last: a prefix's first blocks are the most shared, so they are
  // touched last and evicted last.
  for (auto h = hashes.rbegin(); h != hashes.rend(); ++h) {
    auto [at, inserted] = b.at.try_emplace(*h);
    if (!inserted) b.lru.erase(at->second);
    at->second = b.lru.insert(b.lru.end(), *h);
  }
  while (static_cast<int64_t>(b.lru.size()) > capacity) {
    b.at.erase(b.lru.front());
    b.lru.pop_front();
  }
}

void PrefixIndex::Forget(uint64_t node) {
  absl::MutexLock lock(&mu_);
  nodes_.erase(node);
}

void PrefixIndex::Retain(const absl::flat_hash_set<uint64_t>& live) {
  absl::MutexLock lock(&mu_);
  absl::erase_if(nodes_,
                 [&](const auto& n) { return !live.contains(n.first); });
}

int64_t PrefixIndex::num_nodes() {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(nodes_.size());
}

int64_t PrefixIndex::size(uint64_t node) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(node);
  return it == nodes_.end() ? 0 : static_cast<int64_t>(it->second.lru.size());
}

absl::StatusOr<RoutingMode> ParseRoutingMode(absl::string_view name) {
  if (name == "prefix-aware") return RoutingMode::kPrefixAware;
  if (name == "least-loaded") return RoutingMode::kLeastLoaded;
  return absl::InvalidArgumentError(absl::StrCat(
      "--routing must be prefix-aware or least-loaded, got '", name, "'"));
}

const char* RoutingModeName(RoutingMode mode) {
  return mode == RoutingMode::kPrefixAware ? "prefix-aware" : "least-loaded";
}

int32_t UsableCachedBlocks(int32_t matched, int64_t prompt_tokens,
                           int32_t block_size) {
  if (block_size <= 0 || prompt_tokens <= 0) return 0;
  return static_cast<int32_t>(
      std::min<int64_t>(matched, (prompt_tokens - 1) / block_size));
}

namespace {

// Stable-sorts `nodes` by cost(node, usable cached blocks) ascending.
template <typename Cost>
int32_t OrderBy(std::vector<NodeRef>& nodes, PrefixIndex& index,
                std::span<const uint64_t> hashes, int64_t prompt_tokens,
                int32_t block_size, Cost cost) {
  std::vector<std::pair<int64_t, size_t>> keyed;
  std::vector<int32_t> usable;
  for (size_t i = 0; i < nodes.size(); ++i) {
    usable.push_back(UsableCachedBlocks(index.Match(nodes[i].id, hashes),
                                        prompt_tokens, block_size));
    keyed.push_back({cost(nodes[i], usable.back()), i});
  }
  std::stable_sort(
      keyed.begin(), keyed.end(),
      [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<NodeRef> ordered;
  for (const auto& k : keyed) ordered.push_back(std::move(nodes[k.second]));
  nodes = std::move(ordered);
  return keyed.empty() ? 0 : usable[keyed.front().second];
}

}  // namespace

int32_t OrderPrefillByPrefix(std::vector<NodeRef>& nodes, PrefixIndex& index,
                             std::span<const uint64_t> hashes,
                             int64_t prompt_tokens, int32_t block_size) {
  return OrderBy(nodes, index, hashes, prompt_tokens, block_size,
                 [&](const NodeRef& n, int32_t cached) {
                   return n.queued_prefill_tokens + prompt_tokens -
                          int64_t{cached} * block_size;
                 });
}

int32_t OrderDecodeByPrefix(std::vector<NodeRef>& nodes, PrefixIndex& index,
                            std::span<const uint64_t> hashes,
                            int64_t prompt_tokens, int32_t block_size) {
  const int64_t blocks = (prompt_tokens + block_size - 1) / block_size;
  return OrderBy(nodes, index, hashes, prompt_tokens, block_size,
                 [&](const NodeRef& n, int32_t cached) {
                   // Most free left first: the negated count.
                   return -(n.free_kv_blocks - (blocks - cached));
                 });
}

}  // namespace duet::router
