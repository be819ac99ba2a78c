#include "client/bench_sweep.h"

#include <sys/wait.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace duet::client {
namespace {

std::string Number(double v) { return absl::StrFormat("%.6g", v); }

// For sh -c: 'text' with every ' written as '\''.
std::string ShellQuote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

}  // namespace

std::vector<std::string> SweepCsvHeader() {
  std::vector<std::string> header = {"rate",
                                     "burstiness",
                                     "max_concurrency",
                                     "completed",
                                     "failed",
                                     "duration_s",
                                     "request_throughput",
                                     "request_goodput",
                                     "output_throughput",
                                     "total_token_throughput"};
  for (const std::string& metric : AllLatencyMetrics()) {
    for (const char* p : {"p50", "p90", "p99"}) {
      header.push_back(absl::StrCat(metric, "_", p, "_ms"));
    }
  }
  return header;
}

std::string SweepCsv(const std::vector<BenchReport>& reports) {
  std::string out = absl::StrCat(absl::StrJoin(SweepCsvHeader(), ","), "\n");
  for (const BenchReport& r : reports) {
    const BenchOptions& o = r.options;
    std::vector<std::string> row = {
        RateText(o.request_rate),
        Number(o.burstiness),
        absl::StrCat(o.max_concurrency),
        absl::StrCat(r.completed),
        absl::StrCat(r.failed),
        Number(r.duration_s),
        Number(r.request_throughput_rps),
        o.goodput.empty() ? "" : Number(r.request_goodput_rps),
        Number(r.output_throughput_tok_s),
        Number(r.total_token_throughput_tok_s)};
    for (const std::string& metric : AllLatencyMetrics()) {
      const Distribution& d = r.metric(metric);
      for (double v : {d.p50, d.p90, d.p99}) {
        row.push_back(d.count > 0 ? Number(v) : "");
      }
    }
    absl::StrAppend(&out, absl::StrJoin(row, ","), "\n");
  }
  return out;
}

std::string SweepJsonPath(const std::string& stem, double rate) {
  return absl::StrCat(stem, "_rate", RateText(rate), ".json");
}

absl::Status PlotSweep(const std::string& script, const std::string& csv_path,
                       const std::string& png_path) {
  const std::string command =
      absl::StrCat("python3 ", ShellQuote(script), " ", ShellQuote(csv_path),
                   " ", ShellQuote(png_path));
  const int rc = std::system(command.c_str());
  if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "plotting failed (", command,
        "); it needs python3 with matplotlib (Debian: python3-matplotlib, "
        "scripts/setup.sh installs it)"));
  }
  return absl::OkStatus();
}

}  // namespace duet::client
