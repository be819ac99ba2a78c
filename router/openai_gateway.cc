#include "router/openai_gateway.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"
#include "router/node_registry.h"
#include "router/openai_logprobs.h"

namespace duet::router::openai {

using json = nlohmann::ordered_json;

struct Gateway::State {
  GatewayOptions options;
  std::unique_ptr<v1::Duet::Stub> stub;
  int64_t started = absl::ToUnixSeconds(absl::Now());
};

namespace {

constexpr absl::string_view kJson = "application/json";

std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void SendError(http::Responder& r, const ApiError& e,
               http::Responder::Headers extra = {}) {
  r.Send(e.http_status, kJson, ErrorBody(e), std::move(extra));
}

ApiError Error(int status, std::string type, std::string message,
               std::string code = "") {
  ApiError e;
  e.http_status = status;
  e.type = std::move(type);
  e.message = std::move(message);
  e.code = std::move(code);
  return e;
}

// The router's status codes in HTTP terms, each message ending with what
// the client can do about it. `timeout` is the gateway's own deadline.
ApiError FromGrpc(const grpc::Status& s, absl::Duration timeout) {
  const std::string& m = s.error_message();
  switch (s.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      return Error(400, "invalid_request_error", m);
    case grpc::StatusCode::UNAUTHENTICATED:
      return Error(401, "authentication_error", m, "invalid_api_key");
    case grpc::StatusCode::PERMISSION_DENIED:
      return Error(403, "permission_error", m);
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      // The router's admission queue says "retry later" itself.
      return Error(
          429, "rate_limit_error",
          absl::StrContains(m, "retry") ? m : absl::StrCat(m, "; retry later"),
          "rate_limit_exceeded");
    case grpc::StatusCode::UNAVAILABLE:
      return Error(503, "service_unavailable",
                   absl::StrCat(m,
                                "; retry later (GET /health answers 200 once "
                                "a request can be scheduled)"));
    case grpc::StatusCode::DEADLINE_EXCEEDED: {
      // gRPC's own "Deadline Exceeded" says nothing the code does not.
      const bool bare = m.empty() || m == "Deadline Exceeded";
      return Error(504, "timeout",
                   absl::StrCat("the request did not finish within ",
                                absl::ToInt64Milliseconds(timeout),
                                " ms (the router's --request-timeout-ms)",
                                bare ? "" : ": ", bare ? "" : m,
                                "; ask for fewer tokens (max_tokens) or "
                                "split the work"));
    }
    default:
      return Error(500, "internal_error",
                   absl::StrCat(grpc::StatusCode(s.error_code()), ": ", m));
  }
}

std::string NewId(absl::string_view prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("%s-%016x%016x", prefix, rng(), rng());
}

// The Authorization header as gRPC metadata (printable ASCII only).
std::optional<ApiError> CheckHeaderValue(absl::string_view v) {
  for (char c : v) {
    if (c < 0x20 || c > 0x7e) {
      return Error(401, "authentication_error",
                   "the Authorization header holds characters other than "
                   "printable ASCII",
                   "invalid_api_key");
    }
  }
  return std::nullopt;
}

const char* FinishReasonText(v1::FinishReason r) {
  return r == v1::FINISH_REASON_MAX_TOKENS ? "length" : "stop";
}

class Call;

// One /v1/(chat/)completions request: its Generate calls (prompts x n, one
// per choice) and the HTTP response they feed.
class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(std::shared_ptr<Gateway::State> state, Plan plan,
           std::shared_ptr<http::Responder> responder,
           std::string authorization)
      : state_(std::move(state)),
        plan_(std::move(plan)),
        responder_(std::move(responder)),
        authorization_(std::move(authorization)),
        id_(NewId(plan_.chat ? "chatcmpl" : "cmpl")),
        created_(absl::ToUnixSeconds(absl::Now())) {}

  void Start();
  // From the calls (gRPC threads). OnMessage returns whether the call may
  // read its next message at once (otherwise Resume does, once the client
  // has the bytes).
  bool OnMessage(int choice, const v1::GenerateResponse& msg);
  void OnDone(int choice, const grpc::Status& status);
  void Resume(int choice);
  void Cancel();

