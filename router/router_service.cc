#include "router/router_service.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>

#include "absl/cleanup/cleanup.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "router/rpc_util.h"
#include "router/text_stream.h"
#include "security/tls.h"
#include "tokenizer/utf8.h"

namespace duet::router {
namespace {

// Limits on what a client sends (the 1 MB request_id echoed into
// every chunk, 10,000 stop strings).
constexpr size_t kMaxRequestIdBytes = 256;
constexpr size_t kMaxPromptBytes = size_t{1} << 20;
constexpr int kMaxPromptTokens = 1 << 20;
constexpr int kMaxStopStrings = 16;
constexpr size_t kMaxStopBytes = 256;
constexpr int kMaxStopTokenIds = 64;

// Byte offset of the first ill-formed UTF-8 sequence, nullopt if none.
std::optional<size_t> FirstInvalidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const tokenizer::Utf8Step step = tokenizer::NextUtf8Step(s.substr(i));
    if (step.kind != tokenizer::Utf8StepKind::kValid) return i;
    i += step.length;
  }
  return std::nullopt;
}

using internal::Error;
using internal::MsUntil;
using internal::SetDeadline;

// How long before its reservation expires a prefill must be over.
constexpr absl::Duration kReservationMargin = absl::Seconds(2);

bool NodeUnreachable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE;
}

}  // namespace

// --- RouterService ----------------------------------------------------------

RouterService::RouterService(NodeRegistry* registry,
                             const RouterOptions& options,
                             const tokenizer::Tokenizer* tokenizer)
    : registry_(registry),
      options_(options),
      tokenizer_(tokenizer),
      admission_(options.max_queued_requests),
      watcher_([registry] { return registry->LiveNodeIds(); },
               absl::Milliseconds(50), [this] { admission_.Poke(); },
               options.client_write_timeout),
      device_() {}

uint64_t RouterService::NewRequestId() {
  // Unguessable (std::random_device reads the kernel's CSPRNG), so no
  // caller can aim at another request's id on a node; 64 random bits also
  // keep ids unique across router restarts (nodes may still hold old ones).
  absl::MutexLock lock(&id_mu_);
  uint64_t id = 0;
  while (id == 0) {
    id = static_cast<uint64_t>(device_()) << 32 | device_();
  }
  return id;
}

