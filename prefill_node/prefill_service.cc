#include "prefill_node/prefill_service.h"

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "serving/convert.h"
#include "serving/server_util.h"

namespace duet::prefill_node {
namespace {

grpc::Status NotHere(const char* rpc) {
  return grpc::Status(
      grpc::StatusCode::UNIMPLEMENTED,
      absl::StrCat("this is a prefill node; send ", rpc, " to a decode node"));
}

}  // namespace

v1::Node::Stub* PrefillService::DecodeNode(const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<v1::Node::Stub>& stub = peers_[address];
  if (stub == nullptr) {
    stub = v1::Node::NewStub(grpc::CreateChannel(address, peer_credentials_));
  }
  return stub.get();
}

// One Describe call in flight, owned by the callback and the handler that
// waits for it.
struct PrefillService::PendingDescribe {
  grpc::ClientContext ctx;
  v1::DescribeRequest req;
  v1::DescribeResponse reply;
  absl::Notification done;
};

grpc::Status PrefillService::CheckDecodeAddress(const v1::PrefillRequest& req) {
  const std::string& address = req.decode_node_address();
  if (address.empty() || req.reservation_token().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "Prefill needs decode_node_address and "
                        "reservation_token (from the decode node's Reserve)");
  }
  if (absl::Status s = serving::ValidateHostPort(address, false); !s.ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("decode_node_address: ", s.message()));
  }
  return grpc::Status::OK;
}

std::shared_ptr<PrefillService::PendingDescribe> PrefillService::StartDescribe(
    const v1::PrefillRequest& req, absl::Time deadline,
    std::shared_ptr<PrefillJob> job) {
  auto d = std::make_shared<PendingDescribe>();
  d->req.set_request_id(req.request_id());
  d->req.set_reservation_token(req.reservation_token());
  d->ctx.set_deadline(
      absl::ToChronoTime(std::min(deadline, absl::Now() + describe_timeout_)));
  const std::string address = req.decode_node_address();
  DecodeNode(address)->async()->Describe(
      &d->ctx, &d->req, &d->reply,
      [this, d, job = std::move(job), address, deadline](grpc::Status s) {
        engine_->SetDestination(*job,
                                ToDestination(s, d->reply, address, deadline));
        d->done.Notify();
      });
  return d;
}

absl::StatusOr<kv_transfer::KvDescriptor> PrefillService::ToDestination(
    const grpc::Status& s, const v1::DescribeResponse& reply,
    const std::string& address, absl::Time deadline) {
  if (!s.ok()) {
    // The decode node's verdict on the reservation stands; a transport
    // failure is the decode node being unreachable.
    grpc::StatusCode code = s.error_code();
    if (code == grpc::StatusCode::DEADLINE_EXCEEDED && absl::Now() < deadline) {
      code = grpc::StatusCode::UNAVAILABLE;
    }
    return absl::Status(static_cast<absl::StatusCode>(code),
                        absl::StrCat("decode node ", address,
                                     ": Describe: ", s.error_message()));
  }
  // Still checked: a member's answer is validated like any peer's.
  auto dest = serving::FromProto(reply.kv_transfer());
  if (!dest.ok()) {
    return absl::Status(dest.status().code(),
                        absl::StrCat("decode node ", address,
                                     ": Describe: ", dest.status().message()));
  }
  // NCCL messages' headers go to the node that described the blocks, never
  // to an address from the wire.
  dest->control_address = address;
  for (kv_transfer::KvDescriptor& r : dest->ranks) r.control_address = address;
  return dest;
}

