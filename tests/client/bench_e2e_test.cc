// duet-bench's vLLM-style features end to end against a real gRPC server in
// this process (ScriptedDuetServer): the runner's caps, arrivals, text
// prompts and progress line, and the duet-bench binary whose JSON is
// checked against numbers recomputed here from its per-request records.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <numeric>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/bench.h"
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
using ::testing::StartsWith;

// Every third request answers its first token late (40 ms) and every
// fourth decodes slowly (6 ms a token), so SLOs split the requests.
std::unique_ptr<ScriptedDuetServer> MixedServer() {
  ScriptedDuetServer::Options options;
  options.script = [](const v1::GenerateRequest& r, int64_t arrival) {
    StreamScript s = EchoScript(r);
    s.first_token_delay = absl::Milliseconds(arrival % 3 == 0 ? 40 : 3);
    s.token_delay = absl::Milliseconds(arrival % 4 == 1 ? 6 : 1);
    return s;
  };
  auto server = ScriptedDuetServer::Start(std::move(options));
  EXPECT_TRUE(server.ok()) << server.status();
  return std::move(*server);
}

std::string Fixture(const std::string& name) {
  return absl::StrCat(DUET_CLIENT_TESTDATA, "/", name);
}

std::string TempPath(const std::string& name) {
  return absl::StrCat(::duet::testing::ScratchDir(), "/bench_", getpid(), "_",
                      name);
}

struct BenchRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

BenchRun Bench(const ScriptedDuetServer& server, const std::string& args) {
  BenchRun run;
  const std::string command =
      absl::StrCat(DUET_BENCH_BIN, " --insecure --router ", server.address(),
                   " ", args, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return run;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), pipe)) > 0;) {
    run.output.append(buf, n);
  }
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str(), nullptr, false);
}

// numpy.percentile's default (linear) on an unsorted sample, written out
// again here rather than calling the code under test.
double NumpyPercentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double rank = p / 100 * (v.size() - 1);
  const size_t lo = static_cast<size_t>(rank);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (rank - lo) * (v[hi] - v[lo]);
}

TEST(BenchRunnerTest, RateWithMaxConcurrencyNeverExceedsTheCap) {
  auto server = MixedServer();
  auto client = DuetClient::Create(server->address());
  BenchOptions o;
  o.workload.num_requests = 40;
  o.workload.input_len_min = o.workload.input_len_max = 4;
  o.workload.output_len_min = o.workload.output_len_max = 4;
  o.request_rate = 1000;  // Far more than 4 in flight could serve.
  o.burstiness = 0.5;
  o.max_concurrency = 4;
  auto report = RunBench(**client, o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->completed, 40);
  EXPECT_LE(server->max_in_flight(), 4);
  EXPECT_EQ(server->max_in_flight(), 4);
  // Never sent before its gamma-distributed due time.
  const std::vector<double> due = ArrivalOffsets(
      40, 1000, 0.5, DeriveSeed(o.workload.seed, kArrivalSeedStream));
  for (const RequestRecord& r : report->requests) {
    EXPECT_GE(r.start_ms, due[r.index] * 1000) << r.index;
  }
  const auto j = nlohmann::json::parse(ReportToJson(*report, false));
  EXPECT_EQ(j["config"]["arrival"], "gamma");
  EXPECT_EQ(j["max_concurrency"], 4);
}

TEST(BenchRunnerTest, TextPromptsGoAsTextAndCountTheServersTokens) {
  ScriptedDuetServer::Options options;
  std::mutex mu;
  std::vector<std::string> prompts;
  options.script = [&](const v1::GenerateRequest& r, int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    prompts.push_back(r.prompt());
    EXPECT_EQ(r.prompt_token_ids_size(), 0);
    EXPECT_FALSE(r.sampling().ignore_eos());
    return EchoScript(r);
  };
  auto server = ScriptedDuetServer::Start(std::move(options));
  ASSERT_TRUE(server.ok());
  auto client = DuetClient::Create((*server)->address());
  BenchOptions o;
  o.workload.dataset = DatasetKind::kJsonl;
  o.workload.dataset_path = Fixture("prompts.jsonl");
  o.workload.num_requests = 3;
  o.workload.output_len_min = o.workload.output_len_max = 5;
  o.ignore_eos = false;
  o.max_concurrency = 1;  // In file order.
  FILE* progress = std::tmpfile();
  o.progress = progress;
  o.progress_interval = absl::Milliseconds(1);
  auto report = RunBench(**client, o);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->completed, 3);
  ASSERT_EQ(prompts.size(), 3u);
  EXPECT_EQ(prompts[0], "Summarize the design of duet in one line.");
  int64_t bytes = 0;
  for (const std::string& p : prompts) bytes += p.size();
  // The server counts a text prompt's bytes; the report takes its count.
  EXPECT_EQ(report->total_input_tokens, bytes);
  EXPECT_EQ(report->total_output_tokens, 7 + 5 + 3);
  EXPECT_EQ(report->requests[0].input_len, 41);
  // The progress line: redrawn with \r, the final counts, a newline.
  std::rewind(progress);
  std::string drawn;
  for (int c; (c = std::fgetc(progress)) != EOF;) drawn.push_back(c);
  std::fclose(progress);
  EXPECT_THAT(drawn, StartsWith("\r[duet-bench] "));
  EXPECT_THAT(drawn, HasSubstr("\r[duet-bench] 3/3 done, 0 failed, 0 in "
                               "flight"));
  EXPECT_EQ(drawn.back(), '\n');
}