grpc::Status RouterService::Validate(const v1::GenerateRequest& req,
                                     std::vector<int32_t>* prompt) {
  const v1::SamplingParams& s = req.sampling();
  auto invalid = [](const std::string& msg) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT, msg);
  };
  // Sizes first: nothing below should work on a field of unbounded size.
  if (req.request_id().size() > kMaxRequestIdBytes) {
    return invalid(absl::StrCat("request_id is ", req.request_id().size(),
                                " bytes; at most ", kMaxRequestIdBytes));
  }
  if (req.prompt().size() > kMaxPromptBytes) {
    return invalid(absl::StrCat("prompt is ", req.prompt().size(),
                                " bytes; at most ", kMaxPromptBytes));
  }
  if (req.prompt_token_ids_size() > kMaxPromptTokens) {
    return invalid(absl::StrCat("prompt_token_ids has ",
                                req.prompt_token_ids_size(), " ids; at most ",
                                kMaxPromptTokens));
  }
  if (s.stop_size() > kMaxStopStrings) {
    return invalid(absl::StrCat("sampling.stop has ", s.stop_size(),
                                " strings; at most ", kMaxStopStrings));
  }
  if (s.stop_token_ids_size() > kMaxStopTokenIds) {
    return invalid(absl::StrCat("sampling.stop_token_ids has ",
                                s.stop_token_ids_size(), " ids; at most ",
                                kMaxStopTokenIds));
  }
  for (int i = 0; i < s.stop_size(); ++i) {
    if (s.stop(i).size() > kMaxStopBytes) {
      return invalid(absl::StrCat("sampling.stop[", i, "] is ",
                                  s.stop(i).size(), " bytes; at most ",
                                  kMaxStopBytes));
    }
    if (std::optional<size_t> bad = FirstInvalidUtf8(s.stop(i))) {
      return invalid(absl::StrCat("sampling.stop[", i,
                                  "] is not valid UTF-8 (byte ", *bad, ")"));
    }
  }
  if (std::optional<size_t> bad = FirstInvalidUtf8(req.request_id())) {
    return invalid(
        absl::StrCat("request_id is not valid UTF-8 (byte ", *bad, ")"));
  }
  if (std::optional<size_t> bad = FirstInvalidUtf8(req.prompt())) {
    return invalid(absl::StrCat(
        "prompt is not valid UTF-8: ill-formed sequence at byte ", *bad));
  }
  const bool needs_tokenizer =
      !req.prompt().empty() || req.return_text() || s.stop_size() > 0;
  if (needs_tokenizer && tokenizer_ == nullptr) {
    return invalid(
        "text prompts, return_text and stop strings need a tokenizer: start "
        "duet-router with --tokenizer PATH/tokenizer.json");
  }
  if (!req.prompt().empty() && !req.prompt_token_ids().empty()) {
    return invalid("set either prompt or prompt_token_ids, not both");
  }
  if (!req.prompt().empty()) {
    // add_special_tokens as Hugging Face does by default (Llama-3: BOS).
    auto ids = tokenizer_->Encode(req.prompt(), /*add_special_tokens=*/true);
    if (!ids.ok()) {
      return invalid(
          absl::StrCat("cannot tokenize prompt: ", ids.status().message()));
    }
    *prompt = std::move(*ids);
  } else {
    prompt->assign(req.prompt_token_ids().begin(),
                   req.prompt_token_ids().end());
  }
  if (prompt->empty()) {
    return invalid(req.prompt().empty()
                       ? "prompt_token_ids must hold at least one token"
                       : "prompt tokenizes to no tokens");
  }
  for (const std::string& stop : s.stop()) {
    if (stop.empty()) return invalid("sampling.stop strings must not be empty");
  }
  for (int32_t id : *prompt) {
    if (id < 0) {
      return invalid(absl::StrCat("prompt token id ", id, " is negative"));
    }
  }
  if (s.max_tokens() <= 0) {
    return invalid(
        absl::StrCat("sampling.max_tokens must be > 0, got ", s.max_tokens()));
  }
  // 0 is proto3's "unset" and means 1.0 (documented in common.proto).
  if (std::isnan(s.top_p()) || s.top_p() < 0.0f || s.top_p() > 1.0f) {
    return invalid(
        absl::StrCat("sampling.top_p must be in (0, 1], got ", s.top_p()));
  }
  if (!std::isfinite(s.temperature()) || s.temperature() < 0.0f) {
    return invalid(
        absl::StrCat("sampling.temperature must be a finite number >= 0, got ",
                     s.temperature()));
  }
  if (s.top_k() < 0) {
    return invalid(
        absl::StrCat("sampling.top_k must be >= 0, got ", s.top_k()));
  }
  // The ranges of model::ValidateSamplingParams (the nodes check again);
  // NaN fails every comparison below.
  if (!(s.presence_penalty() >= -2.0f && s.presence_penalty() <= 2.0f)) {
    return invalid(
        absl::StrCat("sampling.presence_penalty must be in [-2, 2], got ",
                     s.presence_penalty()));
  }
  if (!(s.frequency_penalty() >= -2.0f && s.frequency_penalty() <= 2.0f)) {
    return invalid(
        absl::StrCat("sampling.frequency_penalty must be in [-2, 2], got ",
                     s.frequency_penalty()));
  }
  // 0 is proto3's "unset" and means 1.0 (off).
  if (!std::isfinite(s.repetition_penalty()) || s.repetition_penalty() < 0.0f) {
    return invalid(absl::StrCat(
        "sampling.repetition_penalty must be a finite number > 0 (1 = off), "
        "got ",
        s.repetition_penalty()));
  }
  if (!(s.min_p() >= 0.0f && s.min_p() <= 1.0f)) {
    return invalid(
        absl::StrCat("sampling.min_p must be in [0, 1], got ", s.min_p()));
  }
  if (s.top_logprobs() < 0 || s.top_logprobs() > 20) {
    return invalid(absl::StrCat(
        "sampling.top_logprobs must be in [0, 20], got ", s.top_logprobs()));
  }
  if (s.top_logprobs() > 0 && !s.logprobs()) {
    return invalid("sampling.top_logprobs needs sampling.logprobs to be set");
  }
  for (int32_t id : s.stop_token_ids()) {
    if (id < 0) return invalid("sampling.stop_token_ids must be >= 0");
  }
  const int32_t max_len = registry_->MaxModelLen();
  const int64_t total = static_cast<int64_t>(prompt->size()) + s.max_tokens();
  if (max_len > 0 && total > max_len) {
    return invalid(absl::StrCat(
        "prompt (", prompt->size(), " tokens) + max_tokens (", s.max_tokens(),
        ") exceeds the model context of ", max_len, " tokens"));
  }
  return grpc::Status::OK;
}

