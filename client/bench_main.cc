// duet-bench: load generator for a duet router, with the flags and report
// of vLLM's `vllm bench serve`. Sends a seeded workload (random token ids,
// a ShareGPT file, a JSONL file of prompts, or shared prefixes) at a
// request rate with Poisson / gamma arrivals, optionally capped in flight,
// and reports throughput, goodput and TTFT / TPOT / ITL / E2EL as a table on
// stdout and, with --save-result or --json-out, as JSON (docs/BENCH.md).
//
//   duet-bench --router host:port --num-prompts 200 --input-len 512
//       --output-len 128 --range-ratio 0.5 --request-rate 8 --burstiness 0.5
//       --max-concurrency 64 --goodput ttft:500 tpot:50 --save-result
//   duet-bench --router host:port --dataset-name sharegpt --dataset-path
//       ShareGPT_V3.json --sweep-rates 1,2,4,8 --result-filename s.json
//
// Exit codes: 0 the run finished and at least one request completed (failed
// requests are results, listed by status code); 1 the router was unreachable,
// no request completed, or an output could not be written; 2 usage error.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/bench.h"
#include "client/bench_sweep.h"
#include "client/cli_flags.h"
#include "client/client.h"
#include "security/api_keys.h"
#include "security/tls.h"
#include "tokenizer/tokenizer.h"

ABSL_FLAG(std::string, router, "", "router address, host:port (required)");
ABSL_FLAG(int32_t, num_prompts, 100, "requests to send (> 0)");
ABSL_FLAG(int32_t, num_requests, 100, "old name of --num-prompts");
ABSL_FLAG(std::string, dataset_name, "random",
          "random | sharegpt | jsonl (alias custom) | prefix-repetition");
ABSL_FLAG(std::string, dataset_path, "",
          "sharegpt: a ShareGPT JSON file; jsonl: one {\"prompt\": ..., "
          "\"output_len\"?: N} per line");
ABSL_FLAG(int32_t, input_len, 128,
          "random: prompt tokens; prefix-repetition: suffix tokens (see "
          "--range-ratio)");
ABSL_FLAG(int32_t, output_len, 128,
          "tokens to generate (see --range-ratio); for sharegpt / jsonl, "
          "given here it overrides the file's lengths");
ABSL_FLAG(double, range_ratio, 0,
          "random / prefix-repetition: lengths uniform in [len*(1-r), "
          "len*(1+r)], r in [0, 1)");
ABSL_FLAG(int32_t, input_len_max, 0,
          "if > 0, prompt lengths are uniform in [--input-len, this] "
          "(instead of --range-ratio)");
ABSL_FLAG(int32_t, output_len_max, 0,
          "if > 0, output lengths are uniform in [--output-len, this] "
          "(instead of --range-ratio)");
ABSL_FLAG(int32_t, prefix_len, 256, "prefix-repetition: tokens per prefix");
ABSL_FLAG(double, prefix_share, 1.0,
          "prefix-repetition: share of requests that take a shared prefix; "
          "the others get a random one of their own (same length)");
ABSL_FLAG(int32_t, num_prefixes, 10,
          "prefix-repetition: distinct prefixes, each request picks one");
ABSL_FLAG(int32_t, vocab_limit, 32000,
          "token ids are uniform in [0, this); keep it <= the model's vocab");
ABSL_FLAG(std::string, tokenizer, "",
          "tokenizer.json (or its directory) to count text tokens for "
          "sharegpt lengths and filters; default: bytes / 4");
ABSL_FLAG(uint64_t, seed, 0,
          "seeds prompts, lengths, arrival times and sampling seeds");
ABSL_FLAG(double, request_rate, std::numeric_limits<double>::infinity(),
          "requests/s (Poisson, or gamma with --burstiness); inf = all at "
          "once");
ABSL_FLAG(double, burstiness, 1.0,
          "shape of the gamma-distributed gaps (mean 1/rate): 1 = Poisson, "
          "< 1 burstier, > 1 more regular");
ABSL_FLAG(int32_t, max_concurrency, 0,
          "at most this many requests in flight, also with a rate (0 = no "
          "cap; with rate inf: a closed loop)");