 private:
  struct Choice {
    std::string text;
    // With logprobs: a whole response's tokens and their logprobs, or a
    // stream's builder (text offsets run on across chunks).
    v1::TokenChunk tokens;
    std::optional<LogprobsBuilder> builder;
    const char* finish_reason = nullptr;
    uint32_t prompt_tokens = 0;
    uint32_t cached_prompt_tokens = 0;
    uint32_t completion_tokens = 0;
    bool awaiting_write = false;
    bool done = false;
  };

  json Chunk(int choice, json payload) const;
  LogprobsBuilder NewBuilder() const {
    return LogprobsBuilder(state_->options.tokenizer, plan_.chat,
                           plan_.top_logprobs);
  }
  void StartStreamLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  json Usage() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CancelCalls(const std::vector<int>& resume);

  const std::shared_ptr<Gateway::State> state_;
  const Plan plan_;
  const std::shared_ptr<http::Responder> responder_;
  const std::string authorization_;
  const std::string id_;
  const int64_t created_;
  std::vector<std::unique_ptr<Call>> calls_;  // fixed once started

  absl::Mutex mu_;
  std::vector<Choice> choices_ ABSL_GUARDED_BY(mu_);
  int remaining_ ABSL_GUARDED_BY(mu_) = 0;
  bool stream_started_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;  // the client left
  std::optional<ApiError> error_ ABSL_GUARDED_BY(mu_);
  // Keeps this alive until every call is done.
  std::shared_ptr<Exchange> self_ ABSL_GUARDED_BY(mu_);
};

class Call : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  Call(Exchange* exchange, int choice) : exchange_(exchange), choice_(choice) {}
  void Begin(v1::Duet::Stub* stub) {
    stub->async()->Generate(&ctx_, &req_, this);
    StartRead(&msg_);
    StartCall();
  }
  // After OnMessage returned false: the read it held back, and the hold
  // that kept OnDone from running meanwhile released.
  void ReadNext() {
    StartRead(&msg_);
    RemoveHold();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    // Taken before the message can reach the client: the next read may be
    // started from outside a reaction (Resume, Cancel), and OnDone must not
    // run before it.
    AddHold();
    if (exchange_->OnMessage(choice_, msg_)) ReadNext();
  }
  void OnDone(const grpc::Status& s) override {
    exchange_->OnDone(choice_, s);  // may destroy this: the last statement
  }

  grpc::ClientContext ctx_;
  v1::GenerateRequest req_;

 private:
  Exchange* const exchange_;
  const int choice_;
  v1::GenerateResponse msg_;
};

void Exchange::Start() {
  const int total = static_cast<int>(plan_.prompts.size()) * plan_.n;
  {
    absl::MutexLock lock(&mu_);
    choices_.resize(total);
    if (plan_.logprobs) {
      for (Choice& c : choices_) c.builder.emplace(NewBuilder());
    }
    remaining_ = total;
    self_ = shared_from_this();
  }
  const absl::Time deadline = absl::Now() + state_->options.request_timeout;
  for (int i = 0; i < total; ++i) {
    auto call = std::make_unique<Call>(this, i);
    call->req_ = plan_.prompts[i / plan_.n];
    call->req_.set_request_id(absl::StrCat(id_, "-", i));
    v1::SamplingParams* s = call->req_.mutable_sampling();
    // Choice k of a seeded request replays as the gRPC request with seed
    // + k (the same seed would give n identical choices).
    if (s->has_seed())
      s->set_seed(s->seed() + static_cast<uint64_t>(i % plan_.n));
    call->ctx_.set_deadline(absl::ToChronoTime(deadline));
    if (!authorization_.empty()) {
      call->ctx_.AddMetadata("authorization", authorization_);
    }
    calls_.push_back(std::move(call));
  }
  std::weak_ptr<Exchange> weak = shared_from_this();
  responder_->OnClose([weak] {
    if (auto self = weak.lock()) self->Cancel();
  });
  for (auto& call : calls_) call->Begin(state_->stub.get());
}