grpc::Status RouterService::ReserveDecode(
    uint64_t id, const std::vector<int32_t>& prompt,
    std::span<const uint64_t> hashes, const v1::GenerateRequest& req,
    const NodeRef& prefill, absl::Time deadline, CallWatcher::Scope& scope,
    Reservation* out) {
  const auto num_prompt_tokens = static_cast<int32_t>(prompt.size());
  std::string last_error = "no decode node is registered";
  std::optional<AdmissionQueue::Ticket> ticket;
  // First come, first served: behind the requests already waiting.
  if (admission_.busy()) {
    if (absl::Status s = admission_.Enter(&ticket); !s.ok()) {
      return Error(grpc::StatusCode::RESOURCE_EXHAUSTED,
                   std::string(s.message()));
    }
  }
  while (true) {
    if (ticket.has_value()) {
      if (grpc::Status s =
              WaitAdmission(*ticket, deadline, scope,
                            "every decode node's KV cache is full", last_error);
          !s.ok()) {
        return s;
      }
    }
    std::vector<NodeRef> decode = registry_->DecodeCandidates();
    if (options_.routing == RoutingMode::kPrefixAware && !decode.empty()) {
      OrderDecodeByPrefix(decode, prefix_index_, hashes, num_prompt_tokens,
                          registry_->BlockSize());
    }
    if (decode.empty()) {
      return Error(grpc::StatusCode::UNAVAILABLE,
                   "no decode node is available");
    }
    bool any_full = false;
    bool any_compatible = false;
    for (const NodeRef& node : decode) {
      if (scope.cancelled()) {
        return Error(grpc::StatusCode::CANCELLED, "client cancelled");
      }
      const std::optional<v1::KvTransport> transport =
          PickKvTransport(prefill, node);
      if (!transport.has_value()) continue;
      any_compatible = true;
      v1::ReserveRequest r;
      r.set_request_id(id);
      r.set_num_prompt_tokens(num_prompt_tokens);
      // Lets a decode node link the blocks its prefix cache holds.
      r.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
      r.set_max_new_tokens(req.sampling().max_tokens());
      // The layout the prefill node will write with; the decode node checks
      // it against its own.
      *r.mutable_expected_layout() = prefill.layout;
      r.set_kv_transport(*transport);
      r.set_reservation_ttl_ms(static_cast<uint32_t>(
          absl::ToInt64Milliseconds(options_.reservation_ttl)));
      grpc::ClientContext ctx;
      // Neither cancelled with the client nor cut off at the request's
      // deadline (it is short, bounded by control_rpc_timeout): a Reserve
      // cut off after the decode node reserved would leave blocks the
      // router has no token to release until their TTL. A client gone or a
      // deadline passed meanwhile is seen at the prefill, whose failure
      // releases the reservation.
      SetDeadline(ctx, absl::Now() + options_.control_rpc_timeout);
      // Count the blocks against the node before the call, so concurrent
      // requests placed meanwhile see them and spread over the nodes.
      const int64_t block_size = std::max<int64_t>(1, node.layout.block_size());
      const int64_t estimate =
          (int64_t{num_prompt_tokens} + req.sampling().max_tokens() - 1 +
           block_size - 1) /
          block_size;
      registry_->AddReservedBlocks(node.id, estimate);
      v1::ReserveResponse reply;
      const absl::Time reserved_at = absl::Now();
      const grpc::Status s = node.stub->Reserve(&ctx, r, &reply);
      registry_->AddReservedBlocks(
          node.id,
          s.ok() ? static_cast<int64_t>(reply.reserved_blocks()) - estimate
                 : -estimate);
      if (s.ok()) {
        routing_.decode_cached_tokens +=
            int64_t{reply.cached_blocks()} * block_size;
        prefix_index_.Record(node.id, hashes, node.total_kv_blocks);
        out->node = node;
        out->token = std::move(*reply.mutable_reservation_token());
        out->expires = reserved_at + options_.reservation_ttl;
        return grpc::Status::OK;
      }
      if (scope.cancelled()) {
        return Error(grpc::StatusCode::CANCELLED, "client cancelled");
      }
      last_error =
          absl::StrCat("decode node ", node.address, ": ", s.error_message());
      if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        any_full = true;
      } else if (!NodeUnreachable(s) &&
                 s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        return Error(s.error_code(), last_error);
      }
    }
    if (!any_compatible) {
      return Error(grpc::StatusCode::UNAVAILABLE,
                   absl::StrCat("no decode node shares a KV transport with "
                                "prefill node ",
                                prefill.address,
                                " (CUDA IPC needs both on one host; start "
                                "the nodes with --kv-transport auto or ucx)"));
    }
    if (!any_full) {
      return Error(grpc::StatusCode::UNAVAILABLE,
                   absl::StrCat("no decode node reachable (", last_error, ")"));
    }
    // Every reachable decode node is full: queue until capacity changes
    // (or the request's deadline passes).
    if (!ticket.has_value()) {
      if (absl::Status s = admission_.Enter(&ticket); !s.ok()) {
        return Error(grpc::StatusCode::RESOURCE_EXHAUSTED,
                     std::string(s.message()));
      }
    }
  }
}

