// duet.v1.Node as served by a decode node: a thin gRPC adapter over
// DecodeEngine (Reserve, Decode stream, Release, Stats).
#ifndef DUET_DECODE_NODE_DECODE_SERVICE_H_
#define DUET_DECODE_NODE_DECODE_SERVICE_H_

#include <string>

#include "decode_node/decode_engine.h"
#include "duet/v1/node.grpc.pb.h"

namespace duet::decode_node {

class DecodeService final : public v1::Node::Service {
 public:
  explicit DecodeService(DecodeEngine* engine) : engine_(engine) {}

  grpc::Status Reserve(grpc::ServerContext* ctx, const v1::ReserveRequest* req,
                       v1::ReserveResponse* reply) override;
  grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req,
                       v1::PrefillResponse* reply) override;
  grpc::Status Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                      grpc::ServerWriter<v1::DecodeResponse>* writer) override;
  grpc::Status Release(grpc::ServerContext* ctx, const v1::ReleaseRequest* req,
                       v1::ReleaseResponse* reply) override;
  grpc::Status Stats(grpc::ServerContext* ctx, const v1::StatsRequest* req,
                     v1::StatsResponse* reply) override;

  v1::NodeLoad Load();

 private:
  DecodeEngine* engine_;
};

}  // namespace duet::decode_node

#endif  // DUET_DECODE_NODE_DECODE_SERVICE_H_