json Exchange::Chunk(int choice, json payload) const {
  json c;
  c["id"] = id_;
  c["object"] = plan_.chat ? "chat.completion.chunk" : "text_completion";
  c["created"] = created_;
  c["model"] = plan_.model;
  json ch;
  ch["index"] = choice;
  ch["logprobs"] = nullptr;
  for (auto& [k, v] : payload.items()) ch[k] = v;
  if (!ch.contains("finish_reason")) ch["finish_reason"] = nullptr;
  c["choices"] = json::array({ch});
  if (plan_.include_usage) c["usage"] = nullptr;
  return c;
}

void Exchange::StartStreamLocked() {
  if (stream_started_) return;
  stream_started_ = true;
  responder_->StartStream(200, "text/event-stream");
  if (plan_.chat) {
    for (int i = 0; i < static_cast<int>(choices_.size()); ++i) {
      json delta;
      delta["delta"]["role"] = "assistant";
      delta["delta"]["content"] = "";
      responder_->Write("data: " + Dump(Chunk(i, delta)) + "\n\n");
    }
  }
}

bool Exchange::OnMessage(int i, const v1::GenerateResponse& msg) {
  absl::MutexLock lock(&mu_);
  if (cancelled_ || error_.has_value()) return true;  // drain
  Choice& c = choices_[i];
  if (msg.has_finished()) {
    const v1::GenerationFinished& f = msg.finished();
    c.prompt_tokens = f.usage().prompt_tokens();
    c.cached_prompt_tokens = f.usage().cached_prompt_tokens();
    c.completion_tokens = f.usage().completion_tokens();
    if (f.finish_reason() == v1::FINISH_REASON_ERROR ||
        f.finish_reason() == v1::FINISH_REASON_CANCELLED) {
      error_ = Error(500, "internal_error",
                     f.error_message().empty() ? "generation was cancelled"
                                               : f.error_message());
      return true;
    }
    c.finish_reason = FinishReasonText(f.finish_reason());
    if (plan_.stream) {
      StartStreamLocked();
      json payload;
      if (plan_.chat) {
        payload["delta"] = json::object();
      } else {
        payload["text"] = "";
      }
      payload["finish_reason"] = c.finish_reason;
      responder_->Write("data: " + Dump(Chunk(i, payload)) + "\n\n");
    }
    return true;
  }
  const v1::TokenChunk& chunk = msg.chunk();
  const std::string& delta = chunk.text();
  // The router cut both at a stop string; they match one to one.
  const bool with_logprobs = plan_.logprobs && !chunk.token_ids().empty();
  if (!plan_.stream) {
    c.text += delta;
    if (with_logprobs) {
      // Pairs only, so one short chunk cannot shift the later ones.
      const int n = std::min(chunk.token_ids_size(), chunk.logprobs_size());
      for (int k = 0; k < n; ++k) {
        c.tokens.add_token_ids(chunk.token_ids(k));
        *c.tokens.add_logprobs() = chunk.logprobs(k);
      }
    }
    return true;
  }
  StartStreamLocked();
  // Empty text: bytes of a character still held back. Its tokens' logprobs
  // still go out now, with an empty delta.
  if (delta.empty() && !with_logprobs) return true;
  json payload;
  if (plan_.chat) {
    payload["delta"]["content"] = delta;
  } else {
    payload["text"] = delta;
  }
  if (with_logprobs) {
    payload["logprobs"] = c.builder->Build(chunk);
  }
  c.awaiting_write = true;
  std::weak_ptr<Exchange> weak = shared_from_this();
  responder_->Write("data: " + Dump(Chunk(i, payload)) + "\n\n", [weak, i] {
    if (auto self = weak.lock()) self->Resume(i);
  });
  return false;
}

void Exchange::Resume(int i) {
  {
    absl::MutexLock lock(&mu_);
    if (!choices_[i].awaiting_write) return;
    choices_[i].awaiting_write = false;
  }
  calls_[i]->ReadNext();
}

