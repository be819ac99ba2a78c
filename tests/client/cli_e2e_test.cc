// duet-cli and duet-bench as a user runs them: real processes talking gRPC
// to a ScriptedDuetServer hosted by this test process.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/scripted_server.h"
#include "tests/testing/scratch.h"

namespace duet::client {
namespace {

using ::duet::client::testing::EchoScript;
using ::duet::client::testing::ScriptedDuetServer;
using ::duet::client::testing::StreamScript;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

struct ProcessResult {
  int exit_code = -1;
  std::string output;  // stdout, then stderr if `merge_stderr`
  // Milliseconds from start until the first byte, and until EOF.
  double first_byte_ms = -1;
  double eof_ms = -1;
};

ProcessResult Execute(const std::string& command, bool merge_stderr = true) {
  ProcessResult run;
  const auto start = std::chrono::steady_clock::now();
  const auto ms = [&start] {
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now() - start)
        .count();
  };
  FILE* pipe = popen((command + (merge_stderr ? " 2>&1" : "")).c_str(), "r");
  if (pipe == nullptr) return run;
  // Byte by byte, so the time of the first byte shows streaming.
  for (int c; (c = fgetc(pipe)) != EOF;) {
    if (run.first_byte_ms < 0) run.first_byte_ms = ms();
    run.output.push_back(static_cast<char>(c));
  }
  run.eof_ms = ms();
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

// Prompts starting with 666 are rejected as if no decode node had room;
// prompts starting with 777 stream slowly.
ScriptedDuetServer::Options CliServerOptions(bool serving) {
  ScriptedDuetServer::Options options;
  options.script = [](const v1::GenerateRequest& r, int64_t) {
    StreamScript s = EchoScript(r);
    if (r.prompt_token_ids_size() > 0 && r.prompt_token_ids(0) == 666) {
      s.failure = absl::ResourceExhaustedError("no decode node has room");
    }
    if (r.prompt_token_ids_size() > 0 && r.prompt_token_ids(0) == 777) {
      s.first_token_delay = absl::Milliseconds(50);
      s.token_delay = absl::Milliseconds(150);
    }
    return s;
  };
  options.health.set_serving(serving);
  options.health.set_num_prefill_nodes(serving ? 1 : 0);
  options.health.set_num_decode_nodes(1);
  options.health.set_model_name("qwen3-tiny");
  options.health.mutable_routing()->set_mode("least-loaded");
  options.health.mutable_routing()->set_prompt_tokens(1000);
  options.health.mutable_routing()->set_predicted_cached_tokens(600);
  options.health.mutable_routing()->set_prefill_cached_tokens(500);
  options.health.mutable_routing()->set_decode_cached_tokens(400);
  v1::NodeInfo* p = options.nodes.add_nodes();
  p->set_node_id(1);
  p->set_role(v1::NODE_ROLE_PREFILL);
  p->set_address("10.0.0.1:7001");
  p->mutable_load()->set_queued_prefill_tokens(4096);
  p->mutable_load()->set_free_kv_blocks(100);
  p->mutable_load()->set_total_kv_blocks(128);
  p->mutable_load()->set_running_requests(3);
  p->set_ms_since_heartbeat(12);
  v1::NodeInfo* d = options.nodes.add_nodes();
  d->set_node_id(2);
  d->set_role(v1::NODE_ROLE_DECODE);
  d->set_address("decode-host.example:7002");
  d->mutable_load()->set_free_kv_blocks(2000);
  d->mutable_load()->set_total_kv_blocks(8192);
  d->mutable_load()->set_running_requests(17);
  d->set_ms_since_heartbeat(250);
  return options;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = ScriptedDuetServer::Start(CliServerOptions(true));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  std::string Cli(const std::string& args) const {
    return absl::StrCat(DUET_CLI_BIN, " ", args);
  }
  // The scripted server is plaintext: clients must say so (--insecure).
  std::string Router() const {
    return absl::StrCat(" --insecure --router ", server_->address());
  }

  std::unique_ptr<ScriptedDuetServer> server_;
};

TEST_F(CliTest, GenerateStreamsTokensThenASummary) {
  const ProcessResult run = Execute(
      Cli(absl::StrCat("generate", Router(),
                       " --prompt-ids 1,2,3 --max-tokens 5 --temperature 0.5 "
                       "--top-k 5 --top-p 0.9 --seed 7 --timeout-ms 5000")),
      /*merge_stderr=*/false);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const std::vector<std::string> lines = absl::StrSplit(run.output, '\n');
  ASSERT_GE(lines.size(), 2u) << run.output;
  EXPECT_EQ(lines[0], "1 2 3 1 2");
  EXPECT_THAT(lines[1], StartsWith("finish_reason=MAX_TOKENS prompt_tokens=3 "
                                   "completion_tokens=5 ttft_ms="));
  EXPECT_THAT(lines[1], HasSubstr("mean_itl_ms="));
  EXPECT_THAT(lines[1], HasSubstr("server: queue_ms=0.500 prefill_ms=5.000"));
}

TEST_F(CliTest, GenerateFlushesEachTokenAsItArrives) {
  // Tokens at ~50, 200, 350 ms: the first must reach the pipe long before
  // the process ends.
  const ProcessResult run =
      Execute(Cli(absl::StrCat("generate", Router(),
                               " --prompt_ids=777,8,9 --max_tokens=3")),
              /*merge_stderr=*/false);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, StartsWith("777 8 9\n"));
  EXPECT_GT(run.eof_ms - run.first_byte_ms, 200) << run.output;
}

TEST_F(CliTest, GenerateStopTokensAndIgnoreEosReachTheServer) {
  const ProcessResult run =
      Execute(Cli(absl::StrCat("generate", Router(),
                               " --prompt-ids 4,5,6 --max-tokens 9 "
                               "--stop-token-ids 6 --ignore-eos")));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, StartsWith("4 5 6\nfinish_reason=STOP_TOKEN"));
}

