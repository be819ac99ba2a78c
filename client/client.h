// Client library for the router's public duet.v1.Duet service: one blocking
// streaming Generate with per-chunk callbacks and client-side latency
// measurements, plus Health and ListNodes.
//
//   auto client = duet::client::DuetClient::Create("127.0.0.1:50051");
//   duet::v1::GenerateRequest req = ...;
//   GenerateResult r = (*client)->Generate(req, {.timeout = absl::Seconds(30)},
//       [](const ChunkEvent& e) { Print(e.token_ids); return true; });
//   if (!r.status.ok()) ...
//
// gRPC stays behind this header (pimpl): callers see absl::Status and the
// duet.v1 protobuf messages only. grpc::Status becomes absl::Status inside
// client.cc, at the edge.
#ifndef DUET_CLIENT_CLIENT_H_
#define DUET_CLIENT_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "duet/v1/client.pb.h"

namespace grpc {
class Channel;
class ClientContext;
}  // namespace grpc

namespace duet::client {

using SteadyTime = std::chrono::steady_clock::time_point;

// Milliseconds between two steady_clock points, as a double so
// sub-millisecond gaps keep their precision.
double MsBetween(SteadyTime from, SteadyTime to);

// A channel to `address` ("host:port"): TLS verified against `tls_ca_pem`
// (the cluster's CA, PEM), plaintext when it is empty. Channels are expensive
// (a TCP connection plus HTTP/2 state) and multiplex any number of
// concurrent calls: create one per router and reuse it for every call, e.g.
// through one DuetClient shared by all threads. No keepalive pings: gRPC
// servers by default answer pings more frequent than every 5 minutes on a
// quiet connection with GOAWAY, and call deadlines already bound every wait.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const std::string& tls_ca_pem = "");

// How a client reaches the router.
struct ConnectOptions {
  // PEM of the cluster's CA: TLS to the router. Empty: plaintext.
  std::string tls_ca_pem;
  // Sent as `authorization: Bearer <key>` on every call. Empty: none.
  std::string api_key;
};

// One token-carrying message of a Generate stream, as the callback sees it.
struct ChunkEvent {
  // Tokens of this message (valid only during the callback); empty for the
  // text-only tail chunk a router with a tokenizer may send at the end.
  absl::Span<const int32_t> token_ids;
  // Text decoded from these tokens (router with a tokenizer and a text
  // request only); valid only during the callback.
  absl::string_view text;
  // Tokens received before this message.
  size_t tokens_before = 0;
  // When the message was read (steady_clock, taken right after the read
  // returned, before the callback runs).
  SteadyTime arrival;
  // arrival minus the start of the call, in ms.
  double ms_since_start = 0;
};

// Return false to cancel the call (the stream then ends with CANCELLED).
// Runs on the thread that called Generate.
using ChunkCallback = std::function<bool(const ChunkEvent&)>;

// Per-call settings.
struct GenerateOptions {
  // gRPC deadline of the whole call; the router fails the request with
  // DEADLINE_EXCEEDED when it passes. Must be > 0.
  absl::Duration timeout = absl::Seconds(60);
  // Wait for the channel to connect instead of failing fast with UNAVAILABLE
  // while the router is unreachable (gRPC wait_for_ready).
  bool wait_for_ready = false;
};

// Outcome of one Generate call.
struct GenerateResult {
  // OK only when the stream ended with gRPC OK after a GenerationFinished
  // whose reason is not ERROR. Otherwise the gRPC status (code + message);
  // DATA_LOSS if the stream ended OK without GenerationFinished; INTERNAL
  // with the server's error_message for FINISH_REASON_ERROR.
  absl::Status status;
  // Request id the router echoed (the client's, or the one it assigned).
  std::string request_id;
  // Every generated token, in order (also on failure: what arrived).
  std::vector<int32_t> tokens;
  // Concatenated text deltas (text requests only).
  std::string text;
  // The stop string that ended generation (FINISH_REASON_STOP_STRING).
  std::string matched_stop;
  // From GenerationFinished; all unset/zero when it never arrived.
  bool got_finished = false;
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  v1::Timings server_timings;

  // Client-side measurements, steady_clock, in ms. The call starts right
  // before the RPC is issued.
  SteadyTime start;
  // Start until the first message carrying a token; 0 if none arrived.
  double ttft_ms = 0;
  // Start until the stream ended (status received).
  double e2e_ms = 0;
  // Gaps between successive token-carrying messages (one entry per message
  // after the first). When the server packs several tokens into one message
  // they share that message's gap, so with chunking mean(itl_ms) exceeds the
  // per-token time; TPOT in the bench divides by tokens instead.
  std::vector<double> itl_ms;
  // Token-carrying messages received.
  size_t num_chunks = 0;
};

// A client of one router. Thread-safe: share one instance between threads;
// all calls multiplex over its single channel.
class DuetClient {
 public:
  // Fails with INVALID_ARGUMENT on an empty address; does not connect yet.
  static absl::StatusOr<std::unique_ptr<DuetClient>> Create(
      const std::string& address, const ConnectOptions& options = {});
  // Wraps an existing channel (tests, custom credentials).
  static std::unique_ptr<DuetClient> FromChannel(
      std::shared_ptr<grpc::Channel> channel, std::string address);
  ~DuetClient();
  DuetClient(const DuetClient&) = delete;
  DuetClient& operator=(const DuetClient&) = delete;

  const std::string& address() const { return address_; }

  // Connects the channel now; DEADLINE_EXCEEDED if it is not ready within
  // `timeout`. Benchmarks call it first so connection setup does not count
  // as the first request's TTFT.
  absl::Status WaitForConnected(absl::Duration timeout);

  // Runs one Generate call to completion, calling `on_chunk` (may be empty)
  // for each token-carrying message as it arrives. Blocks the calling
  // thread; run calls concurrently from several threads.
  GenerateResult Generate(const v1::GenerateRequest& request,
                          const GenerateOptions& options,
                          const ChunkCallback& on_chunk = nullptr);

  absl::StatusOr<v1::HealthResponse> Health(absl::Duration timeout);
  absl::StatusOr<v1::ListNodesResponse> ListNodes(v1::NodeRole role,
                                                  absl::Duration timeout);

 private:
  struct Impl;
  DuetClient(std::unique_ptr<Impl> impl, std::string address);
  void Authorize(grpc::ClientContext& context) const;

  std::unique_ptr<Impl> impl_;
  std::string address_;
  std::string api_key_;
};

// "MAX_TOKENS" for FINISH_REASON_MAX_TOKENS etc. (prefix dropped).
std::string FinishReasonName(v1::FinishReason reason);
// "PREFILL" / "DECODE" / "UNSPECIFIED".
std::string NodeRoleName(v1::NodeRole role);

}  // namespace duet::client

#endif  // DUET_CLIENT_CLIENT_H_
