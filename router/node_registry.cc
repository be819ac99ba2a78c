#include "router/node_registry.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/logging.h"

namespace duet::router {

NodeRegistry::NodeRegistry(
    absl::Duration heartbeat_interval, absl::Duration node_timeout,
    std::shared_ptr<grpc::ChannelCredentials> credentials)
    : credentials_(credentials != nullptr ? std::move(credentials)
                                          : grpc::InsecureChannelCredentials()),
      heartbeat_interval_(heartbeat_interval),
      node_timeout_(node_timeout) {}

std::shared_ptr<v1::Node::Stub> NodeRegistry::StubFor(
    const std::string& address) {
  auto it = stubs_.find(address);
  if (it != stubs_.end()) return it->second;
  auto stub = std::shared_ptr<v1::Node::Stub>(
      v1::Node::NewStub(grpc::CreateChannel(address, credentials_)));
  stubs_.emplace(address, stub);
  return stub;
}

absl::StatusOr<uint64_t> NodeRegistry::Register(
    const v1::RegisterRequest& req) {
  if (req.role() != v1::NODE_ROLE_PREFILL &&
      req.role() != v1::NODE_ROLE_DECODE &&
      req.role() != v1::NODE_ROLE_COLOCATED) {
    return absl::InvalidArgumentError(
        "Register: role must be PREFILL, DECODE or COLOCATED");
  }
  if (req.address().empty() || req.address().rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Register: address '", req.address(), "' is not host:port"));
  }
  if (req.kv_layout().num_layers() == 0 || req.max_model_len() == 0) {
    return absl::InvalidArgumentError(
        "Register: kv_layout and max_model_len are required");
  }
  absl::MutexLock lock(&mu_);
  SweepLocked();
  // One model per cluster: the first node (or --model-name) fixes the
  // model and the KV layout; a node serving another is refused, so it can
  // neither receive requests it would answer wrongly nor take KV it would
  // misread.
  const std::string model = ModelBaseName(req.model_name());
  if (!pinned_model_.has_value()) {
    pinned_model_ = expected_model_.empty() ? model : expected_model_;
  }
  if (model != *pinned_model_) {
    return absl::FailedPreconditionError(
        absl::StrCat("Register: this cluster serves model '", *pinned_model_,
                     "', the node serves '", model, "'"));
  }
  v1::KvLayout layout = req.kv_layout();
  layout.clear_tp_rank();
  layout.clear_tp_size();
  if (!pinned_layout_.has_value()) pinned_layout_ = layout;
  if (layout.SerializeAsString() != pinned_layout_->SerializeAsString()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Register: the node's KV layout {", layout.ShortDebugString(),
        "} differs from the cluster's {", pinned_layout_->ShortDebugString(),
        "}"));
  }
  for (auto it = nodes_.begin(); it != nodes_.end(); ++it) {
    if (it->second.info.address() == req.address()) {
      DUET_LOG(INFO) << "node at " << req.address() << " re-registered";
      nodes_.erase(it);
      break;
    }
  }
  const uint64_t id = next_id_++;
  Node node;
  node.id = id;
  node.info = req;
  node.load.set_total_kv_blocks(req.total_kv_blocks());
  node.load.set_free_kv_blocks(req.total_kv_blocks());
  node.last_heartbeat = absl::Now();
  // Calls still in flight on the old channel keep it (shared_ptr).
  stubs_.erase(req.address());
  node.stub = StubFor(req.address());
  nodes_.emplace(id, std::move(node));
  DUET_LOG(INFO) << "registered " << v1::NodeRole_Name(req.role()) << " node "
                 << id << " at " << req.address();
  return id;
}

absl::StatusOr<bool> NodeRegistry::Heartbeat(uint64_t id,
                                             const v1::NodeLoad& load) {
  absl::MutexLock lock(&mu_);
  SweepLocked();
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return false;
  // A load that cannot be true would steer placement (a node claiming a
  // huge free pool draws every request).
  if (load.total_kv_blocks() != it->second.info.total_kv_blocks() ||
      load.free_kv_blocks() > load.total_kv_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Heartbeat: ", load.free_kv_blocks(), " free of ",
        load.total_kv_blocks(), " KV blocks, but the node registered ",
        it->second.info.total_kv_blocks()));
  }
  it->second.load = load;
  it->second.last_heartbeat = absl::Now();
  return true;
}