ABSL_FLAG(int32_t, concurrency, 0, "old name of --max-concurrency");
ABSL_FLAG(bool, ignore_eos, false,
          "generate exactly the output length (default: on for random and "
          "prefix-repetition, off for sharegpt and jsonl)");
ABSL_FLAG(std::string, goodput, "",
          "SLOs in ms, e.g. --goodput ttft:500 tpot:50 e2el:2000 (any "
          "subset): request_goodput counts requests meeting all");
ABSL_FLAG(std::string, percentile_metrics, "ttft,tpot,itl,e2el",
          "metrics shown in the table and given --metric-percentiles");
ABSL_FLAG(std::string, metric_percentiles, "",
          "extra percentiles for the JSON, e.g. 50,95,99.9 (p90 and p99 are "
          "always there)");
ABSL_FLAG(int64_t, timeout_ms, 600000, "deadline of each request in ms");
ABSL_FLAG(int64_t, connect_timeout_ms, 10000,
          "how long to wait for the router's connection before starting");
ABSL_FLAG(float, temperature, 0.0f, "sampling temperature, 0 = greedy");
ABSL_FLAG(bool, save_result, false,
          "write the JSON report to --result-dir/--result-filename");
ABSL_FLAG(std::string, result_dir, "", "directory of --save-result's file");
ABSL_FLAG(std::string, result_filename, "",
          "JSON file name (implies --save-result; default "
          "duet-<rate>qps-<date>.json; sweeps duet-sweep-<date>)");
ABSL_FLAG(std::string, json_out, "", "also write the report as JSON here");
ABSL_FLAG(bool, save_detailed, false,
          "add per-request arrays and records to the JSON");
ABSL_FLAG(bool, json_per_request, false, "old name of --save-detailed");
ABSL_FLAG(bool, progress, false,
          "progress line on stderr (default: when stderr is a terminal)");
ABSL_FLAG(std::string, sweep_rates, "",
          "run at each of these request rates (e.g. 1,2,4,inf) and write a "
          "CSV and a PNG plot");
ABSL_FLAG(std::string, sweep_csv, "",
          "the sweep's CSV (default <result stem>_sweep.csv or "
          "duet-bench-sweep.csv)");
ABSL_FLAG(std::string, sweep_plot, "",
          "the sweep's PNG (default: the CSV's name with .png; none = skip)");
ABSL_FLAG(std::string, plot_script, DUET_PLOT_SCRIPT,
          "scripts/plot_bench_sweep.py (run with python3)");

namespace duet::client {
namespace {

int UsageError(const std::string& message) {
  std::fprintf(stderr, "duet-bench: %s\n", message.c_str());
  return kExitUsage;
}

// Flags named on the command line (absl keeps IsSpecifiedOnCommandLine
// private in Debian's version), with '_' for '-' and bools' "no" prefix
// dropped. Filled by Main before any flag is read.
std::set<std::string>& GivenFlags() {
  static auto* given = new std::set<std::string>;
  return *given;
}

void NoteGivenFlags(const std::vector<std::string>& args) {
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--") break;
    if (args[i].size() < 2 || args[i][0] != '-') continue;
    std::string name = args[i].substr(args[i].find_first_not_of('-'));
    name = name.substr(0, name.find('='));
    for (char& c : name) c = c == '-' ? '_' : c;
    if (absl::StartsWith(name, "no") &&
        absl::FindCommandLineFlag(name) == nullptr) {
      name = name.substr(2);
    }
    GivenFlags().insert(name);
  }
}

bool Specified(const char* name) { return GivenFlags().count(name) > 0; }

// vLLM takes `--goodput ttft:500 tpot:50` (several words); absl flags take
// one value, so the METRIC:MS words after --goodput are joined into it.
std::vector<std::string> JoinGoodputWords(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    out.push_back(args[i]);
    const std::string& a = args[i];
    const bool flag = a == "--goodput" || a == "-goodput" ||
                      absl::StartsWith(a, "--goodput=") ||
                      absl::StartsWith(a, "-goodput=");
    if (!flag) continue;
    const bool inline_value = a.find('=') != std::string::npos;
    if (!inline_value && i + 1 < args.size()) out.push_back(args[++i]);
    while (i + 1 < args.size() && !absl::StartsWith(args[i + 1], "-") &&
           args[i + 1].find(':') != std::string::npos) {
      absl::StrAppend(&out.back(), " ", args[++i]);
    }
  }
  return out;
}

