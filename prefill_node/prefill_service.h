// duet.v1.Node as served by a prefill node: a thin gRPC adapter over
// PrefillEngine (Prefill, Stats; the decode-side RPCs are UNIMPLEMENTED).
#ifndef DUET_PREFILL_NODE_PREFILL_SERVICE_H_
#define DUET_PREFILL_NODE_PREFILL_SERVICE_H_

#include "duet/v1/node.grpc.pb.h"
#include "prefill_node/prefill_engine.h"

namespace duet::prefill_node {

class PrefillService final : public v1::Node::Service {
 public:
  explicit PrefillService(PrefillEngine* engine) : engine_(engine) {}

  grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req,
                       v1::PrefillResponse* reply) override;
  grpc::Status Reserve(grpc::ServerContext* ctx, const v1::ReserveRequest* req,
                       v1::ReserveResponse* reply) override;
  grpc::Status Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                      grpc::ServerWriter<v1::DecodeResponse>* writer) override;
  grpc::Status Release(grpc::ServerContext* ctx, const v1::ReleaseRequest* req,
                       v1::ReleaseResponse* reply) override;
  grpc::Status Stats(grpc::ServerContext* ctx, const v1::StatsRequest* req,
                     v1::StatsResponse* reply) override;

  v1::NodeLoad Load();

 private:
  PrefillEngine* engine_;
};

}  // namespace duet::prefill_node

#endif  // DUET_PREFILL_NODE_PREFILL_SERVICE_H_