grpc::Status RouterService::RunPrefill(
    uint64_t id, const std::vector<int32_t>& prompt,
    const v1::SamplingParams& sampling, const NodeRef& node,
    const Reservation& reservation, absl::Time deadline,
    CallWatcher::Scope& scope, bool* retry, v1::PrefillResponse* out) {
  *retry = false;
  // The prefill node stops writing KV by its deadline; it must stop before
  // the reservation expires, or a late write could land in blocks the
  // decode node has given to another request.
  const absl::Time prefill_deadline =
      std::min(deadline, reservation.expires - kReservationMargin);
  v1::PrefillRequest p;
  p.set_request_id(id);
  p.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  *p.mutable_sampling() = sampling;
  p.set_decode_node_address(reservation.node.address);
  p.set_reservation_token(reservation.token);
  p.set_deadline_ms(MsUntil(prefill_deadline));
  grpc::ClientContext ctx;
  SetDeadline(ctx, prefill_deadline);
  scope.SetCurrent(&ctx);
  // A prefill node that leaves the cluster mid-prefill ends the call now
  // (and the request may go to another one); a prefill has no messages to
  // time between, so no idle limit.
  scope.WatchNode(node.id, absl::ZeroDuration());
  // What the node will compute: its cached prefix is not queued work (or
  // a burst of one conversation would look like load and scatter).
  registry_->AddPrefillTokens(node.id, static_cast<int64_t>(prompt.size()) -
                                           node.expected_cached_tokens);
  const grpc::Status s = node.stub->Prefill(&ctx, p, out);
  scope.SetCurrent(nullptr);
  const bool node_gone = scope.lost() == CallWatcher::Lost::kNodeGone;
  scope.Unwatch();
  if (s.ok()) return s;
  if (scope.cancelled()) {
    return Error(grpc::StatusCode::CANCELLED, "client cancelled");
  }
  if (node_gone) {
    *retry = true;
    return Error(grpc::StatusCode::UNAVAILABLE,
                 absl::StrCat("prefill node ", node.address,
                              " left the cluster (missed heartbeats) "
                              "during the prefill"));
  }
  if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
      prefill_deadline < deadline && absl::Now() >= prefill_deadline) {
    return Error(grpc::StatusCode::DEADLINE_EXCEEDED,
                 absl::StrCat("prefill node ", node.address,
                              " did not finish before the KV reservation on "
                              "the decode node expired (reservations live ",
                              absl::FormatDuration(options_.reservation_ttl),
                              "): ", s.error_message()));
  }
  // Only a node that cannot be reached is worth another try: anything
  // else is about the request (or its KV transfer) and would fail again.
  *retry = NodeUnreachable(s);
  return Error(s.error_code(), absl::StrCat("prefill node ", node.address, ": ",
                                            s.error_message()));
}