std::string Dashed(std::string name) {
  for (char& c : name) c = c == '_' ? '-' : c;
  return name;
}

// Both names of one value: the one given, and an error if both are, with
// different values.
template <typename T>
absl::StatusOr<T> Aliased(const absl::Flag<T>& current, const char* name,
                          const absl::Flag<T>& old, const char* old_name) {
  const T a = absl::GetFlag(current), b = absl::GetFlag(old);
  if (Specified(name) && Specified(old_name) && a != b) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", Dashed(old_name), " is the old name of --",
                     Dashed(name), "; give one of them"));
  }
  return Specified(old_name) && !Specified(name) ? b : a;
}

// Lengths of random / prefix-repetition: --input-len-max style or
// --range-ratio style, not both.
absl::Status SetLengths(WorkloadOptions& w) {
  const double ratio = absl::GetFlag(FLAGS_range_ratio);
  for (auto [len, max, name, lo, hi] :
       {std::tuple{absl::GetFlag(FLAGS_input_len),
                   absl::GetFlag(FLAGS_input_len_max), "input_len",
                   &w.input_len_min, &w.input_len_max},
        std::tuple{absl::GetFlag(FLAGS_output_len),
                   absl::GetFlag(FLAGS_output_len_max), "output_len",
                   &w.output_len_min, &w.output_len_max}}) {
    if (max > 0 && ratio != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--range-ratio and --", Dashed(name),
                       "-max both set a length range; give one"));
    }
    auto bounds = RangeRatioBounds(len, ratio, "--" + Dashed(name));
    if (!bounds.ok()) return bounds.status();
    *lo = max > 0 ? len : bounds->first;
    *hi = max > 0 ? max : bounds->second;
  }
  return absl::OkStatus();
}

absl::StatusOr<BenchOptions> OptionsFromFlags() {
  BenchOptions options;
  WorkloadOptions& w = options.workload;
  auto num = Aliased(FLAGS_num_prompts, "num_prompts", FLAGS_num_requests,
                     "num_requests");
  if (!num.ok()) return num.status();
  w.num_requests = *num;
  auto dataset = ParseDatasetName(absl::GetFlag(FLAGS_dataset_name));
  if (!dataset.ok()) return dataset.status();
  w.dataset = *dataset;
  w.dataset_path = absl::GetFlag(FLAGS_dataset_path);
  if (absl::Status s = SetLengths(w); !s.ok()) return s;
  if (IsTextDataset(w.dataset) && Specified("output_len")) {
    w.output_len_override = w.output_len_min;
  }
  w.prefix_len = absl::GetFlag(FLAGS_prefix_len);
  w.num_prefixes = absl::GetFlag(FLAGS_num_prefixes);
  w.prefix_share = absl::GetFlag(FLAGS_prefix_share);
  if (!(w.prefix_share >= 0.0 && w.prefix_share <= 1.0)) {
    return absl::InvalidArgumentError("--prefix-share must be in [0, 1]");
  }
  w.vocab_limit = absl::GetFlag(FLAGS_vocab_limit);
  w.seed = absl::GetFlag(FLAGS_seed);
  options.request_rate = absl::GetFlag(FLAGS_request_rate);
  options.burstiness = absl::GetFlag(FLAGS_burstiness);
  auto cap = Aliased(FLAGS_max_concurrency, "max_concurrency",
                     FLAGS_concurrency, "concurrency");
  if (!cap.ok()) return cap.status();
  options.max_concurrency = *cap;
  options.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  options.temperature = absl::GetFlag(FLAGS_temperature);
  options.ignore_eos = Specified("ignore_eos") ? absl::GetFlag(FLAGS_ignore_eos)
                                               : !IsTextDataset(w.dataset);
  auto goodput = ParseGoodput(absl::GetFlag(FLAGS_goodput));
  if (!goodput.ok()) return goodput.status();
  options.goodput = *goodput;
  options.percentile_metrics =
      absl::StrSplit(absl::GetFlag(FLAGS_percentile_metrics),
                     absl::ByAnyChar(" ,"), absl::SkipWhitespace());
  if (!absl::GetFlag(FLAGS_metric_percentiles).empty()) {
    auto p = ParseNumberList(absl::GetFlag(FLAGS_metric_percentiles),
                             "--metric-percentiles", /*allow_inf=*/false);
    if (!p.ok()) return p.status();
    options.metric_percentiles = *p;
  }
  const bool progress = Specified("progress") ? absl::GetFlag(FLAGS_progress)
                                              : isatty(fileno(stderr)) != 0;
  options.progress = progress ? stderr : nullptr;
  if (absl::Status s = ValidateBenchOptions(options); !s.ok()) return s;
  return options;
}

