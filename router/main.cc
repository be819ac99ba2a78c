// duet-router: the client-facing front door. Serves duet.v1.Duet (Generate,
// Health, ListNodes) to clients and duet.v1.Registry to nodes.
#include <grpcpp/grpcpp.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "chat/chat_template.h"
#include "common/flags.h"
#include "common/logging.h"
#include "http/server.h"
#include "metrics/metrics.h"
#include "metrics/metrics_server.h"
#include "router/node_registry.h"
#include "router/openai_gateway.h"
#include "router/router_metrics.h"
#include "router/router_service.h"
#include "security/api_keys.h"
#include "security/tls.h"
#include "tokenizer/tokenizer.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "host:port for clients and nodes (port 0 picks a free port)");
ABSL_FLAG(int32_t, heartbeat_interval_ms, 500,
          "how often nodes report their load");
ABSL_FLAG(int32_t, node_timeout_ms, 2000,
          "a node silent this long is taken out of rotation");
ABSL_FLAG(int32_t, request_timeout_ms, 300000,
          "deadline of a request whose client sets none");
ABSL_FLAG(int32_t, stream_idle_timeout_ms, 60000,
          "end a request whose decode node sent nothing for this long "
          "(UNAVAILABLE naming the node), even while the node heartbeats; "
          "0 = no limit");
ABSL_FLAG(int32_t, client_write_timeout_ms, 30000,
          "cancel a request (and free its KV) whose client reads nothing for "
          "this long while its stream's flow-control window is full; 0 = no "
          "limit");
ABSL_FLAG(int32_t, reservation_ttl_ms, 60000,
          "how long a decode node keeps a reservation whose Decode call "
          "never comes (the router died or failed mid-request)");
ABSL_FLAG(int32_t, max_queued_requests, 1024,
          "requests that may wait at once for KV space on the decode nodes "
          "(first come, first served); beyond it RESOURCE_EXHAUSTED at once");
ABSL_FLAG(int32_t, control_rpc_timeout_ms, 5000,
          "deadline of Reserve and Release calls to nodes");
ABSL_FLAG(std::string, policy, "auto",
          "where requests run: disagg (a prefill node, then a decode node), "
          "colocated (one colocated node runs each whole: duet-decode --role "
          "colocated) or auto (colocated when no prefill node is live, for "
          "prompts of at most --auto-colocated-prompt-tokens, or when every "
          "prefill node has --auto-prefill-queue-tokens queued; disagg "
          "otherwise, and always when no colocated node is live)");
ABSL_FLAG(std::string, routing, "prefix-aware",
          "prefix-aware: weigh each node's load against the prompt prefix its "
          "KV cache likely holds (by what the router sent where); "
          "least-loaded: load only");
ABSL_FLAG(int32_t, auto_colocated_prompt_tokens, 256,
          "--policy auto: prompts this short run colocated");
ABSL_FLAG(int64_t, auto_prefill_queue_tokens, 16384,
          "--policy auto: run colocated when even the least-loaded prefill "
          "node has this many prompt tokens queued");
ABSL_FLAG(std::string, model_name, "",
          "the model nodes must serve (last component of their --model); "
          "empty: the first node to register decides");
ABSL_FLAG(int32_t, http_port, 0,
          "also serve the OpenAI-compatible HTTP API (/v1/completions, "
          "/v1/chat/completions, /v1/models, ...; docs/HTTP.md) on this port "
          "of --listen's host; needs --tokenizer; 0 = off");
ABSL_FLAG(int32_t, metrics_port, 0,
          "serve Prometheus metrics (GET /metrics) and GET /health over HTTP "
          "on this port of --listen's host (for clusters without "
          "--http-port, which serves /metrics too); 0 = off");
ABSL_FLAG(std::string, tokenizer, "",
          "Hugging Face tokenizer.json (or a model directory holding one): "
          "enables text prompts, streamed text and stop strings");

