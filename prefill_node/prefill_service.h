// duet.v1.Node as served by a prefill node: a thin gRPC adapter over
// PrefillEngine (Prefill, Stats; the decode-side RPCs are UNIMPLEMENTED).
// Before a prompt runs, Prefill asks the decode node named in the request
// where to write (Describe, with the reservation's token): the KV
// destination never comes from the caller.
#ifndef DUET_PREFILL_NODE_PREFILL_SERVICE_H_
#define DUET_PREFILL_NODE_PREFILL_SERVICE_H_

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "duet/v1/node.grpc.pb.h"
#include "grpcpp/security/credentials.h"
#include "prefill_node/prefill_engine.h"

namespace duet::prefill_node {

class PrefillService final : public v1::Node::Service {
 public:
  // `peer_credentials`: how to reach decode nodes (the cluster's member
  // certificate under TLS).
  PrefillService(PrefillEngine* engine,
                 std::shared_ptr<grpc::ChannelCredentials> peer_credentials,
                 absl::Duration describe_timeout = absl::Seconds(5))
      : engine_(engine),
        peer_credentials_(std::move(peer_credentials)),
        describe_timeout_(describe_timeout) {}

  grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req,
                       v1::PrefillResponse* reply) override;
  grpc::Status Reserve(grpc::ServerContext* ctx, const v1::ReserveRequest* req,
                       v1::ReserveResponse* reply) override;
  grpc::Status Describe(grpc::ServerContext* ctx,
                        const v1::DescribeRequest* req,
                        v1::DescribeResponse* reply) override;
  grpc::Status OpenKvChannel(grpc::ServerContext* ctx,
                             const v1::OpenKvChannelRequest* req,
                             v1::OpenKvChannelResponse* reply) override;
  grpc::Status PushKv(grpc::ServerContext* ctx, const v1::PushKvRequest* req,
                      v1::PushKvResponse* reply) override;
  grpc::Status Generate(
      grpc::ServerContext* ctx, const v1::NodeGenerateRequest* req,
      grpc::ServerWriter<v1::DecodeResponse>* writer) override;
  grpc::Status Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                      grpc::ServerWriter<v1::DecodeResponse>* writer) override;
  grpc::Status Release(grpc::ServerContext* ctx, const v1::ReleaseRequest* req,
                       v1::ReleaseResponse* reply) override;
  grpc::Status Stats(grpc::ServerContext* ctx, const v1::StatsRequest* req,
                     v1::StatsResponse* reply) override;

  v1::NodeLoad Load();

 private:
  struct PendingDescribe;
  // INVALID_ARGUMENT without a well-formed decode node address and token.
  static grpc::Status CheckDecodeAddress(const v1::PrefillRequest& req);
  // Asks the decode node that holds the reservation where `job`'s KV goes
  // (its KV descriptor), without waiting: the answer, or why there is
  // none, goes to the job.
  std::shared_ptr<PendingDescribe> StartDescribe(
      const v1::PrefillRequest& req, absl::Time deadline,
      std::shared_ptr<PrefillJob> job);
  // Describe's outcome as a checked descriptor.
  static absl::StatusOr<kv_transfer::KvDescriptor> ToDestination(
      const grpc::Status& s, const v1::DescribeResponse& reply,
      const std::string& address, absl::Time deadline);
  v1::Node::Stub* DecodeNode(const std::string& address);

  PrefillEngine* engine_;
  std::shared_ptr<grpc::ChannelCredentials> peer_credentials_;
  absl::Duration describe_timeout_;
  absl::Mutex mu_;
  // One channel per decode node, kept: gRPC reconnects it as needed.
  absl::flat_hash_map<std::string, std::unique_ptr<v1::Node::Stub>> peers_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace duet::prefill_node

#endif  // DUET_PREFILL_NODE_PREFILL_SERVICE_H_