int64_t NodeRegistry::Recent(
    std::vector<std::pair<absl::Time, int64_t>>& adjustments) {
  const absl::Time horizon = absl::Now() - 2 * heartbeat_interval_;
  std::erase_if(adjustments, [&](const auto& a) { return a.first < horizon; });
  int64_t sum = 0;
  for (const auto& a : adjustments) sum += a.second;
  return sum;
}

void NodeRegistry::SweepLocked() {
  const absl::Time now = absl::Now();
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    if (now - it->second.last_heartbeat > node_timeout_) {
      DUET_LOG(WARNING) << "node " << it->first << " at "
                        << it->second.info.address() << " missed heartbeats "
                        << "for " << absl::FormatDuration(node_timeout_)
                        << "; taken out of rotation";
      nodes_.erase(it++);
    } else {
      ++it;
    }
  }
}

absl::flat_hash_set<uint64_t> NodeRegistry::LiveNodeIds() {
  absl::MutexLock lock(&mu_);
  SweepLocked();
  absl::flat_hash_set<uint64_t> ids;
  for (const auto& [id, n] : nodes_) ids.insert(id);
  return ids;
}

NodeRef NodeRegistry::MakeRef(uint64_t id, const Node& n) {
  NodeRef r;
  r.id = id;
  r.address = n.info.address();
  r.layout = n.info.kv_layout();
  r.stub = n.stub;
  for (int t : n.info.kv_transports()) {
    r.kv_transports.push_back(static_cast<v1::KvTransport>(t));
  }
  r.host_id = n.info.host_id();
  r.total_kv_blocks = n.info.total_kv_blocks();
  r.free_kv_blocks = n.load.free_kv_blocks();
  r.queued_prefill_tokens =
      static_cast<int64_t>(n.load.queued_prefill_tokens());
  return r;
}

std::string ModelBaseName(absl::string_view model) {
  while (absl::ConsumeSuffix(&model, "/")) {
  }
  const size_t slash = model.rfind('/');
  return std::string(
      slash == absl::string_view::npos ? model : model.substr(slash + 1));
}

std::optional<v1::KvTransport> PickKvTransport(const NodeRef& p,
                                               const NodeRef& d) {
  auto offers = [](const NodeRef& n, v1::KvTransport t) {
    if (n.kv_transports.empty()) return t == v1::KV_TRANSPORT_UCX;
    return std::find(n.kv_transports.begin(), n.kv_transports.end(), t) !=
           n.kv_transports.end();
  };
  const bool same_host =
      p.host_id.empty() || d.host_id.empty() || p.host_id == d.host_id;
  // CUDA IPC and NCCL copy whole blocks: nodes of different
  // tensor-parallel sizes exchange head slices, which UCX moves.
  const bool same_tp =
      std::max(p.layout.tp_size(), 1u) == std::max(d.layout.tp_size(), 1u);
  if (same_host && same_tp && offers(p, v1::KV_TRANSPORT_CUDA_IPC) &&
      offers(d, v1::KV_TRANSPORT_CUDA_IPC)) {
    return v1::KV_TRANSPORT_CUDA_IPC;
  }
  // NCCL moves whole blocks too (packed per message), on any host.
  if (same_tp && offers(p, v1::KV_TRANSPORT_NCCL) &&
      offers(d, v1::KV_TRANSPORT_NCCL)) {
    return v1::KV_TRANSPORT_NCCL;
  }
  if (offers(p, v1::KV_TRANSPORT_UCX) && offers(d, v1::KV_TRANSPORT_UCX)) {
    return v1::KV_TRANSPORT_UCX;
  }
  return std::nullopt;
}