void Exchange::CancelCalls(const std::vector<int>& resume) {
  for (auto& call : calls_) call->ctx_.TryCancel();
  // A call waiting for its last write to reach the client reads again so
  // that it can see the cancellation and finish.
  for (int i : resume) calls_[i]->ReadNext();
}

void Exchange::Cancel() {
  std::vector<int> resume;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_ || remaining_ == 0) return;
    cancelled_ = true;
    for (int i = 0; i < static_cast<int>(choices_.size()); ++i) {
      if (choices_[i].awaiting_write) {
        choices_[i].awaiting_write = false;
        resume.push_back(i);
      }
    }
  }
  CancelCalls(resume);
}

json Exchange::Usage() const {
  uint32_t prompt = 0;
  uint32_t cached = 0;
  uint32_t completion = 0;
  for (size_t i = 0; i < choices_.size(); ++i) {
    // The prompt counts once however many choices it has (and so do its
    // cached tokens: those of its first choice's request).
    if (i % plan_.n == 0) {
      prompt += choices_[i].prompt_tokens;
      cached += choices_[i].cached_prompt_tokens;
    }
    completion += choices_[i].completion_tokens;
  }
  json u;
  u["prompt_tokens"] = prompt;
  u["completion_tokens"] = completion;
  u["total_tokens"] = prompt + completion;
  // vLLM's shape and rule: only when some prompt token came from a prefix
  // cache, so a client never reads "0 cached" from a path that does not
  // count them (the colocated one, for now).
  if (cached > 0) u["prompt_tokens_details"]["cached_tokens"] = cached;
  return u;
}

void Exchange::FinishLocked() {
  if (cancelled_) return;  // nobody to answer
  if (error_.has_value()) {
    if (stream_started_) {
      responder_->Write("data: " + ErrorBody(*error_) + "\n\n");
      responder_->Write("data: [DONE]\n\n");
      responder_->EndStream();
    } else {
      SendError(*responder_, *error_);
    }
    return;
  }
  if (plan_.stream) {
    StartStreamLocked();
    if (plan_.include_usage) {
      json c;
      c["id"] = id_;
      c["object"] = plan_.chat ? "chat.completion.chunk" : "text_completion";
      c["created"] = created_;
      c["model"] = plan_.model;
      c["choices"] = json::array();
      c["usage"] = Usage();
      responder_->Write("data: " + Dump(c) + "\n\n");
    }
    responder_->Write("data: [DONE]\n\n");
    responder_->EndStream();
    return;
  }
  json out;
  out["id"] = id_;
  out["object"] = plan_.chat ? "chat.completion" : "text_completion";
  out["created"] = created_;
  out["model"] = plan_.model;
  out["choices"] = json::array();
  for (int i = 0; i < static_cast<int>(choices_.size()); ++i) {
    json ch;
    ch["index"] = i;
    if (plan_.chat) {
      ch["message"]["role"] = "assistant";
      ch["message"]["content"] = choices_[i].text;
    } else {
      ch["text"] = choices_[i].text;
    }
    ch["logprobs"] = nullptr;
    if (plan_.logprobs) {
      ch["logprobs"] = NewBuilder().Build(choices_[i].tokens);
    }
    ch["finish_reason"] = choices_[i].finish_reason;
    out["choices"].push_back(std::move(ch));
  }
  out["usage"] = Usage();
  responder_->Send(200, kJson, Dump(out));
}

