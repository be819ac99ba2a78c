// duet-cli: talk to a duet router from the shell.
//
//   duet-cli generate --router host:port --prompt-ids 1,2,3 --max-tokens 32
//   duet-cli nodes --router host:port [--role prefill|decode]
//   duet-cli health --router host:port
//
// Exit codes: 0 ok; 1 the RPC failed (its status code and message go to
// stderr); 2 usage error (one line on stderr); 3 health: the router answered
// but cannot serve (no live prefill or decode node).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli_flags.h"
#include "client/client.h"
#include "security/api_keys.h"
#include "security/tls.h"

ABSL_FLAG(std::string, router, "", "router address, host:port (required)");
ABSL_FLAG(int64_t, timeout_ms, 60000, "deadline of the RPC in ms (> 0)");
ABSL_FLAG(std::string, prompt_ids, "",
          "generate: comma-separated prompt token ids (required)");
ABSL_FLAG(std::string, prompt, "",
          "generate: prompt text (the router must run with --tokenizer); "
          "streams text instead of token ids");
ABSL_FLAG(std::string, stop, "",
          "generate: a stop string, matched on the decoded text");
ABSL_FLAG(int32_t, max_tokens, 16, "generate: tokens to generate (> 0)");
ABSL_FLAG(float, temperature, 0.0f,
          "generate: softmax temperature, 0 = greedy");
ABSL_FLAG(int32_t, top_k, 0,
          "generate: keep the k most likely tokens, 0 = off");
ABSL_FLAG(float, top_p, 1.0f, "generate: nucleus mass in (0, 1]");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "generate: sampling seed (unset: the server picks one)");
ABSL_FLAG(std::string, stop_token_ids, "",
          "generate: comma-separated ids that end generation");
ABSL_FLAG(bool, ignore_eos, false, "generate: do not stop at the model's EOS");
ABSL_FLAG(std::string, request_id, "",
          "generate: request id for logs (the router assigns one if empty)");
ABSL_FLAG(std::string, role, "all", "nodes: list only prefill, decode or all");