TEST_F(CliTest, RpcFailuresExitOneWithCodeAndMessage) {
  const ProcessResult rejected = Execute(Cli(absl::StrCat(
      "generate", Router(), " --prompt-ids 666,1 --max-tokens 4")));
  EXPECT_EQ(rejected.exit_code, 1) << rejected.output;
  EXPECT_EQ(rejected.output,
            "duet-cli: generate failed: RESOURCE_EXHAUSTED: no decode node has "
            "room\n");
  const ProcessResult invalid = Execute(Cli(
      absl::StrCat("generate", Router(), " --prompt-ids 1 --max-tokens 0")));
  EXPECT_EQ(invalid.exit_code, 1) << invalid.output;
  EXPECT_THAT(invalid.output,
              HasSubstr("INVALID_ARGUMENT: sampling.max_tokens"));

  const std::string address = server_->address();
  server_.reset();  // Nothing listens there any more.
  const ProcessResult unreachable =
      Execute(absl::StrCat(DUET_CLI_BIN, " health --insecure --router ",
                           address, " --timeout-ms 2000"));
  EXPECT_EQ(unreachable.exit_code, 1) << unreachable.output;
  EXPECT_THAT(unreachable.output, HasSubstr("health failed: UNAVAILABLE"));
}

TEST_F(CliTest, UsageErrorsExitTwoWithOneLine) {
  for (const std::string& args :
       {std::string("generate --prompt-ids 1"),  // no --router
        absl::StrCat("generate", Router()),      // no prompt
        absl::StrCat("generate", Router(), " --prompt-ids 1,x"),
        absl::StrCat("generate", Router(), " --prompt-ids 1 --max-tokens=many"),
        absl::StrCat("generate", Router(), " --prompt-ids 1 --no-such-flag"),
        absl::StrCat("generate", Router(), " --prompt-ids 1 --timeout-ms 0"),
        absl::StrCat("frobnicate", Router()),
        absl::StrCat("nodes", Router(), " --role leader"),
        absl::StrCat("nodes extra", Router()), std::string("")}) {
    const ProcessResult run = Execute(Cli(args));
    EXPECT_EQ(run.exit_code, 2) << args << "\n" << run.output;
    EXPECT_THAT(run.output, StartsWith("duet-cli: ")) << args;
    EXPECT_EQ(std::count(run.output.begin(), run.output.end(), '\n'), 1)
        << args << "\n"
        << run.output;
  }
  EXPECT_EQ(server_->generate_calls(), 0);
}

TEST_F(CliTest, HelpExitsZeroAndListsFlags) {
  const ProcessResult run = Execute(Cli("--help"));
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("duet-cli generate --router HOST:PORT"));
  EXPECT_THAT(run.output, HasSubstr("--prompt-ids"));
  EXPECT_THAT(run.output, HasSubstr("--stop-token-ids"));
  const ProcessResult bench = Execute(absl::StrCat(DUET_BENCH_BIN, " --help"));
  EXPECT_EQ(bench.exit_code, 0) << bench.output;
  EXPECT_THAT(bench.output, HasSubstr("--request-rate"));
}