void Exchange::OnDone(int i, const grpc::Status& status) {
  // Other calls may finish (and drop self_) while this one still works.
  std::shared_ptr<Exchange> keep = shared_from_this();
  std::shared_ptr<Exchange> release;
  bool cancel_others = false;
  {
    absl::MutexLock lock(&mu_);
    choices_[i].done = true;
    if (!status.ok() && !cancelled_ && !error_.has_value()) {
      error_ = FromGrpc(status, state_->options.request_timeout);
      cancel_others = remaining_ > 1;
    } else if (status.ok() && !cancelled_ && !error_.has_value() &&
               choices_[i].finish_reason == nullptr) {
      error_ = Error(500, "internal_error",
                     "the generation stream ended without a finish message");
      cancel_others = remaining_ > 1;
    }
    if (--remaining_ == 0) {
      FinishLocked();
      release = std::move(self_);
    }
  }
  if (cancel_others) {
    std::vector<int> resume;
    {
      absl::MutexLock lock(&mu_);
      for (int k = 0; k < static_cast<int>(choices_.size()); ++k) {
        if (choices_[k].awaiting_write) {
          choices_[k].awaiting_write = false;
          resume.push_back(k);
        }
      }
    }
    for (int k = 0; k < static_cast<int>(calls_.size()); ++k) {
      if (k != i) calls_[k]->ctx_.TryCancel();
    }
    for (int k : resume) calls_[k]->ReadNext();
  }
  // `keep` may hold the last reference: this Exchange and its calls
  // (the caller included) go away here, after which nothing is touched.
}

json ModelObject(const ServedModel& m, int64_t created) {
  json o;
  o["id"] = m.name;
  o["object"] = "model";
  o["created"] = created;
  o["owned_by"] = "duet";
  o["root"] = m.name;
  o["max_model_len"] = m.max_model_len;
  return o;
}

}  // namespace

Gateway::Gateway(GatewayOptions options) : state_(std::make_shared<State>()) {
  state_->stub = v1::Duet::NewStub(options.channel);
  state_->options = std::move(options);
}

Gateway::~Gateway() = default;