// Token counts for text datasets from a real tokenizer (--tokenizer).
absl::StatusOr<TokenCounter> LoadCounter(std::string path) {
  if (std::filesystem::is_directory(path)) path += "/tokenizer.json";
  auto loaded = tokenizer::Tokenizer::FromFile(path);
  if (!loaded.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tokenizer: ", loaded.status().message()));
  }
  std::shared_ptr<tokenizer::Tokenizer> shared = std::move(*loaded);
  return TokenCounter([shared](absl::string_view text) {
    auto ids = shared->Encode(text, /*add_special_tokens=*/false);
    return ids.ok() ? static_cast<int>(ids->size()) : EstimateTokens(text);
  });
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream file(path);
  file << text;
  file.close();
  if (!file)
    std::fprintf(stderr, "duet-bench: could not write %s\n", path.c_str());
  return static_cast<bool>(file);
}

// Where the JSON goes ("" = nowhere): --json-out, or --save-result's
// --result-dir/--result-filename.
absl::StatusOr<std::string> JsonPath(const std::string& label) {
  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  std::string name = absl::GetFlag(FLAGS_result_filename);
  const bool save = absl::GetFlag(FLAGS_save_result) || !name.empty();
  if (!json_out.empty() && save) {
    return absl::InvalidArgumentError(
        "give either --json-out FILE or --save-result [--result-filename "
        "FILE], not both");
  }
  if (!save) return json_out;
  if (name.empty()) {
    name = absl::StrCat(
        "duet-", label, "-",
        absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::LocalTimeZone()),
        ".json");
  }
  const std::string dir = absl::GetFlag(FLAGS_result_dir);
  return dir.empty() ? name : absl::StrCat(dir, "/", name);
}

