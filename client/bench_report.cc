// Aggregation of per-request records into the report, and its table and
// JSON forms.
#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/bench.h"
#include "nlohmann/json.hpp"

namespace duet::client {
namespace {

using Json = nlohmann::ordered_json;

std::string ArrivalName(const BenchOptions& o) {
  if (std::isinf(o.request_rate)) {
    return o.max_concurrency > 0 ? "closed_loop" : "all_at_once";
  }
  return o.burstiness == 1.0 ? "poisson" : "gamma";
}

std::string ArrivalDescription(const BenchOptions& o) {
  if (std::isinf(o.request_rate)) {
    return o.max_concurrency > 0
               ? absl::StrCat("closed loop, concurrency ", o.max_concurrency)
               : "all requests at once";
  }
  std::string text =
      o.burstiness == 1.0
          ? absl::StrFormat("Poisson arrivals at %.3g req/s", o.request_rate)
          : absl::StrFormat("gamma arrivals at %.3g req/s, burstiness %.3g",
                            o.request_rate, o.burstiness);
  if (o.max_concurrency > 0) {
    absl::StrAppend(&text, ", at most ", o.max_concurrency, " in flight");
  }
  return text;
}

std::string RangeText(int lo, int hi) {
  return lo == hi ? absl::StrCat(lo) : absl::StrCat(lo, "..", hi);
}

std::string WorkloadDescription(const WorkloadOptions& w) {
  switch (w.dataset) {
    case DatasetKind::kRandom:
      return absl::StrFormat(
          "random: input len %s, output len %s, vocab limit %d, seed %d",
          RangeText(w.input_len_min, w.input_len_max),
          RangeText(w.output_len_min, w.output_len_max), w.vocab_limit, w.seed);
    case DatasetKind::kPrefixRepetition:
      return absl::StrFormat(
          "prefix-repetition: %d prefixes of %d tokens, suffix len %s, output "
          "len %s, seed %d",
          w.num_prefixes, w.prefix_len,
          RangeText(w.input_len_min, w.input_len_max),
          RangeText(w.output_len_min, w.output_len_max), w.seed);
    default:
      return absl::StrFormat("%s: %s, output len %s, seed %d",
                             DatasetName(w.dataset), w.dataset_path,
                             w.output_len_override > 0
                                 ? absl::StrCat(w.output_len_override)
                                 : std::string("from the file"),
                             w.seed);
  }
}

Json DistributionJson(const Distribution& d) {
  Json j;
  j["count"] = d.count;
  for (const auto& [name, value] :
       {std::pair<const char*, double>{"mean", d.mean},
        {"p50", d.p50},
        {"p90", d.p90},
        {"p99", d.p99},
        {"min", d.min},
        {"max", d.max}}) {
    if (d.count == 0) {
      j[name] = nullptr;  // No sample: no value, rather than a fake 0.
    } else {
      j[name] = value;
    }
  }
  return j;
}

Json OrNull(bool has, double value) { return has ? Json(value) : Json(); }

// vLLM's flat keys: mean_ttft_ms, median_ttft_ms, std_ttft_ms, p90_ttft_ms,
// p99_ttft_ms and p<N>_ttft_ms for each --metric-percentiles value.
void AddVllmMetric(Json& j, const std::string& metric, const Distribution& d,
                   bool with_extra) {
  const bool has = d.count > 0;
  j[absl::StrCat("mean_", metric, "_ms")] = OrNull(has, d.mean);
  j[absl::StrCat("median_", metric, "_ms")] = OrNull(has, d.p50);
  j[absl::StrCat("std_", metric, "_ms")] = OrNull(has, d.stddev);
  j[absl::StrCat("p90_", metric, "_ms")] = OrNull(has, d.p90);
  j[absl::StrCat("p99_", metric, "_ms")] = OrNull(has, d.p99);
  if (!with_extra) return;
  for (const auto& [percent, value] : d.extra) {
    j[absl::StrCat("p", PercentileName(percent), "_", metric, "_ms")] =
        OrNull(has, value);
  }
}

}  // namespace

std::string RateText(double rate) {
  return std::isinf(rate) ? "inf" : absl::StrFormat("%g", rate);
}

const Distribution& BenchReport::metric(const std::string& name) const {
  if (name == "ttft") return ttft_ms;
  if (name == "tpot") return tpot_ms;
  if (name == "itl") return itl_ms;
  return e2e_latency_ms;
}

BenchReport BuildReport(const BenchOptions& options, std::string router,
                        std::vector<RequestRecord> records, double duration_s) {
  BenchReport report;
  report.options = options;
  report.router = std::move(router);
  report.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2e;
  ServerTimingMeans& server = report.server_timings_mean;
  for (const RequestRecord& r : records) {
    if (!r.ok()) {
      ++report.failed;
      FailureSummary& f = report.failures[absl::StatusCodeToString(r.code)];
      if (f.count++ == 0) f.first_message = r.error_message;
      continue;
    }
    ++report.completed;
    report.total_input_tokens += r.input_len;
    report.total_output_tokens += r.output_tokens;
    if (options.ignore_eos && r.output_tokens != r.output_len_requested) {
      ++report.output_len_mismatches;
    }
    if (!options.goodput.empty() &&
        MeetsSlos(options.goodput, r.ttft_ms, r.tpot_ms(), r.e2e_ms)) {
      ++report.good_completed;
    }
    ttft.push_back(r.ttft_ms);
    e2e.push_back(r.e2e_ms);
    if (r.output_tokens >= 2) tpot.push_back(r.tpot_ms());
    itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
    server.queue_ms += r.server_timings.queue_ms();
    server.prefill_ms += r.server_timings.prefill_ms();
    server.transfer_ms += r.server_timings.transfer_ms();
    server.ttft_ms += r.server_timings.ttft_ms();
    server.decode_ms += r.server_timings.decode_ms();
  }
  if (report.completed > 0) {
    const double n = report.completed;
    server = {server.queue_ms / n, server.prefill_ms / n,
              server.transfer_ms / n, server.ttft_ms / n, server.decode_ms / n};
  }
  if (duration_s > 0) {
    report.request_throughput_rps = report.completed / duration_s;
    report.request_goodput_rps = report.good_completed / duration_s;
    report.output_throughput_tok_s = report.total_output_tokens / duration_s;
    report.total_token_throughput_tok_s =
        (report.total_input_tokens + report.total_output_tokens) / duration_s;
  }
  const std::vector<double>& extra = options.metric_percentiles;
  report.ttft_ms = Summarize(std::move(ttft), extra);
  report.tpot_ms = Summarize(std::move(tpot), extra);
  report.itl_ms = Summarize(std::move(itl), extra);
  report.e2e_latency_ms = Summarize(std::move(e2e), extra);
  report.requests = std::move(records);
  return report;
}

std::string FormatReportTable(const BenchReport& r) {
  const BenchOptions& o = r.options;
  const WorkloadOptions& w = o.workload;
  std::string out =
      absl::StrFormat("duet-bench: %d requests to %s, %s\n%s\n", w.num_requests,
                      r.router, ArrivalDescription(o), WorkloadDescription(w));
  const std::string rule(76, '-');
  absl::StrAppend(&out, rule, "\n");
  auto row = [&out](absl::string_view label, const std::string& value) {
    absl::StrAppend(&out, absl::StrFormat("%-34s %14s\n", label, value));
  };
  row("Completed requests", absl::StrCat(r.completed));
  std::vector<std::string> codes;
  for (const auto& [code, f] : r.failures) {
    codes.push_back(absl::StrCat(code, " x", f.count));
  }
  row("Failed requests", absl::StrCat(r.failed));
  if (!codes.empty()) {
    absl::StrAppend(&out, "  by status: ", absl::StrJoin(codes, ", "), "\n");
    for (const auto& [code, f] : r.failures) {
      absl::StrAppend(&out, "  first ", code, ": ", f.first_message, "\n");
    }
  }
  row("Duration (s)", absl::StrFormat("%.3f", r.duration_s));
  row("Request throughput (req/s)",
      absl::StrFormat("%.2f", r.request_throughput_rps));
  if (!o.goodput.empty()) {
    row(absl::StrCat("Request goodput (req/s)"),
        absl::StrFormat("%.2f", r.request_goodput_rps));
    absl::StrAppend(&out, "  ", r.good_completed, " of ", r.completed,
                    " completed met ", GoodputToString(o.goodput), " (ms)\n");
  }
  row("Output token throughput (tok/s)",
      absl::StrFormat("%.1f", r.output_throughput_tok_s));
  row("Total token throughput (tok/s)",
      absl::StrFormat("%.1f", r.total_token_throughput_tok_s));
  row("Total input tokens", absl::StrCat(r.total_input_tokens));
  row("Total output tokens", absl::StrCat(r.total_output_tokens));
  if (o.ignore_eos) {
    row("Output length mismatches", absl::StrCat(r.output_len_mismatches));
  }
  absl::StrAppend(&out, rule, "\n");
  absl::StrAppend(&out, absl::StrFormat("%-14s %8s %10s %10s %10s %10s %10s\n",
                                        "Latency (ms)", "count", "mean", "std",
                                        "p50", "p90", "p99"));
  const std::map<std::string, std::string> labels = {{"ttft", "TTFT"},
                                                     {"tpot", "TPOT"},
                                                     {"itl", "ITL"},
                                                     {"e2el", "E2E latency"}};
  for (const std::string& metric : o.percentile_metrics) {
    const Distribution& d = r.metric(metric);
    const std::string& label = labels.at(metric);
    if (d.count == 0) {
      absl::StrAppend(
          &out, absl::StrFormat("%-14s %8d %10s %10s %10s %10s %10s\n", label,
                                0, "-", "-", "-", "-", "-"));
      continue;
    }
    absl::StrAppend(
        &out,
        absl::StrFormat("%-14s %8d %10.3f %10.3f %10.3f %10.3f %10.3f\n", label,
                        d.count, d.mean, d.stddev, d.p50, d.p90, d.p99));
  }
  absl::StrAppend(&out, rule, "\n");
  const ServerTimingMeans& s = r.server_timings_mean;
  absl::StrAppend(
      &out, absl::StrFormat("Server means (ms): queue %.3f, prefill %.3f, "
                            "transfer %.3f, ttft %.3f, decode %.3f\n",
                            s.queue_ms, s.prefill_ms, s.transfer_ms, s.ttft_ms,
                            s.decode_ms));
  return out;
}

std::string ReportToJson(const BenchReport& r, bool include_requests) {
  const BenchOptions& o = r.options;
  const WorkloadOptions& w = o.workload;
  const bool finite_rate = !std::isinf(o.request_rate);
  const Json cap = o.max_concurrency > 0 ? Json(o.max_concurrency) : Json();
  Json j;
  j["schema_version"] = 2;
  // vLLM's run description.
  j["date"] = r.date;
  j["backend"] = "duet";
  j["dataset_name"] = DatasetName(w.dataset);
  j["num_prompts"] = w.num_requests;
  j["request_rate"] = finite_rate ? Json(o.request_rate) : Json("inf");
  j["burstiness"] = o.burstiness;
  j["max_concurrency"] = cap;
  Json goodput;  // null without SLOs.
  if (o.goodput.ttft_ms) goodput["ttft"] = *o.goodput.ttft_ms;
  if (o.goodput.tpot_ms) goodput["tpot"] = *o.goodput.tpot_ms;
  if (o.goodput.e2el_ms) goodput["e2el"] = *o.goodput.e2el_ms;
  j["goodput"] = goodput;
  j["config"] = {
      {"router", r.router},
      {"num_requests", w.num_requests},
      {"arrival", ArrivalName(o)},
      {"request_rate_rps", finite_rate ? Json(o.request_rate) : Json()},
      {"burstiness", o.burstiness},
      {"concurrency", cap},
      {"dataset_name", DatasetName(w.dataset)},
      {"dataset_path", w.dataset_path},
      {"input_len_min", w.input_len_min},
      {"input_len_max", w.input_len_max},
      {"output_len_min", w.output_len_min},
      {"output_len_max", w.output_len_max},
      {"prefix_len", w.dataset == DatasetKind::kPrefixRepetition
                         ? Json(w.prefix_len)
                         : Json()},
      {"num_prefixes", w.dataset == DatasetKind::kPrefixRepetition
                           ? Json(w.num_prefixes)
                           : Json()},
      {"vocab_limit", w.vocab_limit},
      {"seed", w.seed},
      {"temperature", o.temperature},
      {"ignore_eos", o.ignore_eos},
      {"timeout_ms", absl::ToInt64Milliseconds(o.timeout)},
  };
  // vLLM's result fields.
  j["duration"] = r.duration_s;
  j["completed"] = r.completed;
  j["failed"] = r.failed;
  j["total_input_tokens"] = r.total_input_tokens;
  j["total_output_tokens"] = r.total_output_tokens;
  j["request_throughput"] = r.request_throughput_rps;
  j["request_goodput"] =
      o.goodput.empty() ? Json() : Json(r.request_goodput_rps);
  j["good_completed"] = o.goodput.empty() ? Json() : Json(r.good_completed);
  j["output_throughput"] = r.output_throughput_tok_s;
  j["total_token_throughput"] = r.total_token_throughput_tok_s;
  for (const std::string& metric : AllLatencyMetrics()) {
    const auto& shown = o.percentile_metrics;
    AddVllmMetric(j, metric, r.metric(metric),
                  std::find(shown.begin(), shown.end(), metric) != shown.end());
  }
  // duet's own (schema 1) fields.
  Json failures = Json::object();
  for (const auto& [code, f] : r.failures) {
    failures[code] = {{"count", f.count}, {"first_message", f.first_message}};
  }
  j["failures"] = failures;
  j["duration_s"] = r.duration_s;
  j["request_throughput_rps"] = r.request_throughput_rps;
  j["output_throughput_tok_s"] = r.output_throughput_tok_s;
  j["total_token_throughput_tok_s"] = r.total_token_throughput_tok_s;
  j["output_len_mismatches"] = r.output_len_mismatches;
  j["percentile_method"] = "linear_interpolation";
  j["ttft_ms"] = DistributionJson(r.ttft_ms);
  j["tpot_ms"] = DistributionJson(r.tpot_ms);
  j["itl_ms"] = DistributionJson(r.itl_ms);
  j["e2e_latency_ms"] = DistributionJson(r.e2e_latency_ms);
  const ServerTimingMeans& s = r.server_timings_mean;
  j["server_timings_mean_ms"] = {{"queue_ms", s.queue_ms},
                                 {"prefill_ms", s.prefill_ms},
                                 {"transfer_ms", s.transfer_ms},
                                 {"ttft_ms", s.ttft_ms},
                                 {"decode_ms", s.decode_ms}};
  if (include_requests) {
    // vLLM's per-request arrays (seconds, as vLLM writes them; errors ""
    // for completed requests), then duet's records (ms).
    Json input_lens = Json::array(), output_lens = Json::array(),
         ttfts = Json::array(), itls = Json::array(), e2els = Json::array(),
         errors = Json::array();
    Json requests = Json::array();
    for (const RequestRecord& rec : r.requests) {
      input_lens.push_back(rec.input_len);
      output_lens.push_back(rec.output_tokens);
      ttfts.push_back(rec.ttft_ms / 1000.0);
      Json gaps = Json::array();
      for (double g : rec.itl_ms) gaps.push_back(g / 1000.0);
      itls.push_back(gaps);
      e2els.push_back(rec.e2e_ms / 1000.0);
      errors.push_back(rec.ok()
                           ? std::string()
                           : absl::StrCat(absl::StatusCodeToString(rec.code),
                                          ": ", rec.error_message));
      requests.push_back({
          {"index", rec.index},
          {"status", absl::StatusCodeToString(rec.code)},
          {"error_message", rec.error_message},
          {"input_len", rec.input_len},
          {"output_len_requested", rec.output_len_requested},
          {"output_tokens", rec.output_tokens},
          {"start_ms", rec.start_ms},
          {"ttft_ms", rec.ttft_ms},
          {"e2e_ms", rec.e2e_ms},
          {"itl_ms", rec.itl_ms},
          {"cached_prompt_tokens", rec.cached_prompt_tokens},
          {"server_timings_ms",
           {{"queue_ms", rec.server_timings.queue_ms()},
            {"prefill_ms", rec.server_timings.prefill_ms()},
            {"transfer_ms", rec.server_timings.transfer_ms()},
            {"ttft_ms", rec.server_timings.ttft_ms()},
            {"decode_ms", rec.server_timings.decode_ms()}}},
      });
    }
    j["input_lens"] = input_lens;
    j["output_lens"] = output_lens;
    j["ttfts"] = ttfts;
    j["itls"] = itls;
    j["e2els"] = e2els;
    j["errors"] = errors;
    j["requests"] = requests;
  }
  return j.dump(2) + "\n";
}

}  // namespace duet::client