grpc::Status RouterService::WaitAdmission(AdmissionQueue::Ticket& ticket,
                                          absl::Time deadline,
                                          CallWatcher::Scope& scope,
                                          absl::string_view full,
                                          const std::string& last_error) {
  switch (admission_.WaitTurn(ticket, deadline,
                              [&] { return scope.cancelled(); })) {
    case AdmissionQueue::Wake::kTurn:
      return grpc::Status::OK;
    case AdmissionQueue::Wake::kCancelled:
      return Error(grpc::StatusCode::CANCELLED, "client cancelled");
    case AdmissionQueue::Wake::kDeadline:
      break;
  }
  // Overload, not a slow node: RESOURCE_EXHAUSTED tells the client to back
  // off (HTTP 429).
  return Error(grpc::StatusCode::RESOURCE_EXHAUSTED,
               absl::StrCat(full,
                            " and the request's deadline passed while "
                            "queued (",
                            last_error, ")"));
}

std::optional<NodeRef> RouterService::NextPrefill(
    const std::vector<uint64_t>& tried, std::span<const uint64_t> hashes,
    int64_t prompt_tokens, int64_t* predicted_tokens) {
  std::vector<NodeRef> nodes = registry_->PrefillCandidates();
  std::erase_if(nodes, [&](const NodeRef& n) {
    return std::find(tried.begin(), tried.end(), n.id) != tried.end();
  });
  if (nodes.empty()) return std::nullopt;
  const int32_t bs = registry_->BlockSize();
  int32_t cached = 0;
  if (options_.routing == RoutingMode::kPrefixAware) {
    cached =
        OrderPrefillByPrefix(nodes, prefix_index_, hashes, prompt_tokens, bs);
  } else {
    cached = UsableCachedBlocks(prefix_index_.Match(nodes.front().id, hashes),
                                prompt_tokens, bs);
  }
  nodes.front().expected_cached_tokens = int64_t{cached} * bs;
  if (predicted_tokens != nullptr) *predicted_tokens = int64_t{cached} * bs;
  return std::move(nodes.front());
}

