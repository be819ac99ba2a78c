#include "decode_node/decode_service.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "serving/convert.h"
#include "serving/kv_channel_rpc.h"

namespace duet::decode_node {
namespace {

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kStopToken:
      return v1::FINISH_REASON_STOP_TOKEN;
    case FinishReason::kMaxTokens:
      return v1::FINISH_REASON_MAX_TOKENS;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace

grpc::Status DecodeService::Reserve(grpc::ServerContext* ctx,
                                    const v1::ReserveRequest* req,
                                    v1::ReserveResponse* reply) {
  auto layout = serving::FromProto(req->expected_layout());
  if (!layout.ok()) return serving::ToGrpc(layout.status());
  auto transport = serving::FromProto(req->kv_transport());
  if (!transport.ok()) return serving::ToGrpc(transport.status());
  // Taken before the engine's clock starts, so Describe stops answering no
  // later than the engine frees the blocks.
  const absl::Time reserved_at = absl::Now();
  auto desc = engine_->Reserve(
      req->request_id(), static_cast<int32_t>(req->num_prompt_tokens()),
      static_cast<int32_t>(req->max_new_tokens()), *layout,
      absl::Milliseconds(req->reservation_ttl_ms()), *transport,
      std::span<const int32_t>(req->prompt_token_ids().data(),
                               req->prompt_token_ids().size()));
  if (!desc.ok()) return serving::ToGrpc(desc.status());
  reply->set_reserved_blocks(static_cast<uint32_t>(desc->block_ids.size()));
  reply->set_cached_blocks(static_cast<uint32_t>(desc->first_block));
  absl::MutexLock lock(&mu_);
  std::string secret(16, '\0');
  for (size_t i = 0; i < secret.size(); i += 4) {
    const uint32_t r = random_();
    std::memcpy(secret.data() + i, &r, 4);
  }
  const absl::Time now = absl::Now();
  absl::erase_if(tokens_,
                 [&](const auto& e) { return e.second.expires < now; });
  // The engine keeps a reservation at most its TTL (capped); the token is
  // kept a little longer so a Decode right at the end still finds it.
  const absl::Duration ttl =
      engine_->ReservationTtl(absl::Milliseconds(req->reservation_ttl_ms()));
  tokens_[req->request_id()] =
      Token{secret, now + ttl + absl::Minutes(1), serving::ToProto(*desc),
            reserved_at + ttl};
  reply->set_reservation_token(std::move(secret));
  return grpc::Status::OK;
}

grpc::Status DecodeService::CheckToken(uint64_t request_id,
                                       const std::string& token, bool consume,
                                       v1::KvTransferDescriptor* kv) {
  absl::MutexLock lock(&mu_);
  auto it = tokens_.find(request_id);
  if (it == tokens_.end()) {
    if (kv != nullptr) {
      return grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrCat("request ", request_id,
                       " has no live reservation on this decode node (it "
                       "expired, ended, or was never made)"));
    }
    // Unknown, expired or already ended: the engine gives the precise
    // status (FAILED_PRECONDITION / not released).
    return grpc::Status::OK;
  }
  const std::string& want = it->second.secret;
  unsigned diff = want.size() == token.size() ? 0u : 1u;
  for (size_t i = 0; i < want.size(); ++i) {
    diff |= static_cast<unsigned char>(want[i]) ^
            static_cast<unsigned char>(i < token.size() ? token[i] : 0);
  }
  if (diff != 0) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat("request ", request_id,
                                     ": the reservation token does not match "
                                     "(only the router that reserved it may "
                                     "start or release it)"));
  }
  if (kv != nullptr) {
    // Past its TTL the engine may have handed the blocks to another
    // request: never describe them then.
    if (absl::Now() >= it->second.reservation_expires) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("request ", request_id,
                                       ": the reservation has expired"));
    }
    *kv = it->second.kv;
  }
  if (consume) tokens_.erase(it);
  return grpc::Status::OK;
}

grpc::Status DecodeService::Describe(grpc::ServerContext*,
                                     const v1::DescribeRequest* req,
                                     v1::DescribeResponse* reply) {
  return CheckToken(req->request_id(), req->reservation_token(),
                    /*consume=*/false, reply->mutable_kv_transfer());
}

grpc::Status DecodeService::OpenKvChannel(grpc::ServerContext*,
                                          const v1::OpenKvChannelRequest* req,
                                          v1::OpenKvChannelResponse* reply) {
  return serving::ServeOpenKvChannel(kv_channels_, *req, reply);
}

grpc::Status DecodeService::PushKv(grpc::ServerContext* ctx,
                                   const v1::PushKvRequest* req,
                                   v1::PushKvResponse*) {
  return serving::ServePushKv(kv_channels_, *ctx, *req);
}

grpc::Status DecodeService::Prefill(grpc::ServerContext*,
                                    const v1::PrefillRequest*,
                                    v1::PrefillResponse*) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      "this is a decode node; send Prefill to a prefill node");
}

