#include "router/router_service.h"

#include <grpcpp/grpcpp.h>

#include <cmath>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace duet::router {
namespace {

grpc::Status Error(grpc::StatusCode code, const std::string& msg) {
  return grpc::Status(code, msg);
}

void SetDeadline(grpc::ClientContext& ctx, absl::Time deadline) {
  ctx.set_deadline(absl::ToChronoTime(deadline));
}

uint32_t MsUntil(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return static_cast<uint32_t>(std::clamp<int64_t>(ms, 1, UINT32_MAX));
}

bool NodeUnreachable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE;
}

}  // namespace

// --- CancellationWatcher ----------------------------------------------------

CancellationWatcher::CancellationWatcher()
    : thread_([this] { Loop(); }) {}

CancellationWatcher::~CancellationWatcher() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void CancellationWatcher::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Milliseconds(10));
    for (Scope* scope : scopes_) {
      if (scope->cancelled_.load() || !scope->server_->IsCancelled()) continue;
      scope->cancelled_.store(true);
      absl::MutexLock scope_lock(&scope->mu_);
      if (scope->current_ != nullptr) scope->current_->TryCancel();
    }
  }
}

CancellationWatcher::Scope::Scope(CancellationWatcher* watcher,
                                  grpc::ServerContext* server)
    : watcher_(watcher), server_(server) {
  absl::MutexLock lock(&watcher_->mu_);
  watcher_->scopes_.insert(this);
}

CancellationWatcher::Scope::~Scope() {
  absl::MutexLock lock(&watcher_->mu_);
  watcher_->scopes_.erase(this);
}

void CancellationWatcher::Scope::SetCurrent(grpc::ClientContext* ctx) {
  absl::MutexLock lock(&mu_);
  current_ = ctx;
  if (ctx != nullptr && cancelled_.load()) ctx->TryCancel();
}

// --- RouterService ----------------------------------------------------------

RouterService::RouterService(NodeRegistry* registry,
                             const RouterOptions& options)
    : registry_(registry),
      options_(options),
      // Ids unique across router restarts (nodes may still hold old ones).
      next_request_id_(static_cast<uint64_t>(absl::ToUnixMicros(absl::Now()))
                       << 8) {}

grpc::Status RouterService::Validate(const v1::GenerateRequest& req) {
  const v1::SamplingParams& s = req.sampling();
  auto invalid = [](const std::string& msg) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT, msg);
  };
  if (req.prompt_token_ids().empty()) {
    return invalid("prompt_token_ids must hold at least one token");
  }
  for (int32_t id : req.prompt_token_ids()) {
    if (id < 0) {
      return invalid(absl::StrCat("prompt token id ", id, " is negative"));
    }
  }
  if (s.max_tokens() <= 0) {
    return invalid(absl::StrCat("sampling.max_tokens must be > 0, got ",
                                s.max_tokens()));
  }
  // 0 is proto3's "unset" and means 1.0 (documented in common.proto).
  if (std::isnan(s.top_p()) || s.top_p() < 0.0f || s.top_p() > 1.0f) {
    return invalid(absl::StrCat("sampling.top_p must be in (0, 1], got ",
                                s.top_p()));
  }
  if (!std::isfinite(s.temperature()) || s.temperature() < 0.0f) {
    return invalid(absl::StrCat(
        "sampling.temperature must be a finite number >= 0, got ",
        s.temperature()));
  }
  if (s.top_k() < 0) {
    return invalid(absl::StrCat("sampling.top_k must be >= 0, got ",
                                s.top_k()));
  }
  for (int32_t id : s.stop_token_ids()) {
    if (id < 0) return invalid("sampling.stop_token_ids must be >= 0");
  }
  const int32_t max_len = registry_->MaxModelLen();
  const int64_t total =
      int64_t{req.prompt_token_ids_size()} + s.max_tokens();
  if (max_len > 0 && total > max_len) {
    return invalid(absl::StrCat(
        "prompt (", req.prompt_token_ids_size(), " tokens) + max_tokens (",
        s.max_tokens(), ") exceeds the model context of ", max_len,
        " tokens"));
  }
  return grpc::Status::OK;
}