void RouterService::ReleaseDecode(uint64_t id, const Reservation& r,
                                  v1::ReleaseReason reason) {
  absl::Cleanup freed = [this] { admission_.Notify(); };
  v1::ReleaseRequest req;
  req.set_request_id(id);
  req.set_reason(reason);
  req.set_reservation_token(r.token);
  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Now() + options_.control_rpc_timeout);
  v1::ReleaseResponse reply;
  const grpc::Status s = r.node.stub->Release(&ctx, req, &reply);
  if (!s.ok()) {
    DUET_LOG(WARNING) << "Release of request " << id << " on " << r.node.address
                      << " failed: " << s.error_message()
                      << " (the reservation expires on its own)";
  }
}

grpc::Status RouterService::Generate(
    grpc::ServerContext* ctx, const v1::GenerateRequest* req,
    grpc::ServerWriter<v1::GenerateResponse>* writer) {
  RequestRecord record;
  const grpc::Status status = GenerateImpl(ctx, req, writer, &record);
  if (options_.metrics != nullptr) {
    options_.metrics->Ended(record, status.error_code());
  }
  // Whatever this request held on a decode node is being freed: the head
  // of the admission queue may fit now.
  admission_.Notify();
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
    grpc::ServerWriter<v1::GenerateResponse>* writer, RequestRecord* record) {
  if (grpc::Status s = CheckApiKey(*ctx); !s.ok()) return s;
  const absl::Time start = absl::Now();
  record->start = start;
  std::vector<int32_t> prompt;
  if (grpc::Status s = Validate(*req, &prompt); !s.ok()) return s;
  std::optional<TextStream> text;
  if (tokenizer_ != nullptr && (!req->prompt().empty() || req->return_text() ||
                                req->sampling().stop_size() > 0)) {
    auto stream = TextStream::Create(
        tokenizer_, std::vector<std::string>(req->sampling().stop().begin(),
                                             req->sampling().stop().end()));
    if (!stream.ok()) {
      return Error(grpc::StatusCode::INVALID_ARGUMENT,
                   std::string(stream.status().message()));
    }
    text.emplace(std::move(*stream));
  }
  const absl::Time deadline =
      std::min(absl::FromChrono(ctx->deadline()),
               start + options_.default_request_timeout);
  const uint64_t id = NewRequestId();
  CallWatcher::Scope scope(&watcher_, ctx);
  v1::SamplingParams sampling = req->sampling();
  sampling.clear_stop();  // stop strings are the router's job
  if (text.has_value() && tokenizer_eos_.has_value() &&
      !sampling.ignore_eos()) {
    sampling.add_stop_token_ids(*tokenizer_eos_);
  }
  if (!sampling.has_seed()) {
    // Chosen once here so prefill (token 1) and decode agree on it.
    sampling.set_seed(absl::Uniform<uint64_t>(absl::BitGen()));
  }

  const bool colocated = RunColocated(prompt.size());
  if (options_.metrics != nullptr) {
    options_.metrics->Started(*record, colocated, prompt.size());
  }
  if (colocated) {
    return GenerateColocated(record, id, *req, prompt, sampling, start,
                             deadline, scope, text, writer);
  }
  // The prefill node first: it decides which decode nodes can receive its
  // KV, and over which transport. Every node of a cluster has the same
  // block size (the registry pins one layout).
  std::vector<uint64_t> tried;
  int64_t predicted = 0;
  const std::vector<uint64_t> hashes =
      PrefixBlockHashes(prompt, registry_->BlockSize());
  std::optional<NodeRef> prefill_node = NextPrefill(
      tried, hashes, static_cast<int64_t>(prompt.size()), &predicted);
  if (!prefill_node.has_value()) {
    return Error(grpc::StatusCode::UNAVAILABLE, "no prefill node is available");
  }
  routing_.prompt_tokens += static_cast<int64_t>(prompt.size());
  routing_.predicted_tokens += predicted;
  Reservation reservation;
  if (grpc::Status s = ReserveDecode(id, prompt, hashes, *req, *prefill_node,
                                     deadline, scope, &reservation);
      !s.ok()) {
    return s;
  }
  const absl::Time prefill_start = absl::Now();
  v1::PrefillResponse prefill;
  while (true) {
    bool retry = false;
    tried.push_back(prefill_node->id);
    const grpc::Status s =
        RunPrefill(id, prompt, sampling, *prefill_node, reservation, deadline,
                   scope, &retry, &prefill);
    if (s.ok()) {
      routing_.prefill_cached_tokens += prefill.cached_prompt_tokens();
      prefix_index_.Record(prefill_node->id, hashes,
                           prefill_node->total_kv_blocks);
      break;
    }
    ReleaseDecode(id, reservation,
                  scope.cancelled() ? v1::RELEASE_REASON_CANCELLED
                                    : v1::RELEASE_REASON_FAILED);
    prefill_node =
        retry ? NextPrefill(tried, hashes, static_cast<int64_t>(prompt.size()))
              : std::nullopt;
    if (!prefill_node.has_value()) return s;
    DUET_LOG(WARNING) << "request " << id << ": " << s.error_message()
                      << "; trying another prefill node with a new "
                         "reservation";
    if (grpc::Status r = ReserveDecode(id, prompt, hashes, *req, *prefill_node,
                                       deadline, scope, &reservation);
        !r.ok()) {
      return r;
    }
  }

  v1::DecodeRequest d;
  d.set_request_id(id);
  d.set_reservation_token(reservation.token);
  d.set_first_token(prefill.first_token());
  d.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  *d.mutable_sampling() = sampling;
  d.set_deadline_ms(MsUntil(deadline));
  grpc::ClientContext dctx;
  SetDeadline(dctx, deadline);
  scope.SetCurrent(&dctx);
  // A decode node that leaves the cluster or goes quiet ends the stream
  // now, not at the client's deadline.
  scope.WatchNode(reservation.node.id, options_.stream_idle_timeout);
  v1::Timings base;
  base.set_queue_ms(absl::ToDoubleMilliseconds(prefill_start - start) +
                    prefill.timings().queue_ms());
  base.set_prefill_ms(prefill.timings().prefill_ms());
  base.set_transfer_ms(prefill.timings().transfer_ms());
  // A Decode cut short may never have reached the decode node (its
  // deadline passed on the way, the connection broke): then the
  // reservation would wait out its TTL. Releasing is harmless when the node
  // did see the call (the request is over either way).
  // Token 1 goes to the client now, not after a round trip through the
  // decode node (the Decode stream starts at token 2): on an H100 the
  // router's TTFT was ~1.8 ms over the prefill node's queue + prefill +
  // transfer (docs/PERF.md). The Decode call starts after it is written
  // (its synchronous start waits for the request to be sent).
  v1::DecodeResponse token1;
  token1.mutable_chunk()->add_token_ids(prefill.first_token());
  if (prefill.has_first_token_logprobs()) {
    *token1.mutable_chunk()->add_logprobs() = prefill.first_token_logprobs();
  }
  return Relay(
      record, *req, writer, scope, text, prompt.size(), start, base,
      prefill.cached_prompt_tokens(), reservation.node, "decode node", dctx,
      nullptr, [&] { return reservation.node.stub->Decode(&dctx, d); },
      [&](v1::ReleaseReason reason) { ReleaseDecode(id, reservation, reason); },
      std::move(token1));
}

