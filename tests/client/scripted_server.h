// A real duet.v1.Duet gRPC server for client tests: listens on 127.0.0.1
// with a kernel-chosen port, and answers each Generate by following a
// script (tokens, delays, chunking, a failure status at some point). Not a
// mock: the client under test goes through real HTTP/2 over localhost.
//
//   ScriptedDuetServer::Options options;
//   options.script = [](const v1::GenerateRequest& r, int64_t arrival) {
//     StreamScript s = EchoScript(r);
//     if (arrival % 4 == 1) s.failure = absl::ResourceExhaustedError("full");
//     return s;
//   };
//   auto server = ScriptedDuetServer::Start(std::move(options));
//   auto client = DuetClient::Create((*server)->address());
#ifndef DUET_TESTS_CLIENT_SCRIPTED_SERVER_H_
#define DUET_TESTS_CLIENT_SCRIPTED_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "duet/v1/client.pb.h"

namespace duet::client::testing {

// How the server answers one Generate call.
struct StreamScript {
  // Tokens to stream, in order.
  std::vector<int32_t> tokens;
  // Tokens per message (the last message may hold fewer).
  int chunk_size = 1;
  // Before the first message, and between later messages.
  absl::Duration first_token_delay = absl::Milliseconds(5);
  absl::Duration token_delay = absl::Milliseconds(1);
  v1::FinishReason finish_reason = v1::FINISH_REASON_MAX_TOKENS;
  // Put in GenerationFinished (with finish_reason ERROR, say).
  std::string error_message;
  // When not OK, the call ends with this status once `fail_after_tokens`
  // tokens were sent (0: before any message, like a router rejecting the
  // request).
  absl::Status failure;
  int fail_after_tokens = 0;
  // False: end with OK after the tokens but without GenerationFinished (a
  // protocol violation the client must flag).
  bool send_finished = true;
};

// `arrival` counts Generate calls in the order the server received them,
// from 0.
using ScriptFn =
    std::function<StreamScript(const v1::GenerateRequest&, int64_t arrival)>;

// Prompt tokens as this server counts them: the ids, or for a text prompt
// its bytes (a byte-level "tokenizer"); reported in GenerationFinished.usage.
int PromptLength(const v1::GenerateRequest& request);

// Token i of the echo script: the prompt (ids, or a text prompt's bytes),
// repeated.
int32_t EchoToken(const v1::GenerateRequest& request, int i);

// Validates like the router (INVALID_ARGUMENT unless exactly one of prompt
// and prompt_token_ids is set, or for max_tokens <= 0) and echoes the
// prompt: max_tokens tokens, or up to and including the first stop token
// (finish reason STOP_TOKEN).
StreamScript EchoScript(const v1::GenerateRequest& request);

class ScriptedDuetServer {
 public:
  struct Options {
    ScriptFn script = [](const v1::GenerateRequest& r, int64_t) {
      return EchoScript(r);
    };
    v1::HealthResponse health;
    v1::ListNodesResponse nodes;
  };

  static absl::StatusOr<std::unique_ptr<ScriptedDuetServer>> Start(
      Options options);
  ~ScriptedDuetServer();  // Shuts down, cancelling calls still running.

  // "127.0.0.1:<port>".
  const std::string& address() const { return address_; }
  int64_t generate_calls() const;
  // Most Generate calls that were open at the same time.
  int max_in_flight() const;
  // Calls the client cancelled (or whose deadline passed) before the end.
  int64_t cancelled_calls() const;

  struct State;

 private:
  ScriptedDuetServer() = default;
  std::unique_ptr<State> state_;
  std::string address_;
};

}  // namespace duet::client::testing

#endif  // DUET_TESTS_CLIENT_SCRIPTED_SERVER_H_