grpc::Status RouterService::ReserveDecode(uint64_t id,
                                          const v1::GenerateRequest& req,
                                          absl::Time deadline,
                                          CancellationWatcher::Scope& scope,
                                          Reservation* out) {
  std::string last_error = "no decode node is registered";
  while (true) {
    const std::vector<NodeRef> prefill = registry_->PrefillCandidates();
    const std::vector<NodeRef> decode = registry_->DecodeCandidates();
    if (prefill.empty() || decode.empty()) {
      return Error(grpc::StatusCode::UNAVAILABLE,
                   absl::StrCat("no ", prefill.empty() ? "prefill" : "decode",
                                " node is available"));
    }
    bool any_full = false;
    for (const NodeRef& node : decode) {
      if (scope.cancelled()) {
        return Error(grpc::StatusCode::CANCELLED, "client cancelled");
      }
      v1::ReserveRequest r;
      r.set_request_id(id);
      r.set_num_prompt_tokens(req.prompt_token_ids_size());
      r.set_max_new_tokens(req.sampling().max_tokens());
      // The layout the prefill node will write with; the decode node checks
      // it against its own.
      *r.mutable_expected_layout() = prefill.front().layout;
      r.set_reservation_ttl_ms(static_cast<uint32_t>(
          absl::ToInt64Milliseconds(options_.reservation_ttl)));
      grpc::ClientContext ctx;
      SetDeadline(ctx, std::min(deadline,
                                absl::Now() + options_.control_rpc_timeout));
      scope.SetCurrent(&ctx);
      v1::ReserveResponse reply;
      const grpc::Status s = node.stub->Reserve(&ctx, r, &reply);
      scope.SetCurrent(nullptr);
      if (s.ok()) {
        registry_->AddReservedBlocks(node.id,
                                     reply.kv_transfer().block_ids_size());
        out->node = node;
        out->kv = std::move(*reply.mutable_kv_transfer());
        return grpc::Status::OK;
      }
      if (scope.cancelled()) {
        return Error(grpc::StatusCode::CANCELLED, "client cancelled");
      }
      last_error = absl::StrCat("decode node ", node.address, ": ",
                                s.error_message());
      if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        any_full = true;
      } else if (!NodeUnreachable(s) &&
                 s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        return Error(s.error_code(), last_error);
      }
    }
    if (!any_full) {
      return Error(grpc::StatusCode::UNAVAILABLE,
                   absl::StrCat("no decode node reachable (", last_error, ")"));
    }
    // Every reachable decode node is full: queue until space frees up or
    // the request's deadline passes.
    if (absl::Now() + options_.reserve_retry_interval > deadline) {
      return Error(grpc::StatusCode::RESOURCE_EXHAUSTED,
                   absl::StrCat("every decode node's KV cache is full and "
                                "the request's deadline passed while "
                                "queued (",
                                last_error, ")"));
    }
    absl::SleepFor(options_.reserve_retry_interval);
  }
}

grpc::Status RouterService::RunPrefill(uint64_t id,
                                       const v1::GenerateRequest& req,
                                       const v1::SamplingParams& sampling,
                                       const Reservation& reservation,
                                       absl::Time deadline,
                                       CancellationWatcher::Scope& scope,
                                       v1::PrefillResponse* out) {
  grpc::Status last = Error(grpc::StatusCode::UNAVAILABLE,
                            "no prefill node is available");
  for (const NodeRef& node : registry_->PrefillCandidates()) {
    v1::PrefillRequest p;
    p.set_request_id(id);
    *p.mutable_prompt_token_ids() = req.prompt_token_ids();
    *p.mutable_sampling() = sampling;
    *p.mutable_destination() = reservation.kv;
    p.set_deadline_ms(MsUntil(deadline));
    grpc::ClientContext ctx;
    SetDeadline(ctx, deadline);
    scope.SetCurrent(&ctx);
    registry_->AddPrefillTokens(node.id, req.prompt_token_ids_size());
    const grpc::Status s = node.stub->Prefill(&ctx, p, out);
    scope.SetCurrent(nullptr);
    if (s.ok()) return s;
    if (scope.cancelled()) {
      return Error(grpc::StatusCode::CANCELLED, "client cancelled");
    }
    last = Error(s.error_code(), absl::StrCat("prefill node ", node.address,
                                              ": ", s.error_message()));
    // Only a node that cannot be reached is worth another try: anything
    // else is about the request (or its KV transfer) and would fail again.
    if (!NodeUnreachable(s)) return last;
  }
  return last;
}

void RouterService::ReleaseDecode(uint64_t id, const Reservation& r,
                                  v1::ReleaseReason reason) {
  v1::ReleaseRequest req;
  req.set_request_id(id);
  req.set_reason(reason);
  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Now() + options_.control_rpc_timeout);
  v1::ReleaseResponse reply;
  const grpc::Status s = r.node.stub->Release(&ctx, req, &reply);
  if (!s.ok()) {
    DUET_LOG(WARNING) << "Release of request " << id << " on "
                      << r.node.address << " failed: " << s.error_message()
                      << " (the reservation expires on its own)";
  }
}

grpc::Status RouterService::Generate(
    grpc::ServerContext* ctx, const v1::GenerateRequest* req,
    grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const grpc::Status status = GenerateImpl(ctx, req, writer);
  if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED &&
      status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) {
    DUET_LOG(WARNING) << "request failed: "
                      << grpc::StatusCode(status.error_code()) << " "
                      << status.error_message();
  }
  return status;
}

