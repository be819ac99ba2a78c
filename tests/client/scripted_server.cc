#include "tests/client/scripted_server.h"

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "duet/v1/client.grpc.pb.h"

namespace duet::client::testing {

struct ScriptedDuetServer::State {
  Options options;
  std::atomic<int64_t> arrivals{0};
  std::atomic<int64_t> cancelled{0};
  std::mutex mu;
  int in_flight = 0;
  int max_in_flight = 0;
  std::unique_ptr<v1::Duet::CallbackService> service;
  std::unique_ptr<grpc::Server> server;
};

namespace {

using State = ScriptedDuetServer::State;

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

// One Generate call. Delays use callback grpc::Alarms, so no thread sleeps
// and 100+ concurrent streams cost nothing. At most one alarm or write is
// pending at a time, and End (Finish) is only called when neither is, so OnDone
// (which deletes this) never races a callback.
class StreamReactor : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  StreamReactor(State* state, StreamScript script, std::string request_id,
                uint32_t prompt_tokens)
      : state_(state),
        script_(std::move(script)),
        request_id_(std::move(request_id)),
        prompt_tokens_(prompt_tokens) {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      ++state_->in_flight;
      state_->max_in_flight =
          std::max(state_->max_in_flight, state_->in_flight);
    }
    if (!script_.failure.ok() && script_.fail_after_tokens == 0) {
      End(ToGrpc(script_.failure));
      return;
    }
    After(script_.first_token_delay);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      End(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
    } else if (finished_sent_) {
      End(grpc::Status::OK);
    } else {
      After(script_.token_delay);
    }
  }

  void OnCancel() override {
    cancelled_ = true;
    state_->cancelled.fetch_add(1);
  }

  void OnDone() override { delete this; }

 private:
  // Leaves the in-flight count before the status goes out: the client can
  // only start its next request after reading the status, so a closed-loop
  // client at concurrency C is never seen with more than C calls open (
  // OnDone runs too late for that).
  void End(grpc::Status status) {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      --state_->in_flight;
    }
    Finish(std::move(status));
  }

  void After(absl::Duration delay) {
    // A fresh alarm each time: an Alarm's callback may still be returning
    // when the next one is needed. They are freed with the reactor.
    alarms_.push_back(std::make_unique<grpc::Alarm>());
    alarms_.back()->Set(
        std::chrono::system_clock::now() + absl::ToChronoNanoseconds(delay),
        [this](bool) { Step(); });
  }

  void Step() {
    if (cancelled_) {
      End(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by client"));
      return;
    }
    const int total = static_cast<int>(script_.tokens.size());
    if (!script_.failure.ok() && sent_ >= script_.fail_after_tokens) {
      End(ToGrpc(script_.failure));
      return;
    }
    response_.Clear();
    response_.set_request_id(request_id_);
    if (sent_ < total) {
      int end = std::min(total, sent_ + std::max(script_.chunk_size, 1));
      if (!script_.failure.ok()) end = std::min(end, script_.fail_after_tokens);
      auto* ids = response_.mutable_chunk()->mutable_token_ids();
      ids->Add(script_.tokens.begin() + sent_, script_.tokens.begin() + end);
      sent_ = end;
      StartWrite(&response_);
      return;
    }
    if (!script_.send_finished) {
      End(grpc::Status::OK);
      return;
    }
    v1::GenerationFinished* f = response_.mutable_finished();
    f->set_finish_reason(script_.finish_reason);
    f->set_error_message(script_.error_message);
    f->mutable_usage()->set_prompt_tokens(prompt_tokens_);
    f->mutable_usage()->set_completion_tokens(total);
    // Plausible timings, so clients have something to print and average.
    v1::Timings* t = f->mutable_timings();
    const double first_ms =
        absl::ToDoubleMilliseconds(script_.first_token_delay);
    const double gap_ms = absl::ToDoubleMilliseconds(script_.token_delay);
    t->set_queue_ms(0.5);
    t->set_prefill_ms(first_ms);
    t->set_transfer_ms(0.25);
    t->set_ttft_ms(first_ms);
    t->set_decode_ms(total > 1 ? gap_ms * (total - 1) : 0);
    t->set_mean_itl_ms(total > 1 ? gap_ms : 0);
    finished_sent_ = true;
    StartWrite(&response_);
  }

 private:
  State* state_;
  StreamScript script_;
  std::string request_id_;
  uint32_t prompt_tokens_;
  std::atomic<bool> cancelled_{false};
  int sent_ = 0;
  bool finished_sent_ = false;
  v1::GenerateResponse response_;
  std::vector<std::unique_ptr<grpc::Alarm>> alarms_;
};