namespace duet::client {
namespace {

constexpr int kExitNotServing = 3;

int UsageError(const std::string& message) {
  std::fprintf(stderr, "duet-cli: %s\n", message.c_str());
  return kExitUsage;
}

int RpcError(absl::string_view what, const absl::Status& status) {
  std::fprintf(stderr, "duet-cli: %s failed: %s\n", std::string(what).c_str(),
               status.ToString().c_str());
  return kExitRpcFailed;
}

// The flags every command shares; the usage error is already printed when
// this returns nullptr.
std::unique_ptr<DuetClient> ConnectOrUsageError(absl::Duration* timeout,
                                                int* exit_code) {
  const int64_t timeout_ms = absl::GetFlag(FLAGS_timeout_ms);
  if (timeout_ms <= 0) {
    *exit_code = UsageError("--timeout-ms must be > 0");
    return nullptr;
  }
  *timeout = absl::Milliseconds(timeout_ms);
  if (absl::GetFlag(FLAGS_router).empty()) {
    *exit_code = UsageError("--router host:port is required");
    return nullptr;
  }
  auto tls = duet::security::ReadTlsFlags(duet::security::Party::kClient);
  if (!tls.ok()) {
    *exit_code = UsageError(std::string(tls.status().message()));
    return nullptr;
  }
  auto client = DuetClient::Create(
      absl::GetFlag(FLAGS_router),
      {.tls_ca_pem = tls->ca, .api_key = duet::security::ClientApiKey()});
  if (!client.ok()) {
    *exit_code = UsageError(std::string(client.status().message()));
    return nullptr;
  }
  return std::move(*client);
}

int Generate() {
  absl::Duration timeout;
  int exit_code = kExitOk;
  std::unique_ptr<DuetClient> client =
      ConnectOrUsageError(&timeout, &exit_code);
  if (client == nullptr) return exit_code;

  auto prompt = ParseIdList(absl::GetFlag(FLAGS_prompt_ids), "prompt-ids");
  if (!prompt.ok()) return UsageError(std::string(prompt.status().message()));
  const std::string prompt_text = absl::GetFlag(FLAGS_prompt);
  if (prompt->empty() == prompt_text.empty()) {
    return UsageError("exactly one of --prompt-ids and --prompt is required");
  }
  const bool text_mode =
      !prompt_text.empty() || !absl::GetFlag(FLAGS_stop).empty();
  auto stops =
      ParseIdList(absl::GetFlag(FLAGS_stop_token_ids), "stop-token-ids");
  if (!stops.ok()) return UsageError(std::string(stops.status().message()));
  // Sampling values are the router's to validate (INVALID_ARGUMENT, exit 1),
  // so the CLI cannot drift from the server's rules; only shapes the proto
  // cannot carry are checked here.
  v1::GenerateRequest request;
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  request.mutable_prompt_token_ids()->Add(prompt->begin(), prompt->end());
  request.set_prompt(prompt_text);
  request.set_return_text(text_mode);
  v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  sampling->set_temperature(absl::GetFlag(FLAGS_temperature));
  sampling->set_top_k(absl::GetFlag(FLAGS_top_k));
  sampling->set_top_p(absl::GetFlag(FLAGS_top_p));
  if (const auto seed = absl::GetFlag(FLAGS_seed)) sampling->set_seed(*seed);
  sampling->mutable_stop_token_ids()->Add(stops->begin(), stops->end());
  sampling->set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  if (!absl::GetFlag(FLAGS_stop).empty()) {
    sampling->add_stop(absl::GetFlag(FLAGS_stop));
  }

  GenerateOptions options;
  options.timeout = timeout;
  const GenerateResult result =
      client->Generate(request, options, [&](const ChunkEvent& event) {
        if (text_mode) {
          std::fwrite(event.text.data(), 1, event.text.size(), stdout);
          std::fflush(stdout);
          return true;
        }
        for (size_t i = 0; i < event.token_ids.size(); ++i) {
          std::printf(event.tokens_before + i == 0 ? "%d" : " %d",
                      event.token_ids[i]);
        }
        // Tokens are for watching as they arrive, not for buffering.
        std::fflush(stdout);
        return true;
      });
  if (!result.tokens.empty() || !result.text.empty()) std::printf("\n");
  std::fflush(stdout);
  if (!result.status.ok()) return RpcError("generate", result.status);

  double mean_itl = 0;
  for (double gap : result.itl_ms) mean_itl += gap;
  if (!result.itl_ms.empty()) mean_itl /= result.itl_ms.size();
  const v1::Timings& s = result.server_timings;
  std::printf(
      "finish_reason=%s prompt_tokens=%u completion_tokens=%u ttft_ms=%.3f "
      "mean_itl_ms=%.3f e2e_ms=%.3f | server: queue_ms=%.3f prefill_ms=%.3f "
      "transfer_ms=%.3f ttft_ms=%.3f decode_ms=%.3f mean_itl_ms=%.3f\n",
      FinishReasonName(result.finish_reason).c_str(),
      result.usage.prompt_tokens(), result.usage.completion_tokens(),
      result.ttft_ms, mean_itl, result.e2e_ms, s.queue_ms(), s.prefill_ms(),
      s.transfer_ms(), s.ttft_ms(), s.decode_ms(), s.mean_itl_ms());
  return kExitOk;
}

int Nodes() {
  absl::Duration timeout;
  int exit_code = kExitOk;
  std::unique_ptr<DuetClient> client =
      ConnectOrUsageError(&timeout, &exit_code);
  if (client == nullptr) return exit_code;
  const std::string role_name =
      absl::AsciiStrToLower(absl::GetFlag(FLAGS_role));
  v1::NodeRole role = v1::NODE_ROLE_UNSPECIFIED;
  if (role_name == "prefill") {
    role = v1::NODE_ROLE_PREFILL;
  } else if (role_name == "decode") {
    role = v1::NODE_ROLE_DECODE;
  } else if (role_name != "all") {
    return UsageError(absl::StrCat(
        "--role must be prefill, decode or all, got '", role_name, "'"));
  }
  auto nodes = client->ListNodes(role, timeout);
  if (!nodes.ok()) return RpcError("nodes", nodes.status());

  std::vector<std::vector<std::string>> rows = {
      {"ID", "ROLE", "ADDRESS", "KV_FREE/TOTAL", "RUNNING",
       "QUEUED_PREFILL_TOK", "MS_SINCE_HEARTBEAT"}};
  for (const v1::NodeInfo& n : nodes->nodes()) {
    rows.push_back({absl::StrCat(n.node_id()), NodeRoleName(n.role()),
                    n.address(),
                    absl::StrCat(n.load().free_kv_blocks(), "/",
                                 n.load().total_kv_blocks()),
                    absl::StrCat(n.load().running_requests()),
                    absl::StrCat(n.load().queued_prefill_tokens()),
                    absl::StrCat(n.ms_since_heartbeat())});
  }
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) {
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      // Text columns left-aligned, numbers right-aligned.
      const bool text = c == 1 || c == 2;
      absl::StrAppend(&line, c == 0 ? "" : "  ",
                      text ? absl::StrFormat("%-*s", widths[c], row[c])
                           : absl::StrFormat("%*s", widths[c], row[c]));
    }
    std::printf("%s\n",
                std::string(absl::StripTrailingAsciiWhitespace(line)).c_str());
  }
  if (nodes->nodes().empty()) std::printf("(no nodes registered)\n");
  return kExitOk;
}