grpc::Status RouterService::CheckApiKey(const grpc::ServerContext& ctx) const {
  if (options_.api_keys == nullptr) return grpc::Status::OK;
  const absl::Status s = options_.api_keys->Check(ctx);
  if (s.ok()) return grpc::Status::OK;
  return Error(grpc::StatusCode::UNAUTHENTICATED, std::string(s.message()));
}

grpc::Status RouterService::CheckMember(const grpc::ServerContext& ctx,
                                        absl::string_view what) const {
  if (!options_.members_only || security::PeerIsMember(ctx)) {
    return grpc::Status::OK;
  }
  return Error(grpc::StatusCode::UNAUTHENTICATED,
               absl::StrCat(what,
                            " is for cluster members: connect with a "
                            "certificate of the cluster's CA "
                            "(--tls-cert / --tls-key)"));
}

grpc::Status RouterService::Health(grpc::ServerContext*,
                                   const v1::HealthRequest*,
                                   v1::HealthResponse* reply) {
  reply->set_num_prefill_nodes(registry_->CountLive(v1::NODE_ROLE_PREFILL));
  reply->set_num_decode_nodes(registry_->CountLive(v1::NODE_ROLE_DECODE));
  reply->set_num_colocated_nodes(registry_->CountLive(v1::NODE_ROLE_COLOCATED));
  const bool disagg =
      reply->num_prefill_nodes() > 0 &&
      reply->num_decode_nodes() + reply->num_colocated_nodes() > 0;
  const bool colocated = reply->num_colocated_nodes() > 0;
  reply->set_serving(options_.policy == ServingPolicy::kDisagg ? disagg
                     : options_.policy == ServingPolicy::kColocated
                         ? colocated
                         : disagg || colocated);
  const auto nodes = registry_->List(v1::NODE_ROLE_UNSPECIFIED);
  if (!nodes.empty()) reply->set_model_name(nodes.front().model_name());
  v1::RoutingStats* r = reply->mutable_routing();
  r->set_mode(RoutingModeName(options_.routing));
  r->set_prompt_tokens(static_cast<uint64_t>(routing_.prompt_tokens.load()));
  r->set_predicted_cached_tokens(
      static_cast<uint64_t>(routing_.predicted_tokens.load()));
  r->set_prefill_cached_tokens(
      static_cast<uint64_t>(routing_.prefill_cached_tokens.load()));
  r->set_decode_cached_tokens(
      static_cast<uint64_t>(routing_.decode_cached_tokens.load()));
  return grpc::Status::OK;
}

