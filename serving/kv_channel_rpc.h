// The NCCL KV transport's control plane over gRPC (kv_transfer/kv_channel.h):
// the prefill side's KvChannelClient (OpenKvChannel / PushKv on the decode
// node it was told to write to) and the decode side's handlers, which check
// every field before a KvChannelServer sees it.
#ifndef DUET_SERVING_KV_CHANNEL_RPC_H_
#define DUET_SERVING_KV_CHANNEL_RPC_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "duet/v1/node.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "kv_transfer/kv_channel.h"

namespace duet::serving {

// Reaches decode nodes at KvDescriptor::control_address with `credentials`
// (the cluster's member certificate). One gRPC channel per address, kept.
class GrpcKvChannelClient final : public kv_transfer::KvChannelClient {
 public:
  explicit GrpcKvChannelClient(
      std::shared_ptr<grpc::ChannelCredentials> credentials)
      : credentials_(std::move(credentials)) {}

  absl::StatusOr<kv_transfer::KvChannelGrant> Open(
      const kv_transfer::KvDescriptor& dest, int32_t sender_rank,
      absl::Time deadline) override;
  absl::Status Push(const kv_transfer::KvDescriptor& dest,
                    const kv_transfer::KvChannelPush& push,
                    absl::Time deadline) override;

 private:
  v1::Node::Stub* Stub(const std::string& address);

  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<v1::Node::Stub>> stubs_
      ABSL_GUARDED_BY(mu_);
};

// The decode node's handlers: `ranks[r]` serves rank r (empty: this node
// does not serve NCCL, FAILED_PRECONDITION).
grpc::Status ServeOpenKvChannel(
    const std::vector<kv_transfer::KvChannelServer*>& ranks,
    const v1::OpenKvChannelRequest& req, v1::OpenKvChannelResponse* reply);
grpc::Status ServePushKv(
    const std::vector<kv_transfer::KvChannelServer*>& ranks,
    const grpc::ServerContext& ctx, const v1::PushKvRequest& req);

}  // namespace duet::serving

#endif  // DUET_SERVING_KV_CHANNEL_RPC_H_