namespace {

int Usage(const std::string& msg) {
  std::fprintf(stderr, "duet-router: %s\n", msg.c_str());
  return 2;
}

bool ValidHostPort(const std::string& a) {
  const size_t colon = a.rfind(':');
  int port = -1;
  return colon != std::string::npos && colon > 0 &&
         absl::SimpleAtoi(a.substr(colon + 1), &port) && port >= 0 &&
         port <= 65535;
}

}  // namespace

int main(int argc, char** argv) {
  // Block the shutdown signals before gRPC starts threads (see sigwait).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::SetProgramUsageMessage(
      "Router. Usage: duet-router [--listen HOST:PORT] (--tls-cert F "
      "--tls-key F --tls-ca F | --insecure) [--api-key-file F]");
  duet::ParseFlags(argc, argv);
  duet::SetLogPrefix("router", 0);
  const std::string listen = absl::GetFlag(FLAGS_listen);
  if (!ValidHostPort(listen)) {
    return Usage("--listen '" + listen + "' is not host:port");
  }
  const int32_t heartbeat = absl::GetFlag(FLAGS_heartbeat_interval_ms);
  const int32_t node_timeout = absl::GetFlag(FLAGS_node_timeout_ms);
  const int32_t request_timeout = absl::GetFlag(FLAGS_request_timeout_ms);
  const int32_t control_timeout = absl::GetFlag(FLAGS_control_rpc_timeout_ms);
  if (heartbeat <= 0 || request_timeout <= 0 || control_timeout <= 0) {
    return Usage(
        "--heartbeat-interval-ms, --request-timeout-ms and "
        "--control-rpc-timeout-ms must be > 0");
  }
  const int32_t idle_timeout = absl::GetFlag(FLAGS_stream_idle_timeout_ms);
  const int32_t max_queued = absl::GetFlag(FLAGS_max_queued_requests);
  const int32_t reservation_ttl = absl::GetFlag(FLAGS_reservation_ttl_ms);
  const int32_t write_timeout = absl::GetFlag(FLAGS_client_write_timeout_ms);
  if (write_timeout < 0) return Usage("--client-write-timeout-ms must be >= 0");
  if (reservation_ttl < 3000) {
    // A prefill must end 2 s before its reservation expires.
    return Usage("--reservation-ttl-ms must be >= 3000");
  }
  if (max_queued < 0) return Usage("--max-queued-requests must be >= 0");
  if (idle_timeout < 0) return Usage("--stream-idle-timeout-ms must be >= 0");
  const int32_t http_port = absl::GetFlag(FLAGS_http_port);
  if (http_port < 0 || http_port > 65535) {
    return Usage("--http-port must be in [0, 65535]");
  }
  const int32_t metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (metrics_port < 0 || metrics_port > 65535) {
    return Usage("--metrics-port must be in [0, 65535]");
  }
  if (http_port > 0 && absl::GetFlag(FLAGS_tokenizer).empty()) {
    return Usage("--http-port needs --tokenizer (the API speaks text)");
  }
  if (node_timeout <= heartbeat) {
    return Usage(
        "--node-timeout-ms must be larger than "
        "--heartbeat-interval-ms");
  }

  auto tls = duet::security::ReadTlsFlags(duet::security::Party::kRole);
  if (!tls.ok()) return Usage(std::string(tls.status().message()));
  auto api_keys = duet::security::ApiKeys::FromFlag();
  if (!api_keys.ok()) return Usage(std::string(api_keys.status().message()));
  if (!api_keys->required()) {
    DUET_LOG(WARNING) << "no --api-key-file: any client that reaches " << listen
                      << " may send requests";
  }
  duet::router::NodeRegistry registry(absl::Milliseconds(heartbeat),
                                      absl::Milliseconds(node_timeout),
                                      duet::security::ChannelCredentials(*tls));
  registry.set_expected_model(absl::GetFlag(FLAGS_model_name));
  duet::router::RouterOptions options;
  options.api_keys = &*api_keys;
  options.members_only = !tls->insecure;
  options.default_request_timeout = absl::Milliseconds(request_timeout);
  options.control_rpc_timeout = absl::Milliseconds(control_timeout);
  options.stream_idle_timeout = absl::Milliseconds(idle_timeout);
  options.max_queued_requests = max_queued;
  options.reservation_ttl = absl::Milliseconds(reservation_ttl);
  options.client_write_timeout = absl::Milliseconds(write_timeout);
  auto policy = duet::router::ParseServingPolicy(absl::GetFlag(FLAGS_policy));
  if (!policy.ok()) return Usage(std::string(policy.status().message()));
  options.policy = *policy;
  auto routing = duet::router::ParseRoutingMode(absl::GetFlag(FLAGS_routing));
  if (!routing.ok()) return Usage(std::string(routing.status().message()));
  options.routing = *routing;
  options.auto_colocated_prompt_tokens =
      absl::GetFlag(FLAGS_auto_colocated_prompt_tokens);
  options.auto_prefill_queue_tokens =
      absl::GetFlag(FLAGS_auto_prefill_queue_tokens);
  if (options.auto_colocated_prompt_tokens < 0 ||
      options.auto_prefill_queue_tokens < 0) {
    return Usage(
        "--auto-colocated-prompt-tokens and --auto-prefill-queue-tokens "
        "must be >= 0");
  }
  std::unique_ptr<duet::tokenizer::Tokenizer> tokenizer;
  std::string tokenizer_path = absl::GetFlag(FLAGS_tokenizer);
  if (!tokenizer_path.empty()) {
    if (std::filesystem::is_directory(tokenizer_path)) {
      tokenizer_path += "/tokenizer.json";
    }
    auto loaded = duet::tokenizer::Tokenizer::FromFile(tokenizer_path);
    if (!loaded.ok()) {
      return Usage("--tokenizer: " + std::string(loaded.status().message()));
    }
    tokenizer = std::move(*loaded);
  }
  // Metrics: the admission queue is read at each scrape, through a
  // pointer set once the service exists (before any server starts).
  duet::metrics::Registry metrics;
  duet::router::RouterService* service_for_metrics = nullptr;
  auto router_metrics =
      duet::router::RouterMetrics::Create(&metrics, [&service_for_metrics] {
        return service_for_metrics != nullptr
                   ? service_for_metrics->queued_requests()
                   : 0;
      });
  if (!router_metrics.ok()) {
    DUET_LOG(ERROR) << "metrics: " << router_metrics.status();
    return 1;
  }
  options.metrics = router_metrics->get();
  duet::router::RouterService service(&registry, options, tokenizer.get());
  service_for_metrics = &service;
  if (absl::Status s =
          duet::router::RegisterRoutingMetrics(&metrics, &service.routing());
      !s.ok()) {
    DUET_LOG(ERROR) << "metrics: " << s;
    return 1;
  }
  if (tokenizer != nullptr) {
    // tokenizer_config.json's eos_token (a string or {"content": ...}).
    const std::string config_path =
        std::filesystem::path(tokenizer_path).parent_path() /
        "tokenizer_config.json";
    std::ifstream in(config_path);
    if (in) {
      const nlohmann::json j =
          nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
      std::string eos;
      if (j.is_object() && j.contains("eos_token")) {
        const nlohmann::json& e = j["eos_token"];
        if (e.is_string()) eos = e.get<std::string>();
        if (e.is_object() && e.contains("content") &&
            e["content"].is_string()) {
          eos = e["content"].get<std::string>();
        }
      }
      if (!eos.empty()) {
        const std::optional<int32_t> id = tokenizer->TokenToId(eos);
        if (!id.has_value()) {
          return Usage("--tokenizer: eos_token '" + eos + "' of " +
                       config_path + " is not in the vocabulary");
        }
        service.set_tokenizer_eos(id);
      }
    }
  }

  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(
      listen,
      duet::security::ServerCredentials(*tls, /*require_client_cert=*/false),
      &port);
  builder.RegisterService(static_cast<duet::v1::Duet::Service*>(&service));
  builder.RegisterService(static_cast<duet::v1::Registry::Service*>(&service));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    DUET_LOG(ERROR) << "cannot listen on " << listen << " (port in use?)";
    return 1;
  }
  const std::string bound =
      listen.substr(0, listen.rfind(':')) + ":" + std::to_string(port);
  // The OpenAI-compatible API: a gateway onto this server's own Duet
  // service, so every check of the gRPC path applies to it.
  std::unique_ptr<duet::chat::ChatTemplate> chat_template;
  std::unique_ptr<duet::router::openai::Gateway> gateway;
  std::unique_ptr<duet::http::Server> http;
  std::string http_note;
  if (http_port > 0) {
    duet::router::openai::GatewayOptions g;
    const std::string dir =
        std::filesystem::path(tokenizer_path).parent_path().string();
    auto loaded = duet::chat::ChatTemplate::FromCheckpoint(dir);
    if (loaded.ok()) {
      chat_template =
          std::make_unique<duet::chat::ChatTemplate>(std::move(*loaded));
    } else {
      // Completions still work; chat requests say why they cannot.
      g.chat_template_error =
          "chat requests need the checkpoint's chat template: " +
          std::string(loaded.status().message());
      DUET_LOG(WARNING) << g.chat_template_error;
    }
    g.channel = server->InProcessChannel(grpc::ChannelArguments());
    g.tokenizer = tokenizer.get();
    g.chat_template = chat_template.get();
    g.api_keys = &*api_keys;
    g.request_timeout = absl::Milliseconds(request_timeout);
    g.served_model = [&registry] {
      duet::router::openai::ServedModel m;
      const auto nodes = registry.List(duet::v1::NODE_ROLE_UNSPECIFIED);
      m.name = nodes.empty() ? absl::GetFlag(FLAGS_model_name)
                             : nodes.front().model_name();
      m.name = duet::router::ModelBaseName(m.name);
      m.max_model_len = registry.MaxModelLen();
      return m;
    };
    gateway = std::make_unique<duet::router::openai::Gateway>(std::move(g));
    duet::http::ServerOptions h;
    h.host = listen.substr(0, listen.rfind(':'));
    if (h.host.size() > 2 && h.host.front() == '[') {
      h.host = h.host.substr(1, h.host.size() - 2);
    }
    if (h.host == "localhost") h.host = "127.0.0.1";
    h.port = http_port;
    auto started = duet::http::Server::Start(
        h,
        [gw = gateway.get(), &metrics](
            duet::http::Request req, std::shared_ptr<duet::http::Responder> r) {
          // /metrics beside the API, as vLLM's server has it.
          if (duet::metrics::HandleMetrics(metrics, req, *r)) return;
          gw->Handle(std::move(req), std::move(r));
        });
    if (!started.ok()) {
      DUET_LOG(ERROR) << "--http-port: " << started.status().message();
      return 1;
    }
    http = std::move(*started);
    http_note = "; OpenAI HTTP API on http://" +
                listen.substr(0, listen.rfind(':')) + ":" +
                std::to_string(http->port());
  }
  std::unique_ptr<duet::http::Server> metrics_http;
  if (metrics_port > 0) {
    auto started = duet::metrics::StartMetricsServer(
        duet::metrics::HttpHostOf(listen), metrics_port, &metrics);
    if (!started.ok()) {
      DUET_LOG(ERROR) << "--metrics-port: " << started.status().message();
      return 1;
    }
    metrics_http = std::move(*started);
    http_note += "; metrics on http://" + duet::metrics::HttpHostOf(listen) +
                 ":" + std::to_string(metrics_http->port()) + "/metrics";
  }
  const std::string text_mode =
      tokenizer == nullptr ? std::string("token ids only (no --tokenizer)")
                           : "text via " + tokenizer_path + " (vocab " +
                                 std::to_string(tokenizer->vocab_size()) + ")";
  std::printf(
      "duet-router serving duet.v1.Duet and duet.v1.Registry on %s "
      "(heartbeat %d ms, node timeout %d ms; %s%s)\n",
      bound.c_str(), heartbeat, node_timeout, text_mode.c_str(),
      http_note.c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  DUET_LOG(INFO) << "signal " << sig << ": shutting down";
  // HTTP first: its clients' calls are cancelled before gRPC waits for
  // calls to end.
  if (http != nullptr) http->Stop(absl::Seconds(1));
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  if (metrics_http != nullptr) metrics_http->Stop(absl::ZeroDuration());
  return 0;
}