TEST(BenchBinaryTest, VllmJsonMatchesItsPerRequestRecords) {
  auto server = MixedServer();
  const std::string json_path = TempPath("vllm.json");
  // --goodput in vLLM's several-word form.
  const BenchRun run = Bench(
      *server,
      absl::StrCat("--num-prompts 48 --dataset-name random --input-len 8 "
                   "--range-ratio 0.5 --output-len 6 --vocab-limit 500 "
                   "--request-rate 400 --burstiness 0.5 --max-concurrency 8 "
                   "--goodput ttft:30 tpot:5 --metric-percentiles 50,95 "
                   "--save-result --save-detailed --result-filename ",
                   json_path));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("Request goodput (req/s)"));
  EXPECT_LE(server->max_in_flight(), 8);
  const nlohmann::json j = ReadJson(json_path);
  ASSERT_FALSE(j.is_discarded()) << run.output;
  EXPECT_EQ(j["num_prompts"], 48);
  EXPECT_EQ(j["request_rate"], 400);
  EXPECT_EQ(j["burstiness"], 0.5);
  EXPECT_EQ(j["max_concurrency"], 8);
  EXPECT_EQ(j["goodput"]["ttft"], 30);

  // Recompute everything from the records.
  const double duration = j["duration"].get<double>();
  ASSERT_GT(duration, 0);
  std::map<std::string, std::vector<double>> samples;
  int completed = 0, good = 0;
  int64_t in = 0, out = 0;
  ASSERT_EQ(j["requests"].size(), 48u);
  for (const auto& r : j["requests"]) {
    if (r["status"] != "OK") continue;
    ++completed;
    const int n = r["output_tokens"];
    EXPECT_EQ(n, r["output_len_requested"].get<int>());  // ignore_eos
    EXPECT_GE(n, 3);                                     // 6 * (1 -+ 0.5)
    EXPECT_LE(n, 9);
    const int len = r["input_len"];
    EXPECT_GE(len, 4);  // 8 * (1 -+ 0.5)
    EXPECT_LE(len, 12);
    in += len;
    out += n;
    const double ttft = r["ttft_ms"], e2e = r["e2e_ms"];
    const double tpot = (e2e - ttft) / (n - 1);
    samples["ttft"].push_back(ttft);
    samples["e2el"].push_back(e2e);
    samples["tpot"].push_back(tpot);
    for (double gap : r["itl_ms"]) samples["itl"].push_back(gap);
    good += ttft <= 30 && tpot <= 5;
  }
  EXPECT_EQ(j["completed"], completed);
  EXPECT_EQ(completed, 48);
  EXPECT_GT(good, 0);  // The SLOs split the requests, so they were checked.
  EXPECT_LT(good, completed);
  EXPECT_EQ(j["total_input_tokens"], in);
  EXPECT_EQ(j["total_output_tokens"], out);
  EXPECT_DOUBLE_EQ(j["request_throughput"].get<double>(), completed / duration);
  EXPECT_DOUBLE_EQ(j["request_goodput"].get<double>(), good / duration);
  EXPECT_DOUBLE_EQ(j["output_throughput"].get<double>(), out / duration);
  EXPECT_DOUBLE_EQ(j["total_token_throughput"].get<double>(),
                   (in + out) / duration);
  for (const auto& [metric, v] : samples) {
    const double mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
    double var = 0;
    for (double x : v) var += (x - mean) * (x - mean);
    auto key = [&](const std::string& stat) {
      return absl::StrCat(stat, "_", metric, "_ms");
    };
    EXPECT_NEAR(j[key("mean")].get<double>(), mean, 1e-9) << metric;
    EXPECT_NEAR(j[key("std")].get<double>(), std::sqrt(var / v.size()), 1e-9)
        << metric;
    EXPECT_NEAR(j[key("median")].get<double>(), NumpyPercentile(v, 50), 1e-9)
        << metric;
    for (double p : {50.0, 90.0, 95.0, 99.0}) {
      EXPECT_NEAR(j[key(absl::StrCat("p", p))].get<double>(),
                  NumpyPercentile(v, p), 1e-9)
          << metric << " p" << p;
    }
  }
  ASSERT_EQ(j["ttfts"].size(), 48u);
  EXPECT_NEAR(j["ttfts"][7].get<double>() * 1000,
              j["requests"][7]["ttft_ms"].get<double>(), 1e-9);
  EXPECT_EQ(j["itls"][7].size(),
            j["requests"][7]["output_tokens"].get<size_t>() - 1);
  EXPECT_EQ(j["output_lens"][7], j["requests"][7]["output_tokens"]);
  std::remove(json_path.c_str());
}