grpc::Status PrefillService::Prefill(grpc::ServerContext* ctx,
                                     const v1::PrefillRequest* req,
                                     v1::PrefillResponse* reply) {
  auto params = serving::FromProto(req->sampling());
  if (!params.ok()) return serving::ToGrpc(params.status());
  absl::Time deadline = absl::FromChrono(ctx->deadline());
  if (req->deadline_ms() > 0) {
    deadline = std::min(deadline,
                        absl::Now() + absl::Milliseconds(req->deadline_ms()));
  }
  if (grpc::Status s = CheckDecodeAddress(*req); !s.ok()) return s;
  // The prompt runs while the decode node says where its KV goes
  // (Describe): that round trip is off the time to first token. Its KV
  // waits in the sender for the answer; a refusal fails the request.
  auto job = engine_->SubmitPending(
      req->request_id(),
      std::vector<int32_t>(req->prompt_token_ids().begin(),
                           req->prompt_token_ids().end()),
      *params, deadline);
  if (!job.ok()) return serving::ToGrpc(job.status());
  std::shared_ptr<PendingDescribe> describe =
      StartDescribe(*req, deadline, *job);
  // The callback uses the engine: it must have run before the handler
  // returns (and the server, then the engine, may go away).
  absl::Cleanup wait_describe = [&describe] {
    if (!describe->done.HasBeenNotified()) describe->ctx.TryCancel();
    describe->done.WaitForNotification();
  };
  while (true) {
    // Poll so a cancelled caller frees the job's blocks promptly.
    auto result = (*job)->Wait(absl::Milliseconds(50));
    if (result.has_value()) {
      if (!result->ok()) return serving::ToGrpc(result->status());
      reply->set_first_token((*result)->first_token);
      reply->set_cached_prompt_tokens(
          static_cast<uint32_t>((*result)->cached_tokens));
      if ((*result)->first_logprobs.has_value()) {
        *reply->mutable_first_token_logprobs() =
            serving::ToProto(*(*result)->first_logprobs);
      }
      v1::Timings* t = reply->mutable_timings();
      t->set_queue_ms((*result)->queue_ms);
      t->set_prefill_ms((*result)->prefill_ms);
      t->set_transfer_ms((*result)->transfer_ms);
      return grpc::Status::OK;
    }
    if (ctx->IsCancelled()) {
      (*job)->Cancel();
      // No KV may start moving after this returns (the router frees the
      // reservation): unless Describe answered already, its answer is
      // void.
      (*job)->SetDestination(absl::CancelledError("prefill cancelled"));
      return grpc::Status(grpc::StatusCode::CANCELLED, "prefill cancelled");
    }
  }
}

grpc::Status PrefillService::OpenKvChannel(grpc::ServerContext*,
                                           const v1::OpenKvChannelRequest*,
                                           v1::OpenKvChannelResponse*) {
  return NotHere("OpenKvChannel");
}

grpc::Status PrefillService::PushKv(grpc::ServerContext*,
                                    const v1::PushKvRequest*,
                                    v1::PushKvResponse*) {
  return NotHere("PushKv");
}

grpc::Status PrefillService::Generate(grpc::ServerContext*,
                                      const v1::NodeGenerateRequest*,
                                      grpc::ServerWriter<v1::DecodeResponse>*) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      "this is a prefill node; send Generate to a colocated "
                      "node (duet-decode --role colocated)");
}

grpc::Status PrefillService::Describe(grpc::ServerContext*,
                                      const v1::DescribeRequest*,
                                      v1::DescribeResponse*) {
  return NotHere("Describe");
}

grpc::Status PrefillService::Reserve(grpc::ServerContext*,
                                     const v1::ReserveRequest*,
                                     v1::ReserveResponse*) {
  return NotHere("Reserve");
}

grpc::Status PrefillService::Decode(grpc::ServerContext*,
                                    const v1::DecodeRequest*,
                                    grpc::ServerWriter<v1::DecodeResponse>*) {
  return NotHere("Decode");
}

grpc::Status PrefillService::Release(grpc::ServerContext*,
                                     const v1::ReleaseRequest*,
                                     v1::ReleaseResponse*) {
  return NotHere("Release");
}

v1::NodeLoad PrefillService::Load() {
  v1::NodeLoad load;
  load.set_queued_prefill_tokens(engine_->queued_tokens());
  load.set_free_kv_blocks(engine_->free_blocks());
  load.set_total_kv_blocks(engine_->total_blocks());
  load.set_running_requests(engine_->active_requests());
  const runtime::LoopLoad loop = engine_->loop_load();
  load.set_prefix_cache_query_tokens(
      static_cast<uint64_t>(loop.prefix_cache_queries));
  load.set_prefix_cache_hit_tokens(
      static_cast<uint64_t>(loop.prefix_cache_hits));
  return load;
}

grpc::Status PrefillService::Stats(grpc::ServerContext*,
                                   const v1::StatsRequest*,
                                   v1::StatsResponse* reply) {
  *reply->mutable_load() = Load();
  *reply->mutable_layout() = serving::ToProto(engine_->layout());
  return grpc::Status::OK;
}

}  // namespace duet::prefill_node
