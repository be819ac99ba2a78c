// The router's gRPC services: duet.v1.Duet for clients (Generate, Health,
// ListNodes) and duet.v1.Registry for nodes (Register, Heartbeat). Generate
// follows DESIGN.md §1: Reserve on a decode node, Prefill on a prefill node
// with the decode node's KV descriptor, then relay the decode node's token
// stream. The router holds no KV state; it propagates cancellation (a client
// that goes away cancels the outgoing call in flight) and deadlines, and it
// releases the decode reservation whenever a request fails before decoding.
#ifndef DUET_ROUTER_ROUTER_SERVICE_H_
#define DUET_ROUTER_ROUTER_SERVICE_H_

#include <atomic>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "duet/v1/client.grpc.pb.h"
#include "duet/v1/registry.grpc.pb.h"
#include "router/admission_queue.h"
#include "router/call_watcher.h"
#include "router/node_registry.h"
#include "router/prefix_index.h"
#include "router/router_metrics.h"
#include "router/text_stream.h"
#include "security/api_keys.h"
#include "tokenizer/tokenizer.h"

namespace duet::router {

// Where a request runs (--policy).
enum class ServingPolicy {
  kDisagg,     // prefill node, then decode node (KV handed over)
  kColocated,  // one colocated node runs it whole
  // Colocated when no prefill node is live, when the prompt is short
  // (auto_colocated_prompt_tokens: a handover costs more than it saves) or
  // every prefill node's queue is past auto_prefill_queue_tokens;
  // disaggregated otherwise; disaggregated when no colocated node is live.
  kAuto,
};
// "disagg" / "colocated" / "auto".
absl::StatusOr<ServingPolicy> ParseServingPolicy(absl::string_view name);

struct RouterOptions {
  ServingPolicy policy = ServingPolicy::kAuto;
  // kAuto's thresholds (see ServingPolicy).
  int32_t auto_colocated_prompt_tokens = 256;
  int64_t auto_prefill_queue_tokens = 16384;
  // Deadline of a request whose client set none.
  absl::Duration default_request_timeout = absl::Minutes(5);
  // Per-call cap for Reserve and Release.
  absl::Duration control_rpc_timeout = absl::Seconds(5);
  // Requests that may wait for KV space at once (RESOURCE_EXHAUSTED past
  // it); they retry only when capacity changes (admission_queue.h).
  int max_queued_requests = 1024;
  // Reservations live this long on a decode node without a Decode call.
  absl::Duration reservation_ttl = absl::Seconds(60);
  // Keys a Generate or ListNodes call must present (null or empty: none).
  const security::ApiKeys* api_keys = nullptr;
  // Register and Heartbeat only from peers with a certificate of the
  // cluster's CA (false with --insecure).
  bool members_only = false;
  // A decode stream that delivers nothing for this long is ended
  // (UNAVAILABLE naming the node), even while the node still heartbeats;
  // 0: no limit. A node that leaves the registry ends its streams at once.
  absl::Duration stream_idle_timeout = absl::Seconds(60);
  // A client that reads nothing for this long while a response waits for
  // it (gRPC's flow-control window full) has its request cancelled and its
  // KV freed; 0: no limit.
  absl::Duration client_write_timeout = absl::Seconds(30);
  // Where requests are recorded (null: nowhere).
  RouterMetrics* metrics = nullptr;
  // How nodes are picked (--routing; prefix_index.h).
  RoutingMode routing = RoutingMode::kPrefixAware;
};

class RouterService final : public v1::Duet::Service,
                            public v1::Registry::Service {
 public:
  // `tokenizer` (may be null) enables text prompts, text deltas and stop
  // strings.
  RouterService(NodeRegistry* registry, const RouterOptions& options,
                const tokenizer::Tokenizer* tokenizer = nullptr);
  // EOS token from tokenizer_config.json: text requests stop on it too
  // (unless ignore_eos), on top of the model's own EOS ids.
  void set_tokenizer_eos(std::optional<int32_t> id) { tokenizer_eos_ = id; }
  // Requests waiting in the admission queue (metrics).
  int queued_requests() { return admission_.size(); }
  // Prefix-aware placement so far (metrics).
  const RoutingCounters& routing() const { return routing_; }

  // duet.v1.Duet
  grpc::Status Generate(
      grpc::ServerContext* ctx, const v1::GenerateRequest* req,
      grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Health(grpc::ServerContext* ctx, const v1::HealthRequest* req,
                      v1::HealthResponse* reply) override;
  grpc::Status ListNodes(grpc::ServerContext* ctx,
                         const v1::ListNodesRequest* req,
                         v1::ListNodesResponse* reply) override;
  // duet.v1.Registry
  grpc::Status Register(grpc::ServerContext* ctx,
                        const v1::RegisterRequest* req,
                        v1::RegisterResponse* reply) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx,
                         const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* reply) override;

 private:
  struct Reservation {
    NodeRef node;
    // The decode node's capability for it: the prefill node presents it to
    // learn where to write (Describe); Decode and Release present it too.
    std::string token;
    // When the decode node frees it if no Decode call came: a prefill must
    // be done (and its KV writes over) well before.
    absl::Time expires;
  };
  grpc::Status GenerateImpl(grpc::ServerContext* ctx,
                            const v1::GenerateRequest* req,
                            grpc::ServerWriter<v1::GenerateResponse>* writer,
                            RequestRecord* record);
  // Checks the request and resolves its prompt (tokenizing text prompts).
  grpc::Status Validate(const v1::GenerateRequest& req,
                        std::vector<int32_t>* prompt);
  // Reserves on a decode node that shares a KV transport with `prefill`
  // (the node that will write the KV), asking it for that transport.
  // `hashes`: the prompt's PrefixBlockHashes at the decode nodes' block
  // size (prefix-aware routing).
  grpc::Status ReserveDecode(uint64_t id, const std::vector<int32_t>& prompt,
                             std::span<const uint64_t> hashes,
                             const v1::GenerateRequest& req,
                             const NodeRef& prefill, absl::Time deadline,
                             CallWatcher::Scope& scope, Reservation* out);
  // Prefills on `node`. Sets *retry when another node may be tried (this
  // one was unreachable); the caller must then reserve anew: a second
  // writer must never share the first one's blocks, whose bytes may still
  // land.
  grpc::Status RunPrefill(uint64_t id, const std::vector<int32_t>& prompt,
                          const v1::SamplingParams& sampling,
                          const NodeRef& node, const Reservation& reservation,
                          absl::Time deadline, CallWatcher::Scope& scope,
                          bool* retry, v1::PrefillResponse* out);
  // The stream of a Decode or Generate call on `node` relayed to the
  // client (text deltas, stop strings, the finished message with usage and
  // `base` timings) until it ends; `release` frees what the node may still
  // hold for the request when the stream ends not OK and the node is
  // neither gone nor stuck. Tokens and the finish go to `record`.
  // `cached_prompt_tokens` (the prefill node's) goes into the usage; unset,
  // the node's own finished message's count stands (colocated).
  // `first`, when set, is relayed before anything is read. `reader` may be
  // null: `open` then starts the call once `first` has gone to the client
  // (the disaggregated path, so that token 1 does not wait for the Decode
  // call to be sent); a request that ends at `first` (stop string, client
  // gone) never opens it and `release` frees the node's reservation.
  using ReaderPtr = std::unique_ptr<grpc::ClientReader<v1::DecodeResponse>>;
  grpc::Status Relay(RequestRecord* record, const v1::GenerateRequest& req,
                     grpc::ServerWriter<v1::GenerateResponse>* writer,
                     CallWatcher::Scope& scope, std::optional<TextStream>& text,
                     size_t prompt_tokens, absl::Time start,
                     const v1::Timings& base,
                     std::optional<uint32_t> cached_prompt_tokens,
                     const NodeRef& node, const char* role,
                     grpc::ClientContext& dctx, ReaderPtr reader,
                     const std::function<ReaderPtr()>& open,
                     const std::function<void(v1::ReleaseReason)>& release,
                     std::optional<v1::DecodeResponse> first);
  // Waits for `ticket`'s turn in the admission queue: OK at its turn,
  // CANCELLED when the client left, RESOURCE_EXHAUSTED ("`full` and the
  // request's deadline passed while queued (`last_error`)") at `deadline`.
  grpc::Status WaitAdmission(AdmissionQueue::Ticket& ticket,
                             absl::Time deadline, CallWatcher::Scope& scope,
                             absl::string_view full,
                             const std::string& last_error);
  // Which path a request takes under options_.policy.
  bool RunColocated(size_t prompt_tokens);
  // The request on a colocated node (queued, like Reserve, while every
  // colocated node is full).
  grpc::Status GenerateColocated(
      RequestRecord* record, uint64_t id, const v1::GenerateRequest& req,
      const std::vector<int32_t>& prompt, const v1::SamplingParams& sampling,
      absl::Time start, absl::Time deadline, CallWatcher::Scope& scope,
      std::optional<TextStream>& text,
      grpc::ServerWriter<v1::GenerateResponse>* writer);
  // The best prefill node not in `tried` (--routing), and the prompt tokens
  // it is expected to hold (prefix-aware routing).
  std::optional<NodeRef> NextPrefill(const std::vector<uint64_t>& tried,
                                     std::span<const uint64_t> hashes,
                                     int64_t prompt_tokens,
                                     int64_t* predicted_tokens = nullptr);
  void ReleaseDecode(uint64_t id, const Reservation& r,
                     v1::ReleaseReason reason);

  NodeRegistry* registry_;
  const RouterOptions options_;
  // What each node's prefix cache likely holds, from what was sent where.
  PrefixIndex prefix_index_;
  RoutingCounters routing_;
  const tokenizer::Tokenizer* tokenizer_;
  std::optional<int32_t> tokenizer_eos_;
  // Before the watcher: its thread pokes the queue until it is joined.
  AdmissionQueue admission_;
  CallWatcher watcher_;
  uint64_t NewRequestId();
  grpc::Status CheckApiKey(const grpc::ServerContext& ctx) const;
  grpc::Status CheckMember(const grpc::ServerContext& ctx,
                           absl::string_view what) const;
  // The kernel's CSPRNG (getrandom / /dev/urandom).
  absl::Mutex id_mu_;
  std::random_device device_ ABSL_GUARDED_BY(id_mu_);
};

}  // namespace duet::router

#endif  // DUET_ROUTER_ROUTER_SERVICE_H_
