#include "prefill_node/prefill_service.h"

#include "absl/strings/str_cat.h"
#include "serving/convert.h"

namespace duet::prefill_node {
namespace {

grpc::Status NotHere(const char* rpc) {
  return grpc::Status(
      grpc::StatusCode::UNIMPLEMENTED,
      absl::StrCat("this is a prefill node; send ", rpc, " to a decode node"));
}

}  // namespace

grpc::Status PrefillService::Prefill(grpc::ServerContext* ctx,
                                     const v1::PrefillRequest* req,
                                     v1::PrefillResponse* reply) {
  auto params = serving::FromProto(req->sampling());
  if (!params.ok()) return serving::ToGrpc(params.status());
  auto dest = serving::FromProto(req->destination());
  if (!dest.ok()) return serving::ToGrpc(dest.status());
  absl::Time deadline = absl::FromChrono(ctx->deadline());
  if (req->deadline_ms() > 0) {
    deadline = std::min(deadline,
                        absl::Now() + absl::Milliseconds(req->deadline_ms()));
  }
  auto job =
      engine_->Submit(req->request_id(),
                      std::vector<int32_t>(req->prompt_token_ids().begin(),
                                           req->prompt_token_ids().end()),
                      *params, std::move(*dest), deadline);
  if (!job.ok()) return serving::ToGrpc(job.status());
  while (true) {
    // Poll so a cancelled caller frees the job's blocks promptly.
    auto result = (*job)->Wait(absl::Milliseconds(50));
    if (result.has_value()) {
      if (!result->ok()) return serving::ToGrpc(result->status());
      reply->set_first_token((*result)->first_token);
      v1::Timings* t = reply->mutable_timings();
      t->set_queue_ms((*result)->queue_ms);
      t->set_prefill_ms((*result)->prefill_ms);
      t->set_transfer_ms((*result)->transfer_ms);
      return grpc::Status::OK;
    }
    if (ctx->IsCancelled()) {
      (*job)->Cancel();
      return grpc::Status(grpc::StatusCode::CANCELLED, "prefill cancelled");
    }
  }
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