TEST_F(CliTest, NodesPrintsAnAlignedTable) {
  const ProcessResult run = Execute(Cli(absl::StrCat("nodes", Router())));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const std::vector<std::string> lines =
      absl::StrSplit(run.output, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << run.output;
  EXPECT_THAT(lines[0], HasSubstr("ID  ROLE     ADDRESS"));
  EXPECT_THAT(lines[0], HasSubstr("KV_FREE/TOTAL  RUNNING  QUEUED_PREFILL_TOK  "
                                  "MS_SINCE_HEARTBEAT"));
  EXPECT_THAT(lines[1], HasSubstr("PREFILL  10.0.0.1:7001"));
  EXPECT_THAT(lines[1], HasSubstr("100/128"));
  EXPECT_THAT(lines[1], HasSubstr("4096"));
  EXPECT_THAT(lines[2], HasSubstr("DECODE   decode-host.example:7002"));
  EXPECT_THAT(lines[2], HasSubstr("2000/8192"));
  // Columns line up: every row puts ADDRESS at the same offset.
  EXPECT_EQ(lines[1].find("10.0.0.1"), lines[0].find("ADDRESS"));
  EXPECT_EQ(lines[2].find("decode-host"), lines[0].find("ADDRESS"));
  EXPECT_EQ(lines[1].size(), lines[0].size());

  const ProcessResult decode_only =
      Execute(Cli(absl::StrCat("nodes --role decode", Router())));
  ASSERT_EQ(decode_only.exit_code, 0) << decode_only.output;
  EXPECT_THAT(decode_only.output, Not(HasSubstr("10.0.0.1")));
  EXPECT_THAT(decode_only.output, HasSubstr("decode-host"));
}

TEST_F(CliTest, HealthExitCodeSaysWhetherTheRouterCanServe) {
  const ProcessResult ok = Execute(Cli(absl::StrCat("health", Router())));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_EQ(ok.output,
            "serving=true prefill_nodes=1 decode_nodes=1 model=qwen3-tiny "
            "colocated_nodes=0 routing=least-loaded prompt_tokens=1000 "
            "predicted_cached_tokens=600 prefill_cached_tokens=500 "
            "decode_cached_tokens=400\n");
  auto idle = ScriptedDuetServer::Start(CliServerOptions(false));
  ASSERT_TRUE(idle.ok());
  const ProcessResult not_serving = Execute(
      Cli(absl::StrCat("health --insecure --router ", (*idle)->address())));
  EXPECT_EQ(not_serving.exit_code, 3) << not_serving.output;
  EXPECT_THAT(not_serving.output, StartsWith("serving=false prefill_nodes=0"));
}

TEST_F(CliTest, BenchWritesJsonAndCountsFailures) {
  const std::string json_path = absl::StrCat(::duet::testing::ScratchDir(),
                                             "/duet_bench_", getpid(), ".json");
  // Prompt ids are < 600, so the 666/777 rules never fire.
  const ProcessResult run = Execute(absl::StrCat(
      DUET_BENCH_BIN, Router(),
      " --num-requests 40 --input-len 3 --input-len-max 9 --output-len 6 "
      "--vocab-limit 600 --seed 11 --concurrency 8 --json-out ",
      json_path, " --json-per-request"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("closed loop, concurrency 8"));
  EXPECT_THAT(run.output, HasSubstr("Completed requests"));
  std::ifstream file(json_path);
  std::stringstream text;
  text << file.rdbuf();
  const auto j = nlohmann::json::parse(text.str());
  EXPECT_EQ(j["completed"], 40);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["total_output_tokens"], 240);
  EXPECT_EQ(j["output_len_mismatches"], 0);
  EXPECT_EQ(j["config"]["input_len_max"], 9);
  EXPECT_EQ(j["requests"].size(), 40u);
  for (const auto& r : j["requests"]) {
    EXPECT_LE(r["ttft_ms"].get<double>(), r["e2e_ms"].get<double>());
  }
  std::remove(json_path.c_str());

  const ProcessResult bad = Execute(absl::StrCat(
      DUET_BENCH_BIN, Router(), " --concurrency 2 --request-rate 0"));
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_THAT(bad.output, StartsWith("duet-bench: --request-rate must be > 0"));
}

}  // namespace
}  // namespace duet::client
