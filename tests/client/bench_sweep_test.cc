// --sweep-rates' CSV, and scripts/plot_bench_sweep.py run standalone on one.
#include "client/bench_sweep.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/scratch.h"

namespace duet::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

RequestRecord Ok(int index, double ttft, double e2e, int tokens) {
  RequestRecord r;
  r.index = index;
  r.input_len = 8;
  r.output_len_requested = tokens;
  r.output_tokens = tokens;
  r.ttft_ms = ttft;
  r.e2e_ms = e2e;
  r.itl_ms.assign(tokens - 1, (e2e - ttft) / (tokens - 1));
  return r;
}

std::vector<BenchReport> TwoRates(bool goodput) {
  std::vector<BenchReport> reports;
  for (double rate : {2.0, static_cast<double>(INFINITY)}) {
    BenchOptions o;
    o.request_rate = rate;
    if (goodput) o.goodput.ttft_ms = 15;
    std::vector<RequestRecord> records = {Ok(0, 10, 30, 5), Ok(1, 20, 60, 5)};
    reports.push_back(BuildReport(o, "x", records, 4.0));
  }
  return reports;
}

TEST(SweepCsvTest, OneRowPerRateWithThroughputsAndPercentiles) {
  const std::vector<std::string> lines =
      absl::StrSplit(SweepCsv(TwoRates(true)), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  const std::vector<std::string> header = absl::StrSplit(lines[0], ',');
  EXPECT_EQ(header, SweepCsvHeader());
  EXPECT_THAT(header, ::testing::Contains("request_goodput"));
  EXPECT_THAT(header, ::testing::Contains("e2el_p99_ms"));
  const std::vector<std::string> row = absl::StrSplit(lines[1], ',');
  ASSERT_EQ(row.size(), header.size());
  auto cell = [&](const std::vector<std::string>& r, const std::string& key) {
    return r[std::find(header.begin(), header.end(), key) - header.begin()];
  };
  EXPECT_EQ(cell(row, "rate"), "2");
  EXPECT_EQ(cell(row, "completed"), "2");
  EXPECT_EQ(cell(row, "request_throughput"), "0.5");
  EXPECT_EQ(cell(row, "request_goodput"), "0.25");  // Only TTFT 10 <= 15.
  EXPECT_EQ(cell(row, "ttft_p50_ms"), "15");
  EXPECT_EQ(cell(row, "tpot_p90_ms"), "9.5");  // TPOTs 5 and 10.
  const std::vector<std::string> inf_row = absl::StrSplit(lines[2], ',');
  EXPECT_EQ(cell(inf_row, "rate"), "inf");
  // Without --goodput the column stays empty rather than a fake 0.
  const std::vector<std::string> plain =
      absl::StrSplit(std::vector<std::string>(
                         absl::StrSplit(SweepCsv(TwoRates(false)), '\n'))[1],
                     ',');
  EXPECT_EQ(cell(plain, "request_goodput"), "");
  EXPECT_EQ(SweepJsonPath("out/run", 2.5), "out/run_rate2.5.json");
  EXPECT_EQ(SweepJsonPath("r", INFINITY), "r_rateinf.json");
}

TEST(PlotScriptTest, PlotsACsvStandaloneAndRejectsOtherFiles) {
  const std::string dir = ::duet::testing::ScratchDir();
  const std::string csv = absl::StrCat(dir, "/sweep_", getpid(), ".csv");
  const std::string png = absl::StrCat(dir, "/sweep_", getpid(), ".png");
  std::ofstream(csv) << SweepCsv(TwoRates(true));
  const absl::Status plotted = PlotSweep(DUET_PLOT_SCRIPT, csv, png);
  ASSERT_TRUE(plotted.ok()) << plotted;
  std::ifstream image(png, std::ios::binary);
  char magic[8] = {};
  image.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  const std::string bad = absl::StrCat(dir, "/not_a_sweep_", getpid(), ".csv");
  std::ofstream(bad) << "a,b\n1,2\n";
  const absl::Status refused = PlotSweep(DUET_PLOT_SCRIPT, bad, png);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("plot_bench_sweep.py"));
  std::remove(csv.c_str());
  std::remove(png.c_str());
  std::remove(bad.c_str());
}

}  // namespace
}  // namespace duet::client