std::vector<NodeRef> NodeRegistry::DecodeCandidates(bool colocated_only) {
  absl::MutexLock lock(&mu_);
  SweepLocked();
  std::vector<std::pair<int64_t, NodeRef>> scored;
  for (auto& [id, n] : nodes_) {
    // A colocated node is a decode node too.
    const v1::NodeRole role = n.info.role();
    if (role != v1::NODE_ROLE_COLOCATED &&
        (colocated_only || role != v1::NODE_ROLE_DECODE)) {
      continue;
    }
    const int64_t free =
        int64_t{n.load.free_kv_blocks()} - Recent(n.reserved_recently);
    NodeRef ref = MakeRef(id, n);
    ref.free_kv_blocks = free;
    scored.push_back({free, std::move(ref)});
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& a, const auto& b) {
                     return a.first > b.first ||
                            (a.first == b.first && a.second.id < b.second.id);
                   });
  std::vector<NodeRef> out;
  for (auto& [score, ref] : scored) out.push_back(std::move(ref));
  return out;
}

std::vector<NodeRef> NodeRegistry::PrefillCandidates() {
  absl::MutexLock lock(&mu_);
  SweepLocked();
  std::vector<std::pair<int64_t, NodeRef>> scored;
  for (auto& [id, n] : nodes_) {
    if (n.info.role() != v1::NODE_ROLE_PREFILL) continue;
    const int64_t queued =
        static_cast<int64_t>(n.load.queued_prefill_tokens()) +
        Recent(n.prefill_recently);
    NodeRef ref = MakeRef(id, n);
    ref.queued_prefill_tokens = queued;
    scored.push_back({queued, std::move(ref)});
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& a, const auto& b) {
                     return a.first < b.first ||
                            (a.first == b.first && a.second.id < b.second.id);
                   });
  std::vector<NodeRef> out;
  for (auto& [score, ref] : scored) out.push_back(std::move(ref));
  return out;
}

void NodeRegistry::AddReservedBlocks(uint64_t id, int64_t blocks) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(id);
  if (it != nodes_.end()) {
    it->second.reserved_recently.emplace_back(absl::Now(), blocks);
  }
}

void NodeRegistry::AddPrefillTokens(uint64_t id, int64_t tokens) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(id);
  if (it != nodes_.end()) {
    it->second.prefill_recently.emplace_back(absl::Now(), tokens);
  }
}

int64_t NodeRegistry::QueuedPrefillTokens(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return 0;
  return static_cast<int64_t>(it->second.load.queued_prefill_tokens()) +
         Recent(it->second.prefill_recently);
}

int32_t NodeRegistry::BlockSize() {
  absl::MutexLock lock(&mu_);
  return pinned_layout_.has_value()
             ? std::max<int32_t>(
                   1, static_cast<int32_t>(pinned_layout_->block_size()))
             : 1;
}

int32_t NodeRegistry::MaxModelLen() {
  absl::MutexLock lock(&mu_);
  SweepLocked();
  int32_t len = 0;
  for (const auto& [id, n] : nodes_) {
    const int32_t l = static_cast<int32_t>(n.info.max_model_len());
    len = len == 0 ? l : std::min(len, l);
  }
  return len;
}

int32_t NodeRegistry::CountLive(v1::NodeRole role) {
  absl::MutexLock lock(&mu_);
  SweepLocked();
  int32_t count = 0;
  for (const auto& [id, n] : nodes_) count += n.info.role() == role;
  return count;
}

std::vector<v1::NodeInfo> NodeRegistry::List(v1::NodeRole role) {
  absl::MutexLock lock(&mu_);
  SweepLocked();
  std::vector<v1::NodeInfo> out;
  const absl::Time now = absl::Now();
  for (const auto& [id, n] : nodes_) {
    if (role != v1::NODE_ROLE_UNSPECIFIED && n.info.role() != role) continue;
    v1::NodeInfo info;
    info.set_node_id(id);
    info.set_role(n.info.role());
    info.set_address(n.info.address());
    info.set_model_name(n.info.model_name());
    *info.mutable_kv_layout() = n.info.kv_layout();
    *info.mutable_load() = n.load;
    info.set_ms_since_heartbeat(static_cast<uint64_t>(
        absl::ToInt64Milliseconds(now - n.last_heartbeat)));
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.node_id() < b.node_id();
  });
  return out;
}

}  // namespace duet::router