TEST(BenchBinaryTest, TextDatasetsUseTheFilesAndDefaultIgnoreEosOff) {
  auto server = MixedServer();
  const std::string json_path = TempPath("sharegpt.json");
  const BenchRun run =
      Bench(*server,
            absl::StrCat("--dataset-name sharegpt --dataset-path ",
                         Fixture("sharegpt_small.json"),
                         " --num-prompts 8 --output-len 4 --seed 2 --json-out ",
                         json_path, " --json-per-request"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("sharegpt: "));
  const nlohmann::json j = ReadJson(json_path);
  EXPECT_EQ(j["dataset_name"], "sharegpt");
  EXPECT_EQ(j["config"]["ignore_eos"], false);
  EXPECT_EQ(j["completed"], 8);
  // --output-len overrides the answers' lengths.
  for (int n : j["output_lens"]) EXPECT_EQ(n, 4);
  std::remove(json_path.c_str());
}

TEST(BenchBinaryTest, SweepWritesOneCsvRowAndOneJsonPerRate) {
  auto server = MixedServer();
  const std::string stem = TempPath("sweep");
  const BenchRun run = Bench(
      *server,
      absl::StrCat(
          "--num-prompts 12 --input-len 4 --output-len 3 --sweep-rates 300,inf "
          "--goodput ttft:20 --progress --sweep-plot none --result-filename ",
          stem, ".json"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("\r[duet-bench] 12/12 done, 0 failed"));
  std::ifstream csv(stem + "_sweep.csv");
  std::vector<std::string> lines;
  for (std::string line; std::getline(csv, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 3u) << run.output;
  EXPECT_THAT(lines[0], StartsWith("rate,burstiness,max_concurrency,"));
  EXPECT_THAT(lines[1], StartsWith("300,1,0,12,0,"));
  EXPECT_THAT(lines[2], StartsWith("inf,1,0,12,0,"));
  for (const char* rate : {"300", "inf"}) {
    const nlohmann::json j =
        ReadJson(absl::StrCat(stem, "_rate", rate, ".json"));
    ASSERT_FALSE(j.is_discarded()) << rate;
    EXPECT_EQ(j["completed"], 12);
    EXPECT_TRUE(j["request_goodput"].is_number());
    std::remove(absl::StrCat(stem, "_rate", rate, ".json").c_str());
  }
  std::remove((stem + "_sweep.csv").c_str());
}

TEST(BenchBinaryTest, BadFlagsAreOneLineNamingTheFlag) {
  auto server = MixedServer();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--request-rate 5 --burstiness 0", "--burstiness must be"},
      {"--range-ratio 1", "--range-ratio must be in [0, 1)"},
      {"--range-ratio -0.2", "--range-ratio must be in [0, 1)"},
      {"--range-ratio 0.5 --input-len-max 9",
       "--range-ratio and --input-len-max"},
      {"--dataset-name sharegpt --dataset-path /no/such/file.json",
       "--dataset-path: cannot read '/no/such/file.json'"},
      {"--dataset-name sharegpt", "needs --dataset-path FILE"},
      {absl::StrCat("--dataset-name jsonl --dataset-path ",
                    Fixture("prompts_bad_json.jsonl")),
       "prompts_bad_json.jsonl line 3: not valid JSON"},
      {"--dataset-name sonnet", "--dataset-name: unknown dataset 'sonnet'"},
      {"--goodput ttft", "--goodput: bad SLO 'ttft'"},
      {"--goodput ttft:10 latency:5", "--goodput: bad SLO 'latency:5'"},
      {"--num-prompts 5 --num-requests 6", "--num-requests is the old name"},
      {"--max-concurrency -1", "--max-concurrency"},
      {"--sweep-rates 1,x", "--sweep-rates: 'x' is not a number"},
      {"--sweep-rates 1,2 --request-rate 3", "--sweep-rates replaces"},
      {"--metric-percentiles 50,150", "--metric-percentiles: 150"},
      {"--percentile-metrics ttft,foo", "unknown metric 'foo'"},
      {"--json-out a.json --save-result", "either --json-out"},
      {"--prefix-len 0 --dataset-name prefix-repetition", "--prefix-len"},
  };
  for (const auto& [args, message] : cases) {
    const BenchRun run = Bench(*server, args);
    EXPECT_EQ(run.exit_code, 2) << args << "\n" << run.output;
    EXPECT_THAT(run.output, StartsWith("duet-bench: ")) << args;
    EXPECT_THAT(run.output, HasSubstr(message)) << args;
    EXPECT_EQ(std::count(run.output.begin(), run.output.end(), '\n'), 1)
        << args << "\n"
        << run.output;
  }
  EXPECT_EQ(server->generate_calls(), 0);
}

}  // namespace
}  // namespace duet::client