grpc::Status RouterService::ListNodes(grpc::ServerContext* ctx,
                                      const v1::ListNodesRequest* req,
                                      v1::ListNodesResponse* reply) {
  if (grpc::Status s = CheckApiKey(*ctx); !s.ok()) return s;
  for (v1::NodeInfo& n : registry_->List(req->role())) {
    *reply->add_nodes() = std::move(n);
  }
  return grpc::Status::OK;
}

grpc::Status RouterService::Register(grpc::ServerContext* ctx,
                                     const v1::RegisterRequest* req,
                                     v1::RegisterResponse* reply) {
  if (grpc::Status s = CheckMember(*ctx, "Register"); !s.ok()) return s;
  auto id = registry_->Register(*req);
  if (!id.ok()) {
    return Error(static_cast<grpc::StatusCode>(id.status().code()),
                 std::string(id.status().message()));
  }
  reply->set_node_id(*id);
  // Nodes come and go (a restarted node registers under a new id, with an
  // empty cache): the record of the ones gone goes with them.
  prefix_index_.Retain(registry_->LiveNodeIds());
  admission_.Notify();
  reply->set_heartbeat_interval_ms(static_cast<uint32_t>(
      absl::ToInt64Milliseconds(registry_->heartbeat_interval())));
  return grpc::Status::OK;
}

grpc::Status RouterService::Heartbeat(grpc::ServerContext* ctx,
                                      const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* reply) {
  if (grpc::Status s = CheckMember(*ctx, "Heartbeat"); !s.ok()) return s;
  absl::StatusOr<bool> known =
      registry_->Heartbeat(req->node_id(), req->load());
  if (!known.ok()) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT,
                 std::string(known.status().message()));
  }
  reply->set_known(*known);
  // A fresh load report: freed blocks show up here at the latest.
  admission_.Notify();
  return grpc::Status::OK;
}

}  // namespace duet::router
