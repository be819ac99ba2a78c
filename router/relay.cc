// RouterService's token relay (shared by the disaggregated and colocated
// paths) and the colocated path (--policy). Split from router_service.cc
// to keep files readable.
#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "router/router_service.h"
#include "router/rpc_util.h"

namespace duet::router {
using internal::Error;
using internal::MsUntil;
using internal::SetDeadline;

absl::StatusOr<ServingPolicy> ParseServingPolicy(absl::string_view name) {
  if (name == "disagg") return ServingPolicy::kDisagg;
  if (name == "colocated") return ServingPolicy::kColocated;
  if (name == "auto") return ServingPolicy::kAuto;
  return absl::InvalidArgumentError(absl::StrCat(
      "--policy must be disagg, colocated or auto, got '", name, "'"));
}

grpc::Status RouterService::Relay(
    RequestRecord* record, const v1::GenerateRequest& req,
    grpc::ServerWriter<v1::GenerateResponse>* writer, CallWatcher::Scope& scope,
    std::optional<TextStream>& text, size_t prompt_tokens, absl::Time start,
    const v1::Timings& base, std::optional<uint32_t> cached_prompt_tokens,
    const NodeRef& node, const char* role, grpc::ClientContext& dctx,
    ReaderPtr reader, const std::function<ReaderPtr()>& open,
    const std::function<void(v1::ReleaseReason)>& release,
    std::optional<v1::DecodeResponse> first) {
  v1::DecodeResponse msg;
  bool client_gone = false;
  bool stopped_by_string = false;
  std::string matched_stop;
  double ttft_ms = -1;
  int32_t completion_tokens = 0;
  // Writes to the client are timed (a client that stops reading is
  // cancelled, CallWatcher); time blocked on the client does not count as
  // the node's silence.
  auto write = [&](const v1::GenerateResponse& out) {
    scope.BeginWrite();
    const bool ok = writer->Write(out);
    scope.EndWrite();
    scope.Touch();
    return ok;
  };
  auto finish = [&](v1::GenerationFinished fin, const std::string& tail) {
    v1::GenerateResponse out;
    out.set_request_id(req.request_id());
    if (!tail.empty()) {
      out.mutable_chunk()->set_text(tail);
      if (!write(out)) return false;
      out.clear_chunk();
    }
    fin.mutable_usage()->set_prompt_tokens(
        static_cast<uint32_t>(prompt_tokens));
    fin.mutable_usage()->set_completion_tokens(completion_tokens);
    // On the disaggregated path only the prefill node knows what its cache
    // saved (the decode node received KV either way); a colocated node
    // reports its own.
    if (cached_prompt_tokens.has_value()) {
      fin.mutable_usage()->set_cached_prompt_tokens(*cached_prompt_tokens);
    }
    v1::Timings* t = fin.mutable_timings();
    t->set_queue_ms(base.queue_ms());
    t->set_prefill_ms(base.prefill_ms());
    t->set_transfer_ms(base.transfer_ms());
    t->set_ttft_ms(std::max(ttft_ms, 0.0));
    *out.mutable_finished() = std::move(fin);
    return write(out);
  };
  // The first message may have been read already (the colocated path
  // reads it to learn whether the node took the request).
  auto next = [&] {
    if (first.has_value()) {
      msg = std::move(*first);
      first.reset();
      return true;
    }
    if (reader == nullptr) reader = open();
    return reader->Read(&msg);
  };
  while (!stopped_by_string && next()) {
    scope.Touch();
    if (msg.has_chunk()) {
      if (ttft_ms < 0)
        ttft_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
      v1::GenerateResponse out;
      out.set_request_id(req.request_id());
      const auto& ids = msg.chunk().token_ids();
      size_t keep = static_cast<size_t>(ids.size());
      if (text.has_value()) {
        auto delta =
            text->Add(std::span<const int32_t>(ids.data(), ids.size()));
        if (!delta.ok()) {
          dctx.TryCancel();
          if (reader != nullptr) {
            (void)reader->Finish();
          } else if (release) {
            release(v1::RELEASE_REASON_FAILED);
          }
          return Error(grpc::StatusCode::INTERNAL,
                       absl::StrCat("detokenizing the output: ",
                                    delta.status().message()));
        }
        keep = delta->tokens_consumed;
        out.mutable_chunk()->set_text(std::move(delta->text));
        if (delta->stopped) {
          stopped_by_string = true;
          matched_stop = delta->matched_stop;
        }
      }
      out.mutable_chunk()->mutable_token_ids()->Add(ids.begin(),
                                                    ids.begin() + keep);
      // Logprobs (SamplingParams.logprobs) follow their tokens, cut where
      // a stop string cut them.
      const auto& lps = msg.chunk().logprobs();
      out.mutable_chunk()->mutable_logprobs()->Add(
          lps.begin(), lps.begin() + std::min<size_t>(keep, static_cast<size_t>(
                                                                lps.size())));
      completion_tokens += static_cast<int32_t>(keep);
      if (options_.metrics != nullptr) {
        options_.metrics->Tokens(*record, static_cast<int>(keep));
      }
      if (!write(out)) {
        client_gone = true;
        break;
      }
    } else if (msg.has_finished()) {
      v1::GenerationFinished fin = std::move(*msg.mutable_finished());
      TextStream::Delta tail;
      if (text.has_value()) tail = text->Finish();
      if (tail.stopped) {
        // The last held-back bytes completed a stop string.
        fin.set_finish_reason(v1::FINISH_REASON_STOP_STRING);
        fin.set_matched_stop(tail.matched_stop);
      }
      record->finish = fin.finish_reason();
      if (!finish(std::move(fin), tail.text)) client_gone = true;
    }
  }
  if (stopped_by_string || client_gone) dctx.TryCancel();
  // Never opened: the request ended at the first message, and the node
  // holds its reservation until told.
  const bool opened = reader != nullptr;
  const grpc::Status s = opened ? reader->Finish() : grpc::Status::OK;
  scope.SetCurrent(nullptr);
  const CallWatcher::Lost lost = scope.lost();
  scope.Unwatch();
  // After the client has its finished message (the Release is a round
  // trip it need not wait for).
  absl::Cleanup release_unopened = [&] {
    if (opened || !release) return;
    release(stopped_by_string ? v1::RELEASE_REASON_FINISHED
                              : v1::RELEASE_REASON_CANCELLED);
  };
  if (!s.ok() && lost == CallWatcher::Lost::kNone && release) {
    // Not to a node that is gone or stuck: the call would wait out its
    // timeout before the client hears; that node frees on seeing the
    // cancelled stream (or by its TTL).
    release(client_gone || scope.cancelled() ? v1::RELEASE_REASON_CANCELLED
                                             : v1::RELEASE_REASON_FAILED);
  }
  if (scope.write_timed_out()) {
    return Error(
        grpc::StatusCode::CANCELLED,
        absl::StrCat("the client read nothing for ",
                     absl::FormatDuration(options_.client_write_timeout),
                     " (--client-write-timeout-ms); request cancelled "
                     "after ",
                     completion_tokens, " tokens"));
  }
  if (client_gone || scope.cancelled()) {
    return Error(grpc::StatusCode::CANCELLED, "client cancelled");
  }
  if (lost != CallWatcher::Lost::kNone && !stopped_by_string) {
    // The node is gone or stuck: whatever it still holds for this request
    // is freed when it sees the cancelled stream (or by its TTL).
    return Error(
        grpc::StatusCode::UNAVAILABLE,
        lost == CallWatcher::Lost::kNodeGone
            ? absl::StrCat(role, " ", node.address,
                           " left the cluster (missed heartbeats) after ",
                           completion_tokens, " tokens")
            : absl::StrCat(role, " ", node.address, " sent nothing for ",
                           absl::FormatDuration(options_.stream_idle_timeout),
                           " (--stream-idle-timeout-ms) after ",
                           completion_tokens, " tokens"));
  }
  if (stopped_by_string) {
    // The node saw its stream cancelled and freed the request.
    v1::GenerationFinished fin;
    fin.set_finish_reason(v1::FINISH_REASON_STOP_STRING);
    fin.set_matched_stop(matched_stop);
    record->finish = v1::FINISH_REASON_STOP_STRING;
    finish(std::move(fin), "");
    return grpc::Status::OK;
  }
  if (!s.ok()) {
    return Error(s.error_code(), absl::StrCat(role, " ", node.address, ": ",
                                              s.error_message()));
  }
  return grpc::Status::OK;
}

bool RouterService::RunColocated(size_t prompt_tokens) {
  switch (options_.policy) {
    case ServingPolicy::kDisagg:
      return false;
    case ServingPolicy::kColocated:
      return true;
    case ServingPolicy::kAuto:
      break;
  }
  if (registry_->CountLive(v1::NODE_ROLE_COLOCATED) == 0) return false;
  if (prompt_tokens <=
      static_cast<size_t>(options_.auto_colocated_prompt_tokens)) {
    return true;
  }
  const std::vector<NodeRef> prefill = registry_->PrefillCandidates();
  // Least-loaded first: when even it is past the mark, all are.
  return prefill.empty() ||
         registry_->QueuedPrefillTokens(prefill.front().id) >=
             options_.auto_prefill_queue_tokens;
}

grpc::Status RouterService::GenerateColocated(
    RequestRecord* record, uint64_t id, const v1::GenerateRequest& req,
    const std::vector<int32_t>& prompt, const v1::SamplingParams& sampling,
    absl::Time start, absl::Time deadline, CallWatcher::Scope& scope,
    std::optional<TextStream>& text,
    grpc::ServerWriter<v1::GenerateResponse>* writer) {
  std::optional<AdmissionQueue::Ticket> ticket;
  // First come, first served: behind the requests already waiting (for a
  // decode node's KV or a colocated node's batch alike).
  if (admission_.busy()) {
    if (absl::Status s = admission_.Enter(&ticket); !s.ok()) {
      return Error(grpc::StatusCode::RESOURCE_EXHAUSTED,
                   std::string(s.message()));
    }
  }
  std::string last_error = "no colocated node is registered";
  v1::NodeGenerateRequest g;
  g.set_request_id(id);
  g.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  *g.mutable_sampling() = sampling;
  const int64_t total =
      static_cast<int64_t>(prompt.size()) + req.sampling().max_tokens() - 1;
  const int32_t bs = registry_->BlockSize();
  const std::vector<uint64_t> hashes = PrefixBlockHashes(prompt, bs);
  while (true) {
    if (ticket.has_value()) {
      if (grpc::Status s =
              WaitAdmission(*ticket, deadline, scope,
                            "every colocated node is full", last_error);
          !s.ok()) {
        return s;
      }
    }
    std::vector<NodeRef> nodes =
        registry_->DecodeCandidates(/*colocated_only=*/true);
    int32_t cached = 0;
    if (options_.routing == RoutingMode::kPrefixAware && !nodes.empty()) {
      cached = OrderDecodeByPrefix(nodes, prefix_index_, hashes,
                                   static_cast<int64_t>(prompt.size()), bs);
    }
    if (nodes.empty()) {
      return Error(grpc::StatusCode::UNAVAILABLE,
                   "no colocated node is available (start duet-decode with "
                   "--role colocated, or use --policy disagg)");
    }
    bool any_full = false;
    for (const NodeRef& node : nodes) {
      if (scope.cancelled()) {
        return Error(grpc::StatusCode::CANCELLED, "client cancelled");
      }
      const int64_t blocks = (total + bs - 1) / bs;
      // Counted against the node until its next heartbeat, so concurrent
      // requests spread over the nodes.
      registry_->AddReservedBlocks(node.id, blocks);
      g.set_deadline_ms(MsUntil(deadline));
      grpc::ClientContext dctx;
      SetDeadline(dctx, deadline);
      scope.SetCurrent(&dctx);
      scope.WatchNode(node.id, options_.stream_idle_timeout);
      const absl::Time sent = absl::Now();
      std::unique_ptr<grpc::ClientReader<v1::DecodeResponse>> reader =
          node.stub->Generate(&dctx, g);
      // The first message tells whether the node took the request: a
      // refusal (full, unreachable) ends the stream before any token.
      v1::DecodeResponse first;
      if (!reader->Read(&first)) {
        const grpc::Status s = reader->Finish();
        scope.SetCurrent(nullptr);
        scope.Unwatch();
        registry_->AddReservedBlocks(node.id, -blocks);
        if (scope.cancelled()) {
          return Error(grpc::StatusCode::CANCELLED, "client cancelled");
        }
        last_error = absl::StrCat("colocated node ", node.address, ": ",
                                  s.error_message());
        if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          any_full = true;
          continue;
        }
        if (s.error_code() == grpc::StatusCode::UNAVAILABLE) continue;
        return Error(s.ok() ? grpc::StatusCode::INTERNAL : s.error_code(),
                     s.ok() ? absl::StrCat(last_error,
                                           "ended the stream "
                                           "without a message")
                            : last_error);
      }
      // Taken: relay it, the first message included.
      routing_.prompt_tokens += static_cast<int64_t>(prompt.size());
      if (&node == &nodes.front()) {
        routing_.predicted_tokens += int64_t{cached} * bs;
      }
      prefix_index_.Record(node.id, hashes, node.total_kv_blocks);
      // As on the disaggregated path: the router's own wait plus the node's
      // queue, then the node's prefill (its first chunk says).
      v1::Timings base;
      base.set_queue_ms(absl::ToDoubleMilliseconds(sent - start) +
                        first.timings().queue_ms());
      base.set_prefill_ms(first.timings().prefill_ms());
      return Relay(record, req, writer, scope, text, prompt.size(), start, base,
                   std::nullopt, node, "colocated node", dctx,
                   std::move(reader), nullptr, nullptr, std::move(first));
    }
    if (!any_full) {
      return Error(
          grpc::StatusCode::UNAVAILABLE,
          absl::StrCat("no colocated node reachable (", last_error, ")"));
    }
    if (!ticket.has_value()) {
      if (absl::Status s = admission_.Enter(&ticket); !s.ok()) {
        return Error(grpc::StatusCode::RESOURCE_EXHAUSTED,
                     std::string(s.message()));
      }
    }
  }
}

}  // namespace duet::router