int Health() {
  absl::Duration timeout;
  int exit_code = kExitOk;
  std::unique_ptr<DuetClient> client =
      ConnectOrUsageError(&timeout, &exit_code);
  if (client == nullptr) return exit_code;
  auto health = client->Health(timeout);
  if (!health.ok()) return RpcError("health", health.status());
  const v1::RoutingStats& r = health->routing();
  std::printf(
      "serving=%s prefill_nodes=%u decode_nodes=%u model=%s "
      "colocated_nodes=%u routing=%s prompt_tokens=%llu "
      "predicted_cached_tokens=%llu prefill_cached_tokens=%llu "
      "decode_cached_tokens=%llu\n",
      health->serving() ? "true" : "false", health->num_prefill_nodes(),
      health->num_decode_nodes(),
      health->model_name().empty() ? "-" : health->model_name().c_str(),
      health->num_colocated_nodes(), r.mode().empty() ? "-" : r.mode().c_str(),
      static_cast<unsigned long long>(r.prompt_tokens()),
      static_cast<unsigned long long>(r.predicted_cached_tokens()),
      static_cast<unsigned long long>(r.prefill_cached_tokens()),
      static_cast<unsigned long long>(r.decode_cached_tokens()));
  return health->serving() ? kExitOk : kExitNotServing;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Talks to a duet router.\n"
      "Usage:\n"
      "  duet-cli generate --router HOST:PORT --prompt-ids 1,2,3 "
      "[--max-tokens 16] [--temperature T --top-k K --top-p P --seed S "
      "--stop-token-ids 7,8 --ignore-eos --timeout-ms MS]\n"
      "  duet-cli nodes --router HOST:PORT [--role prefill|decode|all]\n"
      "  duet-cli health --router HOST:PORT\n"
      "Exit codes: 0 ok, 1 RPC failed, 2 usage error, 3 health: not serving.");
  auto parsed = ParseArgs(argc, argv);
  if (!parsed.ok()) return UsageError(std::string(parsed.status().message()));
  if (parsed->help) {
    std::fputs(HelpText("client/cli_main.cc").c_str(), stdout);
    return kExitOk;
  }
  const std::vector<std::string>& args = parsed->positional;
  if (args.empty()) {
    return UsageError(
        "missing command: generate, nodes or health (see --help)");
  }
  if (args.size() > 1) {
    return UsageError(
        absl::StrCat("unexpected argument '", args[1], "' (see --help)"));
  }
  const std::string& command = args[0];
  if (command == "generate") return Generate();
  if (command == "nodes") return Nodes();
  if (command == "health") return Health();
  return UsageError(absl::StrCat("unknown command '", command,
                                 "': use generate, nodes or health"));
}

}  // namespace
}  // namespace duet::client

int main(int argc, char** argv) { return duet::client::Main(argc, argv); }
