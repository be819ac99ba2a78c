// The OpenAI-compatible HTTP API of the router (docs/HTTP.md): POST
// /v1/completions, POST /v1/chat/completions (whole or streamed as
// server-sent events), GET /v1/models, GET /health, POST /tokenize, POST
// /detokenize.
//
// A gateway, not a second serving path: every generation is a call to the
// router's own duet.v1.Duet service over an in-process channel, so API
// keys (the HTTP Authorization header becomes the call's `authorization`
// metadata), validation, admission, queueing, deadlines and cancellation
// are exactly the gRPC path's. Text comes from the router's detokenizer
// (GenerateRequest.return_text); this layer only reshapes it. gRPC calls use
// the callback API and the HTTP side is event-driven, so a stream costs no
// thread here; a call reads its next message only once the previous one
// is on the client's socket (backpressure reaches the router's
// --client-write-timeout-ms), and a client that disconnects cancels its
// calls, which frees their KV.
#ifndef DUET_ROUTER_OPENAI_GATEWAY_H_
#define DUET_ROUTER_OPENAI_GATEWAY_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>

#include "chat/chat_template.h"
#include "duet/v1/client.grpc.pb.h"
#include "http/server.h"
#include "router/openai_request.h"
#include "security/api_keys.h"
#include "tokenizer/tokenizer.h"

namespace duet::router::openai {

struct GatewayOptions {
  // An in-process channel to the router's server (grpc::Server::
  // InProcessChannel).
  std::shared_ptr<grpc::Channel> channel;
  const tokenizer::Tokenizer* tokenizer = nullptr;  // required
  // May be null (chat requests are then 400 with chat_template_error).
  const chat::ChatTemplate* chat_template = nullptr;
  std::string chat_template_error =
      "the served checkpoint has no chat template";
  // Keys for the endpoints that do not call Generate (/v1/models,
  // /tokenize, /detokenize); Generate checks its own.
  const security::ApiKeys* api_keys = nullptr;
  // The served model as the registry knows it.
  std::function<ServedModel()> served_model;
  // Deadline of each Generate call.
  absl::Duration request_timeout = absl::Minutes(5);
  // Choices per request (prompts x n).
  int max_n = 128;
};

class Gateway {
 public:
  explicit Gateway(GatewayOptions options);
  ~Gateway();

  // The http::Handler.
  void Handle(http::Request request, std::shared_ptr<http::Responder> r);

  // Shared with calls in flight, which may outlive the Gateway object.
  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace duet::router::openai

#endif  // DUET_ROUTER_OPENAI_GATEWAY_H_