grpc::Status RouterService::GenerateImpl(
    grpc::ServerContext* ctx, const v1::GenerateRequest* req,
    grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const absl::Time start = absl::Now();
  if (grpc::Status s = Validate(*req); !s.ok()) return s;
  const absl::Time deadline =
      std::min(absl::FromChrono(ctx->deadline()),
               start + options_.default_request_timeout);
  const uint64_t id = next_request_id_.fetch_add(1);
  CancellationWatcher::Scope scope(&watcher_, ctx);
  v1::SamplingParams sampling = req->sampling();
  if (!sampling.has_seed()) {
    // Chosen once here so prefill (token 1) and decode agree on it.
    sampling.set_seed(absl::Uniform<uint64_t>(absl::BitGen()));
  }

  Reservation reservation;
  if (grpc::Status s = ReserveDecode(id, *req, deadline, scope, &reservation);
      !s.ok()) {
    return s;
  }
  const absl::Time prefill_start = absl::Now();
  v1::PrefillResponse prefill;
  if (grpc::Status s = RunPrefill(id, *req, sampling, reservation, deadline,
                                  scope, &prefill);
      !s.ok()) {
    ReleaseDecode(id, reservation,
                  scope.cancelled() ? v1::RELEASE_REASON_CANCELLED
                                    : v1::RELEASE_REASON_FAILED);
    return s;
  }

  v1::DecodeRequest d;
  d.set_request_id(id);
  d.set_first_token(prefill.first_token());
  *d.mutable_sampling() = sampling;
  d.set_deadline_ms(MsUntil(deadline));
  grpc::ClientContext dctx;
  SetDeadline(dctx, deadline);
  scope.SetCurrent(&dctx);
  std::unique_ptr<grpc::ClientReader<v1::DecodeResponse>> reader =
      reservation.node.stub->Decode(&dctx, d);
  v1::DecodeResponse msg;
  bool first = true;
  bool client_gone = false;
  double ttft_ms = 0;
  int32_t completion_tokens = 0;
  while (reader->Read(&msg)) {
    v1::GenerateResponse out;
    out.set_request_id(req->request_id());
    if (msg.has_chunk()) {
      if (first) {
        ttft_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
        first = false;
      }
      completion_tokens += msg.chunk().token_ids_size();
      *out.mutable_chunk() = std::move(*msg.mutable_chunk());
    } else if (msg.has_finished()) {
      v1::GenerationFinished* fin = out.mutable_finished();
      *fin = std::move(*msg.mutable_finished());
      fin->mutable_usage()->set_prompt_tokens(req->prompt_token_ids_size());
      fin->mutable_usage()->set_completion_tokens(completion_tokens);
      v1::Timings* t = fin->mutable_timings();
      t->set_queue_ms(
          absl::ToDoubleMilliseconds(prefill_start - start) +
          prefill.timings().queue_ms());
      t->set_prefill_ms(prefill.timings().prefill_ms());
      t->set_transfer_ms(prefill.timings().transfer_ms());
      t->set_ttft_ms(ttft_ms);
    } else {
      continue;
    }
    if (!writer->Write(out)) {
      client_gone = true;
      dctx.TryCancel();
      break;
    }
  }
  const grpc::Status s = reader->Finish();
  scope.SetCurrent(nullptr);
  if (client_gone || scope.cancelled()) {
    return Error(grpc::StatusCode::CANCELLED, "client cancelled");
  }
  if (!s.ok()) {
    return Error(s.error_code(),
                 absl::StrCat("decode node ", reservation.node.address, ": ",
                              s.error_message()));
  }
  return grpc::Status::OK;
}

grpc::Status RouterService::Health(grpc::ServerContext*,
                                   const v1::HealthRequest*,
                                   v1::HealthResponse* reply) {
  reply->set_num_prefill_nodes(registry_->CountLive(v1::NODE_ROLE_PREFILL));
  reply->set_num_decode_nodes(registry_->CountLive(v1::NODE_ROLE_DECODE));
  reply->set_serving(reply->num_prefill_nodes() > 0 &&
                     reply->num_decode_nodes() > 0);
  const auto nodes = registry_->List(v1::NODE_ROLE_UNSPECIFIED);
  if (!nodes.empty()) reply->set_model_name(nodes.front().model_name());
  return grpc::Status::OK;
}

grpc::Status RouterService::ListNodes(grpc::ServerContext*,
                                      const v1::ListNodesRequest* req,
                                      v1::ListNodesResponse* reply) {
  for (v1::NodeInfo& n : registry_->List(req->role())) {
    *reply->add_nodes() = std::move(n);
  }
  return grpc::Status::OK;
}

grpc::Status RouterService::Register(grpc::ServerContext*,
                                     const v1::RegisterRequest* req,
                                     v1::RegisterResponse* reply) {
  auto id = registry_->Register(*req);
  if (!id.ok()) {
    return Error(static_cast<grpc::StatusCode>(id.status().code()),
                 std::string(id.status().message()));
  }
  reply->set_node_id(*id);
  reply->set_heartbeat_interval_ms(static_cast<uint32_t>(
      absl::ToInt64Milliseconds(registry_->heartbeat_interval())));
  return grpc::Status::OK;
}

grpc::Status RouterService::Heartbeat(grpc::ServerContext*,
                                      const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* reply) {
  reply->set_known(registry_->Heartbeat(req->node_id(), req->load()));
  return grpc::Status::OK;
}

}  // namespace duet::router