void Gateway::Handle(http::Request req, std::shared_ptr<http::Responder> r) {
  const GatewayOptions& o = state_->options;
  struct Route {
    const char* path;
    const char* method;
  };
  static constexpr Route kRoutes[] = {
      {"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
      {"/v1/models", "GET"},       {"/health", "GET"},
      {"/tokenize", "POST"},       {"/detokenize", "POST"},
  };
  const bool model_path = absl::StartsWith(req.path, "/v1/models/");
  const char* allowed = model_path ? "GET" : nullptr;
  for (const Route& route : kRoutes) {
    if (req.path == route.path) allowed = route.method;
  }
  if (allowed == nullptr) {
    return SendError(
        *r, Error(404, "invalid_request_error",
                  absl::StrCat("no such endpoint: ", req.method, " ", req.path),
                  "not_found"));
  }
  if (req.method != allowed) {
    return SendError(
        *r,
        Error(405, "invalid_request_error",
              absl::StrCat(req.path, " takes ", allowed, ", not ", req.method),
              "method_not_allowed"),
        {{"Allow", allowed}});
  }
  const std::string authorization(req.Header("authorization"));
  if (auto e = CheckHeaderValue(authorization)) return SendError(*r, *e);

  if (req.path == "/health") {
    // The router's own Health, as a gRPC client would see it.
    struct HealthCall {
      grpc::ClientContext ctx;
      v1::HealthRequest req;
      v1::HealthResponse resp;
    };
    auto call = std::make_shared<HealthCall>();
    call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    state_->stub->async()->Health(
        &call->ctx, &call->req, &call->resp, [call, r](grpc::Status s) {
          if (!s.ok()) return SendError(*r, FromGrpc(s, absl::Seconds(5)));
          json j;
          j["status"] = call->resp.serving() ? "ok" : "unavailable";
          j["model"] = ModelBaseName(call->resp.model_name());
          j["prefill_nodes"] = call->resp.num_prefill_nodes();
          j["decode_nodes"] = call->resp.num_decode_nodes();
          r->Send(call->resp.serving() ? 200 : 503, kJson, Dump(j));
        });
    return;
  }
  ParseContext ctx;
  ctx.tokenizer = o.tokenizer;
  ctx.chat_template = o.chat_template;
  ctx.chat_template_error = o.chat_template_error;
  ctx.model = o.served_model();
  ctx.max_n = o.max_n;
  if (req.path == "/v1/completions" || req.path == "/v1/chat/completions") {
    auto plan =
        ParseGenerate(req.body, req.path == "/v1/chat/completions", ctx);
    if (auto* e = std::get_if<ApiError>(&plan)) return SendError(*r, *e);
    auto exchange = std::make_shared<Exchange>(
        state_, std::move(std::get<Plan>(plan)), r, authorization);
    exchange->Start();
    return;
  }
  // The rest never reach Generate: check the key here.
  if (o.api_keys != nullptr) {
    if (absl::Status s = o.api_keys->Check(authorization); !s.ok()) {
      return SendError(*r, Error(401, "authentication_error",
                                 std::string(s.message()), "invalid_api_key"));
    }
  }
  if (req.path == "/v1/models" || model_path) {
    const int64_t created = state_->started;
    if (model_path) {
      const std::string id = req.path.substr(strlen("/v1/models/"));
      if (ctx.model.name.empty() || id != ctx.model.name) {
        ApiError e = Error(404, "invalid_request_error",
                           absl::StrCat("The model '", id, "' does not exist"),
                           "model_not_found");
        e.param = "model";
        return SendError(*r, e);
      }
      return r->Send(200, kJson, Dump(ModelObject(ctx.model, created)));
    }
    json j;
    j["object"] = "list";
    j["data"] = json::array();
    if (!ctx.model.name.empty()) {
      j["data"].push_back(ModelObject(ctx.model, created));
    }
    return r->Send(200, kJson, Dump(j));
  }
  auto parsed = ParseJsonObject(req.body);
  if (auto* e = std::get_if<ApiError>(&parsed)) return SendError(*r, *e);
  const json& body = std::get<json>(parsed);
  if (auto m = body.find("model"); m != body.end() && !m->is_null()) {
    if (!m->is_string() || m->get<std::string>() != ctx.model.name) {
      ApiError e = Error(404, "invalid_request_error",
                         absl::StrCat("The model ", m->dump(),
                                      " does not exist; this server serves '",
                                      ctx.model.name, "'"),
                         "model_not_found");
      e.param = "model";
      return SendError(*r, e);
    }
  }
  if (req.path == "/tokenize") {
    const bool chat = body.contains("messages");
    std::string text;
    if (chat) {
      auto rendered = RenderChat(body, ctx);
      if (auto* e = std::get_if<ApiError>(&rendered)) return SendError(*r, *e);
      text = std::get<std::string>(rendered);
    } else {
      auto p = body.find("prompt");
      if (p == body.end() || !p->is_string()) {
        return SendError(*r, BadRequest("prompt",
                                        "'prompt' must be a string (or send "
                                        "'messages')"));
      }
      text = p->get<std::string>();
    }
    bool add_special = !chat;
    if (auto a = body.find("add_special_tokens");
        a != body.end() && !a->is_null()) {
      if (!a->is_boolean()) {
        return SendError(*r, BadRequest("add_special_tokens",
                                        "'add_special_tokens' must be a "
                                        "boolean"));
      }
      add_special = a->get<bool>();
    }
    auto ids = o.tokenizer->Encode(text, add_special);
    if (!ids.ok()) {
      return SendError(*r, BadRequest(chat ? "messages" : "prompt",
                                      std::string(ids.status().message())));
    }
    json j;
    j["count"] = ids->size();
    j["max_model_len"] = ctx.model.max_model_len;
    j["tokens"] = *ids;
    return r->Send(200, kJson, Dump(j));
  }
  // /detokenize
  auto t = body.find("tokens");
  std::vector<int32_t> ids;
  bool ok = t != body.end() && t->is_array();
  if (ok) {
    for (const json& e : *t) {
      if (!e.is_number_integer() && !e.is_number_unsigned()) {
        ok = false;
        break;
      }
      ids.push_back(e.get<int32_t>());
    }
  }
  if (!ok) {
    return SendError(
        *r, BadRequest("tokens", "'tokens' must be an array of token ids"));
  }
  auto text = o.tokenizer->Decode(ids, /*skip_special_tokens=*/false);
  if (!text.ok()) {
    return SendError(
        *r, BadRequest("tokens", std::string(text.status().message())));
  }
  json j;
  j["prompt"] = *text;
  r->Send(200, kJson, Dump(j));
}

}  // namespace duet::router::openai
