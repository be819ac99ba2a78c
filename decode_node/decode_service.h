// duet.v1.Node as served by a decode node: a thin gRPC adapter over
// DecodeEngine (Reserve, Decode stream, Release, Stats).
#ifndef DUET_DECODE_NODE_DECODE_SERVICE_H_
#define DUET_DECODE_NODE_DECODE_SERVICE_H_

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "decode_node/decode_engine.h"
#include "duet/v1/node.grpc.pb.h"
#include "kv_transfer/kv_channel.h"

namespace duet::decode_node {

class DecodeService final : public v1::Node::Service {
 public:
  // `kv_channels`: each rank's NCCL channel face (serving::MakeNodeKvReceiver
  // fills them with --kv-transport nccl; empty otherwise), owned by the
  // engine's receiver.
  explicit DecodeService(
      DecodeEngine* engine,
      std::vector<kv_transfer::KvChannelServer*> kv_channels = {})
      : engine_(engine), kv_channels_(std::move(kv_channels)) {}

  grpc::Status Reserve(grpc::ServerContext* ctx, const v1::ReserveRequest* req,
                       v1::ReserveResponse* reply) override;
  grpc::Status Describe(grpc::ServerContext* ctx,
                        const v1::DescribeRequest* req,
                        v1::DescribeResponse* reply) override;
  grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req,
                       v1::PrefillResponse* reply) override;
  grpc::Status Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                      grpc::ServerWriter<v1::DecodeResponse>* writer) override;
  grpc::Status Release(grpc::ServerContext* ctx, const v1::ReleaseRequest* req,
                       v1::ReleaseResponse* reply) override;
  grpc::Status Stats(grpc::ServerContext* ctx, const v1::StatsRequest* req,
                     v1::StatsResponse* reply) override;
  grpc::Status OpenKvChannel(grpc::ServerContext* ctx,
                             const v1::OpenKvChannelRequest* req,
                             v1::OpenKvChannelResponse* reply) override;
  grpc::Status PushKv(grpc::ServerContext* ctx, const v1::PushKvRequest* req,
                      v1::PushKvResponse* reply) override;
  grpc::Status Generate(
      grpc::ServerContext* ctx, const v1::NodeGenerateRequest* req,
      grpc::ServerWriter<v1::DecodeResponse>* writer) override;

  v1::NodeLoad Load();

 private:
  // UNAUTHENTICATED unless `token` is the reservation's; `consume` forgets
  // it. An unknown request passes (the engine gives the precise status)
  // unless `kv` is set: then it is FAILED_PRECONDITION, and on success the
  // reservation's descriptor is copied into `kv`.
  grpc::Status CheckToken(uint64_t request_id, const std::string& token,
                          bool consume, v1::KvTransferDescriptor* kv = nullptr);

  // Relays `stream` to `writer` until it ends, the caller goes away or
  // `deadline_ms` (0: none) passes (Decode and Generate). `sent_before`:
  // tokens the caller already has (Decode: token 1, which the router sent
  // from the PrefillResponse), counted in the usage.
  grpc::Status StreamTokens(grpc::ServerContext& ctx, uint64_t request_id,
                            uint32_t deadline_ms, int32_t sent_before,
                            DecodeStream& stream,
                            grpc::ServerWriter<v1::DecodeResponse>* writer);

  DecodeEngine* engine_;
  const std::vector<kv_transfer::KvChannelServer*> kv_channels_;
  // Tokens of live reservations (Reserve -> Decode or Release). Entries
  // of reservations that expired unused are dropped after the longest TTL.
  struct Token {
    std::string secret;
    absl::Time expires;
    v1::KvTransferDescriptor kv;     // what Describe answers
    absl::Time reservation_expires;  // the engine frees the blocks then
  };
  absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Token> tokens_ ABSL_GUARDED_BY(mu_);
  std::random_device random_ ABSL_GUARDED_BY(mu_);
};

}  // namespace duet::decode_node

#endif  // DUET_DECODE_NODE_DECODE_SERVICE_H_
