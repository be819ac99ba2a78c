#include "serving/kv_channel_rpc.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "serving/convert.h"

namespace duet::serving {
namespace {

// Pushes wait for the bytes, so they live as long as a transfer may;
// Open only makes an id.
constexpr absl::Duration kOpenTimeout = absl::Seconds(10);
constexpr absl::Duration kMaxPushTime = absl::Minutes(2);

absl::Status Rpc(const grpc::Status& s, const kv_transfer::KvDescriptor& dest,
                 const char* what) {
  if (s.ok()) return absl::OkStatus();
  const absl::Status st = FromGrpc(s);
  return absl::Status(
      st.code(), absl::StrCat("decode node ", dest.control_address, ": ", what,
                              ": ", st.message()));
}

grpc::Status Bad(std::string message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(message));
}

absl::StatusOr<kv_transfer::KvChannelServer*> RankServer(
    const std::vector<kv_transfer::KvChannelServer*>& ranks, uint32_t rank) {
  if (ranks.empty()) {
    return absl::FailedPreconditionError(
        "this decode node does not receive KV over NCCL "
        "(--kv-transport nccl)");
  }
  if (rank >= ranks.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode_rank ", rank, " outside this node's ",
                     ranks.size(), " tensor-parallel ranks"));
  }
  return ranks[rank];
}

}  // namespace

v1::Node::Stub* GrpcKvChannelClient::Stub(const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<v1::Node::Stub>& stub = stubs_[address];
  if (stub == nullptr) {
    stub = v1::Node::NewStub(grpc::CreateChannel(address, credentials_));
  }
  return stub.get();
}

absl::StatusOr<kv_transfer::KvChannelGrant> GrpcKvChannelClient::Open(
    const kv_transfer::KvDescriptor& dest, int32_t sender_rank,
    absl::Time deadline) {
  v1::OpenKvChannelRequest req;
  req.set_decode_rank(static_cast<uint32_t>(dest.layout.tp_rank));
  req.set_prefill_rank(static_cast<uint32_t>(sender_rank));
  v1::OpenKvChannelResponse reply;
  grpc::ClientContext ctx;
  ctx.set_deadline(
      absl::ToChronoTime(std::min(deadline, absl::Now() + kOpenTimeout)));
  DUET_RETURN_IF_ERROR(
      Rpc(Stub(dest.control_address)->OpenKvChannel(&ctx, req, &reply), dest,
          "OpenKvChannel"));
  // The id goes to NCCL as is: its size is checked there too, and here
  // before anything else reads it (docs/SECURITY.md).
  if (reply.nccl_unique_id().size() != 128 || reply.max_message_bytes() <= 0) {
    return absl::UnavailableError(absl::StrCat(
        "decode node ", dest.control_address,
        ": OpenKvChannel answered an id of ", reply.nccl_unique_id().size(),
        " bytes (128 expected) or no message size"));
  }
  return kv_transfer::KvChannelGrant{reply.channel_id(), reply.nccl_unique_id(),
                                     reply.max_message_bytes()};
}

absl::Status GrpcKvChannelClient::Push(const kv_transfer::KvDescriptor& dest,
                                       const kv_transfer::KvChannelPush& push,
                                       absl::Time deadline) {
  v1::PushKvRequest req;
  req.set_decode_rank(static_cast<uint32_t>(dest.layout.tp_rank));
  req.set_channel_id(push.channel_id);
  req.set_seq(push.seq);
  req.set_secret(push.secret);
  req.mutable_logical_blocks()->Add(push.logical_blocks.begin(),
                                    push.logical_blocks.end());
  req.set_layer_begin(static_cast<uint32_t>(push.layer_begin));
  req.set_layer_end(static_cast<uint32_t>(push.layer_end));
  req.set_bytes(push.bytes);
  v1::PushKvResponse reply;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(deadline));
  return Rpc(Stub(dest.control_address)->PushKv(&ctx, req, &reply), dest,
             "PushKv");
}

grpc::Status ServeOpenKvChannel(
    const std::vector<kv_transfer::KvChannelServer*>& ranks,
    const v1::OpenKvChannelRequest& req, v1::OpenKvChannelResponse* reply) {
  auto server = RankServer(ranks, req.decode_rank());
  if (!server.ok()) return ToGrpc(server.status());
  if (req.prefill_rank() > (1u << 20)) {
    return Bad(
        absl::StrCat("prefill_rank ", req.prefill_rank(), " out of range"));
  }
  auto grant = (*server)->Open(static_cast<int32_t>(req.prefill_rank()));
  if (!grant.ok()) return ToGrpc(grant.status());
  reply->set_channel_id(grant->channel_id);
  reply->set_nccl_unique_id(grant->communicator_id);
  reply->set_max_message_bytes(grant->max_message_bytes);
  return grpc::Status::OK;
}

grpc::Status ServePushKv(
    const std::vector<kv_transfer::KvChannelServer*>& ranks,
    const grpc::ServerContext& ctx, const v1::PushKvRequest& req) {
  auto server = RankServer(ranks, req.decode_rank());
  if (!server.ok()) return ToGrpc(server.status());
  if (req.secret().size() != kv_transfer::kKvChannelSecretBytes) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat("PushKv needs the request's ",
                                     kv_transfer::kKvChannelSecretBytes,
                                     "-byte secret from its KV descriptor"));
  }
  if (req.logical_blocks_size() == 0 ||
      req.logical_blocks_size() > kv_transfer::kMaxBlocksPerPush ||
      req.layer_end() > (1u << 20) || req.bytes() <= 0) {
    return Bad(absl::StrCat("PushKv: ", req.logical_blocks_size(),
                            " blocks, layer_end ", req.layer_end(), ", ",
                            req.bytes(), " bytes: out of range"));
  }
  kv_transfer::KvChannelPush push;
  push.channel_id = req.channel_id();
  push.seq = req.seq();
  push.secret = req.secret();
  push.logical_blocks.assign(req.logical_blocks().begin(),
                             req.logical_blocks().end());
  push.layer_begin = static_cast<int32_t>(req.layer_begin());
  push.layer_end = static_cast<int32_t>(req.layer_end());
  push.bytes = req.bytes();
  // A caller without a deadline still gets one: nothing waits unbounded.
  const absl::Time deadline =
      std::min(absl::FromChrono(ctx.deadline()), absl::Now() + kMaxPushTime);
  return ToGrpc((*server)->Push(push, deadline));
}

}  // namespace duet::serving
