// The router's view of the cluster: registered nodes, their last reported
// load, and liveness from heartbeats. A node whose heartbeat is older than
// node_timeout is dropped from rotation and forgotten; its next heartbeat is
// answered "unknown" and it registers again. The router also adjusts the
// reported load by what it has itself sent recently (reserved blocks,
// prefill tokens), so a burst of requests spreads over nodes instead of
// piling onto the one that looked emptiest a heartbeat ago. An adjustment
// lives for two heartbeat intervals rather than until the next heartbeat:
// a heartbeat may have been measured before the work it would reflect
// reached the node, and resetting on it made a busy node look empty again.
#ifndef DUET_ROUTER_NODE_REGISTRY_H_
#define DUET_ROUTER_NODE_REGISTRY_H_

#include <grpcpp/security/credentials.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "duet/v1/client.pb.h"
#include "duet/v1/node.grpc.pb.h"
#include "duet/v1/registry.pb.h"

namespace duet::router {

struct NodeRef {
  uint64_t id = 0;
  std::string address;
  v1::KvLayout layout;
  std::shared_ptr<v1::Node::Stub> stub;
  // As registered (empty: UCX only).
  std::vector<v1::KvTransport> kv_transports;
  std::string host_id;
  // Load when the candidates were listed, with the router's own recent
  // placements: prompt tokens queued for prefill (prefill nodes) and free
  // KV blocks (decode and colocated nodes), of total_kv_blocks.
  int64_t queued_prefill_tokens = 0;
  int64_t free_kv_blocks = 0;
  int64_t total_kv_blocks = 0;
  // Prompt tokens of the request being placed that the router expects the
  // node to hold in its prefix cache (set by prefix-aware placement).
  int64_t expected_cached_tokens = 0;
};

// "/models/Qwen3-4B/" -> "Qwen3-4B": what nodes of one cluster must agree
// on (the path to the checkpoint may differ between hosts).
std::string ModelBaseName(absl::string_view model);

// The KV transport for prefill node `p` writing into decode node `d`:
// CUDA IPC when both offer it, share a host (a node that registered no
// host is taken at its word) and have the same tensor-parallel size, else
// UCX when both offer it; nullopt when they have none in common.
std::optional<v1::KvTransport> PickKvTransport(const NodeRef& p,
                                               const NodeRef& d);

class NodeRegistry {
 public:
  // `credentials`: of the channels to nodes (null: plaintext, tests).
  NodeRegistry(absl::Duration heartbeat_interval, absl::Duration node_timeout,
               std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

  absl::Duration heartbeat_interval() const { return heartbeat_interval_; }

  // Registers (or re-registers: same address replaces the old entry) a node.
  // The node gets a new channel: the one to its previous process at that
  // address may sit in connect backoff, which would fail its first
  // requests for reasons of the past.
  // InvalidArgument for a bad role, address or layout.
  absl::StatusOr<uint64_t> Register(const v1::RegisterRequest& req);
  // false when the node is unknown (never registered, or timed out);
  // InvalidArgument for a load that contradicts the registration.
  absl::StatusOr<bool> Heartbeat(uint64_t id, const v1::NodeLoad& load);
  // Nodes must serve this model (the last component of their --model);
  // empty: the first node to register decides.
  void set_expected_model(std::string model) {
    expected_model_ = std::move(model);
  }

  // Live decode nodes, most free KV blocks first.
  // `colocated_only`: only the nodes that also run whole requests.
  std::vector<NodeRef> DecodeCandidates(bool colocated_only = false);
  // Live prefill nodes, fewest outstanding prefill tokens first.
  std::vector<NodeRef> PrefillCandidates();
  // Bookkeeping between heartbeats.
  void AddReservedBlocks(uint64_t id, int64_t blocks);
  void AddPrefillTokens(uint64_t id, int64_t tokens);
  // Prompt tokens a prefill node holds unprefilled, by its last heartbeat
  // plus what was sent to it since (0 for an unknown node).
  int64_t QueuedPrefillTokens(uint64_t id);

  // Ids of the live nodes (sweeping out those past their heartbeat
  // timeout first).
  absl::flat_hash_set<uint64_t> LiveNodeIds();

  // The KV block size every node of the cluster has (the pinned layout's;
  // 1 before any node registered, so prefix hashing always has a size).
  int32_t BlockSize();
  // Smallest max_model_len over live nodes (0 when none).
  int32_t MaxModelLen();
  int32_t CountLive(v1::NodeRole role);
  std::vector<v1::NodeInfo> List(v1::NodeRole role);

 private:
  struct Node {
    uint64_t id = 0;
    v1::RegisterRequest info;
    v1::NodeLoad load;
    absl::Time last_heartbeat;
    // (when, amount) of recent router-side adjustments.
    std::vector<std::pair<absl::Time, int64_t>> reserved_recently;
    std::vector<std::pair<absl::Time, int64_t>> prefill_recently;
    std::shared_ptr<v1::Node::Stub> stub;
  };
  static NodeRef MakeRef(uint64_t id, const Node& n);
  void SweepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sum of the adjustments younger than two heartbeat intervals (older ones
  // are dropped).
  int64_t Recent(std::vector<std::pair<absl::Time, int64_t>>& adjustments)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<v1::Node::Stub> StubFor(const std::string& address)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::string expected_model_;
  std::optional<std::string> pinned_model_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::KvLayout> pinned_layout_ ABSL_GUARDED_BY(mu_);
  const absl::Duration heartbeat_interval_;
  const absl::Duration node_timeout_;
  absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, Node> nodes_ ABSL_GUARDED_BY(mu_);
  // Channels are reused per peer address across re-registrations.
  absl::flat_hash_map<std::string, std::shared_ptr<v1::Node::Stub>> stubs_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace duet::router

#endif  // DUET_ROUTER_NODE_REGISTRY_H_