class Service : public v1::Duet::CallbackService {
 public:
  explicit Service(State* state) : state_(state) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context,
      const v1::GenerateRequest* request) override {
    const int64_t arrival = state_->arrivals.fetch_add(1);
    std::string id = request->request_id().empty()
                         ? absl::StrCat("scripted-", arrival)
                         : request->request_id();
    return new StreamReactor(state_, state_->options.script(*request, arrival),
                             std::move(id), PromptLength(*request));
  }

  grpc::ServerUnaryReactor* Health(grpc::CallbackServerContext* context,
                                   const v1::HealthRequest*,
                                   v1::HealthResponse* response) override {
    *response = state_->options.health;
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* ListNodes(
      grpc::CallbackServerContext* context, const v1::ListNodesRequest* request,
      v1::ListNodesResponse* response) override {
    for (const v1::NodeInfo& node : state_->options.nodes.nodes()) {
      if (request->role() == v1::NODE_ROLE_UNSPECIFIED ||
          request->role() == node.role()) {
        *response->add_nodes() = node;
      }
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  State* state_;
};

}  // namespace

int PromptLength(const v1::GenerateRequest& request) {
  return request.prompt_token_ids().empty()
             ? static_cast<int>(request.prompt().size())
             : request.prompt_token_ids_size();
}

int32_t EchoToken(const v1::GenerateRequest& request, int i) {
  if (request.prompt_token_ids().empty()) {
    return static_cast<unsigned char>(
        request.prompt()[i % request.prompt().size()]);
  }
  return request.prompt_token_ids(i % request.prompt_token_ids_size());
}

StreamScript EchoScript(const v1::GenerateRequest& request) {
  StreamScript script;
  if (request.prompt_token_ids().empty() == request.prompt().empty()) {
    script.failure = absl::InvalidArgumentError(
        "set exactly one of prompt and prompt_token_ids");
    return script;
  }
  const v1::SamplingParams& sampling = request.sampling();
  if (sampling.max_tokens() <= 0) {
    script.failure = absl::InvalidArgumentError(absl::StrCat(
        "sampling.max_tokens must be > 0, got ", sampling.max_tokens()));
    return script;
  }
  for (int i = 0; i < sampling.max_tokens(); ++i) {
    const int32_t token = EchoToken(request, i);
    script.tokens.push_back(token);
    if (std::find(sampling.stop_token_ids().begin(),
                  sampling.stop_token_ids().end(),
                  token) != sampling.stop_token_ids().end()) {
      script.finish_reason = v1::FINISH_REASON_STOP_TOKEN;
      break;
    }
  }
  return script;
}

absl::StatusOr<std::unique_ptr<ScriptedDuetServer>> ScriptedDuetServer::Start(
    Options options) {
  std::unique_ptr<ScriptedDuetServer> server(new ScriptedDuetServer());
  server->state_ = std::make_unique<State>();
  State* state = server->state_.get();
  state->options = std::move(options);
  state->service = std::make_unique<Service>(state);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(state->service.get());
  state->server = builder.BuildAndStart();
  if (state->server == nullptr || port == 0) {
    return absl::UnavailableError("could not start the scripted server");
  }
  server->address_ = absl::StrCat("127.0.0.1:", port);
  return server;
}

ScriptedDuetServer::~ScriptedDuetServer() {
  if (state_ != nullptr && state_->server != nullptr) {
    // Cancels whatever is still open after the grace period; reactors then
    // finish and delete themselves before Shutdown returns.
    state_->server->Shutdown(std::chrono::system_clock::now() +
                             std::chrono::milliseconds(200));
    state_->server->Wait();
  }
}

int64_t ScriptedDuetServer::generate_calls() const {
  return state_->arrivals.load();
}

int ScriptedDuetServer::max_in_flight() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->max_in_flight;
}

int64_t ScriptedDuetServer::cancelled_calls() const {
  return state_->cancelled.load();
}

}  // namespace duet::client::testing