grpc::Status DecodeService::Decode(
    grpc::ServerContext* ctx, const v1::DecodeRequest* req,
    grpc::ServerWriter<v1::DecodeResponse>* writer) {
  if (grpc::Status s =
          CheckToken(req->request_id(), req->reservation_token(), true);
      !s.ok()) {
    return s;
  }
  auto params = serving::FromProto(req->sampling());
  if (!params.ok()) return serving::ToGrpc(params.status());
  auto stream =
      engine_->StartDecode(req->request_id(),
                           std::vector<int32_t>(req->prompt_token_ids().begin(),
                                                req->prompt_token_ids().end()),
                           req->first_token(), *params);
  if (!stream.ok()) return serving::ToGrpc(stream.status());
  return StreamTokens(*ctx, req->request_id(), req->deadline_ms(),
                      /*sent_before=*/1, **stream, writer);
}

grpc::Status DecodeService::Generate(
    grpc::ServerContext* ctx, const v1::NodeGenerateRequest* req,
    grpc::ServerWriter<v1::DecodeResponse>* writer) {
  auto params = serving::FromProto(req->sampling());
  if (!params.ok()) return serving::ToGrpc(params.status());
  auto stream = engine_->StartColocated(
      req->request_id(),
      std::vector<int32_t>(req->prompt_token_ids().begin(),
                           req->prompt_token_ids().end()),
      *params);
  if (!stream.ok()) return serving::ToGrpc(stream.status());
  return StreamTokens(*ctx, req->request_id(), req->deadline_ms(),
                      /*sent_before=*/0, **stream, writer);
}

grpc::Status DecodeService::StreamTokens(
    grpc::ServerContext& ctx, uint64_t request_id, uint32_t deadline_ms,
    int32_t sent_before, DecodeStream& stream,
    grpc::ServerWriter<v1::DecodeResponse>* writer) {
  const absl::Time deadline =
      deadline_ms > 0 ? absl::Now() + absl::Milliseconds(deadline_ms)
                      : absl::InfiniteFuture();
  int32_t completion_tokens = sent_before;
  while (true) {
    // Short waits so a client that went away or a passed deadline is
    // noticed within 50 ms even while no token is produced.
    DecodeStream::Update u = stream.Next(absl::Milliseconds(50));
    if (ctx.IsCancelled()) {
      stream.Cancel();
      return grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled");
    }
    if (absl::Now() > deadline) {
      stream.Cancel();
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          absl::StrCat("request ", request_id,
                                       " passed its deadline on this node"));
    }
    if (!u.tokens.empty()) {
      completion_tokens += static_cast<int32_t>(u.tokens.size());
      v1::DecodeResponse msg;
      msg.mutable_chunk()->mutable_token_ids()->Add(u.tokens.begin(),
                                                    u.tokens.end());
      for (const kernels::TokenLogprobs& l : u.logprobs) {
        *msg.mutable_chunk()->add_logprobs() = serving::ToProto(l);
      }
      if (u.prefill_ms >= 0) {
        msg.mutable_timings()->set_queue_ms(u.queue_ms);
        msg.mutable_timings()->set_prefill_ms(u.prefill_ms);
      }
      if (!writer->Write(msg)) {
        stream.Cancel();
        return grpc::Status(grpc::StatusCode::CANCELLED,
                            "stream closed by the router");
      }
    }
    if (u.done) {
      if (!u.error.ok()) return serving::ToGrpc(u.error);
      v1::DecodeResponse msg;
      v1::GenerationFinished* fin = msg.mutable_finished();
      fin->set_finish_reason(ToProto(u.finish_reason));
      fin->mutable_usage()->set_completion_tokens(completion_tokens);
      fin->mutable_usage()->set_cached_prompt_tokens(
          static_cast<uint32_t>(u.cached_prompt_tokens));
      fin->mutable_timings()->set_decode_ms(u.decode_ms);
      if (completion_tokens > 1) {
        fin->mutable_timings()->set_mean_itl_ms(u.decode_ms /
                                                (completion_tokens - 1));
      }
      writer->Write(msg);
      return grpc::Status::OK;
    }
  }
}

grpc::Status DecodeService::Release(grpc::ServerContext*,
                                    const v1::ReleaseRequest* req,
                                    v1::ReleaseResponse* reply) {
  if (grpc::Status s =
          CheckToken(req->request_id(), req->reservation_token(), true);
      !s.ok()) {
    return s;
  }
  reply->set_released(engine_->Release(req->request_id()));
  return grpc::Status::OK;
}

v1::NodeLoad DecodeService::Load() {
  const DecodeLoad l = engine_->Load();
  v1::NodeLoad load;
  load.set_free_kv_blocks(l.free_blocks);
  load.set_total_kv_blocks(l.total_blocks);
  load.set_running_requests(l.running + l.waiting);
  const runtime::LoopLoad loop = engine_->loop_load();
  load.set_prefix_cache_query_tokens(
      static_cast<uint64_t>(loop.prefix_cache_queries));
  load.set_prefix_cache_hit_tokens(
      static_cast<uint64_t>(loop.prefix_cache_hits));
  return load;
}

grpc::Status DecodeService::Stats(grpc::ServerContext*, const v1::StatsRequest*,
                                  v1::StatsResponse* reply) {
  *reply->mutable_load() = Load();
  *reply->mutable_layout() = serving::ToProto(engine_->layout());
  return grpc::Status::OK;
}

}  // namespace duet::decode_node