std::string Stem(const std::string& path) {
  return absl::EndsWith(path, ".json") ? path.substr(0, path.size() - 5) : path;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Benchmarks a duet router the way `vllm bench serve` does.\n"
      "Usage: duet-bench --router HOST:PORT [--dataset-name random|sharegpt|"
      "jsonl|prefix-repetition] [--num-prompts N] [--request-rate R "
      "[--burstiness B]] [--max-concurrency C] [--goodput ttft:MS tpot:MS "
      "e2el:MS] [--save-result --result-filename FILE] [--sweep-rates "
      "1,2,4]\n"
      "Exit codes: 0 ok, 1 router unreachable / nothing completed / output "
      "not written, 2 usage error. Flags and JSON fields: docs/BENCH.md.");
  std::vector<std::string> words = JoinGoodputWords(argc, argv);
  NoteGivenFlags(words);
  std::vector<char*> joined;
  for (std::string& word : words) joined.push_back(word.data());
  auto parsed = ParseArgs(static_cast<int>(joined.size()), joined.data());
  if (!parsed.ok()) return UsageError(std::string(parsed.status().message()));
  if (parsed->help) {
    std::fputs(HelpText("client/bench_main.cc").c_str(), stdout);
    return kExitOk;
  }
  const std::vector<std::string>& args = parsed->positional;
  if (!args.empty()) {
    return UsageError(
        absl::StrCat("unexpected argument '", args[0], "' (see --help)"));
  }
  const std::string router = absl::GetFlag(FLAGS_router);
  if (router.empty()) return UsageError("--router host:port is required");
  auto options = OptionsFromFlags();
  if (!options.ok()) return UsageError(std::string(options.status().message()));
  const int64_t connect_ms = absl::GetFlag(FLAGS_connect_timeout_ms);
  if (connect_ms <= 0) return UsageError("--connect-timeout-ms must be > 0");
  std::vector<double> rates = {options->request_rate};
  const bool sweep = !absl::GetFlag(FLAGS_sweep_rates).empty();
  if (sweep) {
    if (Specified("request_rate")) {
      return UsageError("--sweep-rates replaces --request-rate; give one");
    }
    auto list = ParseNumberList(absl::GetFlag(FLAGS_sweep_rates),
                                "--sweep-rates", /*allow_inf=*/true);
    if (!list.ok()) return UsageError(std::string(list.status().message()));
    rates = *list;
  }
  auto json_path = JsonPath(sweep ? "sweep" : RateText(rates.front()) + "qps");
  if (!json_path.ok()) {
    return UsageError(std::string(json_path.status().message()));
  }
  if (!absl::GetFlag(FLAGS_tokenizer).empty()) {
    auto counter = LoadCounter(absl::GetFlag(FLAGS_tokenizer));
    if (!counter.ok()) {
      return UsageError(std::string(counter.status().message()));
    }
    options->workload.count_tokens = *counter;
  }
  auto specs = LoadBenchRequests(options->workload);
  if (!specs.ok()) return UsageError(std::string(specs.status().message()));

  auto tls = duet::security::ReadTlsFlags(duet::security::Party::kClient);
  if (!tls.ok()) return UsageError(std::string(tls.status().message()));
  auto client = DuetClient::Create(
      router,
      {.tls_ca_pem = tls->ca, .api_key = duet::security::ClientApiKey()});
  if (!client.ok()) return UsageError(std::string(client.status().message()));
  const bool detailed = absl::GetFlag(FLAGS_save_detailed) ||
                        absl::GetFlag(FLAGS_json_per_request);
  std::vector<BenchReport> reports;
  bool ok = true;
  for (double rate : rates) {
    BenchOptions run = *options;
    run.request_rate = rate;
    auto report =
        RunBench(**client, run, *specs, absl::Milliseconds(connect_ms));
    if (!report.ok()) {
      std::fprintf(stderr, "duet-bench: %s\n",
                   report.status().ToString().c_str());
      return kExitRpcFailed;
    }
    std::fputs(FormatReportTable(*report).c_str(), stdout);
    std::fflush(stdout);
    if (!json_path->empty()) {
      const std::string path =
          sweep ? SweepJsonPath(Stem(*json_path), rate) : *json_path;
      ok &= WriteFile(path, ReportToJson(*report, detailed));
    }
    if (report->completed == 0) {
      std::fprintf(stderr, "duet-bench: no request completed at rate %s\n",
                   RateText(rate).c_str());
      ok = false;
    }
    reports.push_back(*std::move(report));
  }
  if (sweep) {
    std::string csv = absl::GetFlag(FLAGS_sweep_csv);
    if (csv.empty()) {
      csv = json_path->empty() ? "duet-bench-sweep.csv"
                               : Stem(*json_path) + "_sweep.csv";
    }
    ok &= WriteFile(csv, SweepCsv(reports));
    std::string png = absl::GetFlag(FLAGS_sweep_plot);
    if (png.empty()) {
      png =
          (absl::EndsWith(csv, ".csv") ? csv.substr(0, csv.size() - 4) : csv) +
          ".png";
    }
    std::printf("sweep: %s\n", csv.c_str());
    if (png != "none") {
      absl::Status plotted =
          PlotSweep(absl::GetFlag(FLAGS_plot_script), csv, png);
      if (plotted.ok()) {
        std::printf("sweep plot: %s\n", png.c_str());
      } else {
        std::fprintf(stderr, "duet-bench: %s\n",
                     std::string(plotted.message()).c_str());
        ok = false;
      }
    }
  }
  return ok ? kExitOk : kExitRpcFailed;
}

}  // namespace
}  // namespace duet::client

int main(int argc, char** argv) { return duet::client::Main(argc, argv); }
