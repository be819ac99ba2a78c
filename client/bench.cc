#include "client/bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace duet::client {
namespace {

// A thread per in-flight request; beyond this the machine, not the server,
// would be what is measured.
constexpr int kMaxConcurrency = 4096;

// Thread pool that grows whenever a task would otherwise wait, so a Poisson
// burst never queues behind slow requests (open loop: a send time is a
// promise). Threads are reused after their request ends and joined at the
// end, so a long run does not accumulate one thread per request.
class ElasticPool {
 public:
  ~ElasticPool() { Join(); }

  void Submit(std::function<void()> task) {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
    // Idle workers that were already woken still count as idle until they
    // take a task, so compare against the queue, not against zero.
    if (tasks_.size() > idle_) {
      threads_.emplace_back([this] { Work(); });
    } else {
      cv_.notify_one();
    }
  }

  // Runs every submitted task to completion, then joins the threads.
  void Join() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closing_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void Work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [this] { return !tasks_.empty() || closing_; });
      --idle_;
      if (tasks_.empty()) return;  // Closing and nothing left.
      std::function<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  size_t idle_ = 0;
  bool closing_ = false;
  std::vector<std::thread> threads_;
};

RequestRecord RunOne(DuetClient& client, const BenchRequestSpec& spec,
                     const BenchOptions& options, SteadyTime run_start) {
  v1::GenerateRequest request;
  request.set_request_id(absl::StrCat(options.request_id_prefix, spec.index));
  request.mutable_prompt_token_ids()->Add(spec.prompt_token_ids.begin(),
                                          spec.prompt_token_ids.end());
  v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_max_tokens(spec.output_len);
  sampling->set_ignore_eos(true);
  sampling->set_temperature(options.temperature);
  sampling->set_seed(spec.sampling_seed);
  GenerateOptions call;
  call.timeout = options.timeout;

  GenerateResult result = client.Generate(request, call);
  RequestRecord record;
  record.index = spec.index;
  record.input_len = static_cast<int>(spec.prompt_token_ids.size());
  record.output_len_requested = spec.output_len;
  record.code = result.status.code();
  record.error_message = std::string(result.status.message());
  record.output_tokens = static_cast<int>(result.tokens.size());
  record.start_ms = MsBetween(run_start, result.start);
  record.ttft_ms = result.ttft_ms;
  record.e2e_ms = result.e2e_ms;
  record.itl_ms = std::move(result.itl_ms);
  record.server_timings = result.server_timings;
  return record;
}

std::string ArrivalName(const BenchOptions& o) {
  if (o.concurrency > 0) return "closed_loop";
  return std::isinf(o.request_rate) ? "all_at_once" : "poisson";
}

std::string ArrivalDescription(const BenchOptions& o) {
  if (o.concurrency > 0) {
    return absl::StrCat("closed loop, concurrency ", o.concurrency);
  }
  if (std::isinf(o.request_rate)) return "all requests at once";
  return absl::StrFormat("Poisson arrivals at %.3g req/s", o.request_rate);
}

std::string RangeText(int lo, int hi) {
  return lo == hi ? absl::StrCat(lo) : absl::StrCat(lo, "..", hi);
}

nlohmann::ordered_json DistributionJson(const Distribution& d) {
  nlohmann::ordered_json j;
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

}  // namespace

absl::Status ValidateBenchOptions(const BenchOptions& o) {
  const WorkloadOptions& w = o.workload;
  if (w.num_requests <= 0) {
    return absl::InvalidArgumentError("--num-requests must be > 0");
  }
  if (w.input_len_min <= 0 || w.input_len_max < w.input_len_min) {
    return absl::InvalidArgumentError(
        absl::StrCat("input length range must satisfy 1 <= min <= max, got ",
                     w.input_len_min, "..", w.input_len_max));
  }
  if (w.output_len_min <= 0 || w.output_len_max < w.output_len_min) {
    return absl::InvalidArgumentError(
        absl::StrCat("output length range must satisfy 1 <= min <= max, got ",
                     w.output_len_min, "..", w.output_len_max));
  }
  if (w.vocab_limit <= 0) {
    return absl::InvalidArgumentError("--vocab-limit must be > 0");
  }
  const bool open_loop = o.request_rate > 0;  // False for NaN too.
  const bool closed_loop = o.concurrency > 0;
  if (open_loop == closed_loop || o.request_rate < 0 || o.concurrency < 0 ||
      std::isnan(o.request_rate)) {
    return absl::InvalidArgumentError(
        "set exactly one of --request-rate (> 0, req/s, Poisson) or "
        "--concurrency (> 0, closed loop)");
  }
  if (o.concurrency > kMaxConcurrency) {
    return absl::InvalidArgumentError(
        absl::StrCat("--concurrency must be <= ", kMaxConcurrency));
  }
  if (o.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--timeout-ms must be > 0");
  }
  if (!(o.temperature >= 0)) {
    return absl::InvalidArgumentError("--temperature must be >= 0");
  }
  return absl::OkStatus();
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
    if (r.output_tokens != r.output_len_requested)
      ++report.output_len_mismatches;
    ttft.push_back(r.ttft_ms);
    e2e.push_back(r.e2e_ms);
    if (r.output_tokens >= 2) {
      tpot.push_back((r.e2e_ms - r.ttft_ms) / (r.output_tokens - 1));
    }
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
    report.output_throughput_tok_s = report.total_output_tokens / duration_s;
    report.total_token_throughput_tok_s =
        (report.total_input_tokens + report.total_output_tokens) / duration_s;
  }
  report.ttft_ms = Summarize(std::move(ttft));
  report.tpot_ms = Summarize(std::move(tpot));
  report.itl_ms = Summarize(std::move(itl));
  report.e2e_latency_ms = Summarize(std::move(e2e));
  report.requests = std::move(records);
  return report;
}

absl::StatusOr<BenchReport> RunBench(DuetClient& client,
                                     const BenchOptions& options,
                                     absl::Duration connect_timeout) {
  DUET_RETURN_IF_ERROR(ValidateBenchOptions(options));
  DUET_RETURN_IF_ERROR(client.WaitForConnected(connect_timeout));
  const std::vector<BenchRequestSpec> specs =
      MakeBenchRequests(options.workload);
  const int n = static_cast<int>(specs.size());
  std::vector<RequestRecord> records(specs.size());
  // Each slot is written by exactly one thread; joining publishes them.
  const SteadyTime start = std::chrono::steady_clock::now();
  auto run_one = [&](int i) {
    records[i] = RunOne(client, specs[i], options, start);
  };
  if (options.concurrency > 0) {
    std::atomic<int> next{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < std::min(options.concurrency, n); ++w) {
      workers.emplace_back([&] {
        for (int i; (i = next.fetch_add(1)) < n;) run_one(i);
      });
    }
    for (std::thread& t : workers) t.join();
  } else {
    const std::vector<double> offsets = PoissonArrivalOffsets(
        n, options.request_rate,
        DeriveSeed(options.workload.seed, kArrivalSeedStream));
    ElasticPool pool;
    for (int i = 0; i < n; ++i) {
      // Absolute send times, so scheduling delays never accumulate.
      std::this_thread::sleep_until(
          start +
          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
              std::chrono::duration<double>(offsets[i])));
      pool.Submit([&run_one, i] { run_one(i); });
    }
    pool.Join();
  }
  const double duration_s =
      MsBetween(start, std::chrono::steady_clock::now()) / 1000.0;
  return BuildReport(options, client.address(), std::move(records), duration_s);
}

std::string FormatReportTable(const BenchReport& r) {
  const BenchOptions& o = r.options;
  const WorkloadOptions& w = o.workload;
  std::string out = absl::StrFormat(
      "duet-bench: %d requests to %s, %s\n"
      "input len %s, output len %s, vocab limit %d, seed %d\n",
      w.num_requests, r.router, ArrivalDescription(o),
      RangeText(w.input_len_min, w.input_len_max),
      RangeText(w.output_len_min, w.output_len_max), w.vocab_limit, w.seed);
  const std::string rule(66, '-');
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
  row("Output token throughput (tok/s)",
      absl::StrFormat("%.1f", r.output_throughput_tok_s));
  row("Total token throughput (tok/s)",
      absl::StrFormat("%.1f", r.total_token_throughput_tok_s));
  row("Total input tokens", absl::StrCat(r.total_input_tokens));
  row("Total output tokens", absl::StrCat(r.total_output_tokens));
  row("Output length mismatches", absl::StrCat(r.output_len_mismatches));
  absl::StrAppend(&out, rule, "\n");
  absl::StrAppend(
      &out, absl::StrFormat("%-14s %8s %10s %10s %10s %10s\n", "Latency (ms)",
                            "count", "mean", "p50", "p90", "p99"));
  auto dist = [&out](absl::string_view label, const Distribution& d) {
    if (d.count == 0) {
      absl::StrAppend(&out, absl::StrFormat("%-14s %8d %10s %10s %10s %10s\n",
                                            label, 0, "-", "-", "-", "-"));
      return;
    }
    absl::StrAppend(
        &out, absl::StrFormat("%-14s %8d %10.3f %10.3f %10.3f %10.3f\n", label,
                              d.count, d.mean, d.p50, d.p90, d.p99));
  };
  dist("TTFT", r.ttft_ms);
  dist("TPOT", r.tpot_ms);
  dist("ITL", r.itl_ms);
  dist("E2E latency", r.e2e_latency_ms);
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
  nlohmann::ordered_json j;
  j["schema_version"] = 1;
  j["config"] = {
      {"router", r.router},
      {"num_requests", w.num_requests},
      {"arrival", ArrivalName(o)},
      {"request_rate_rps", o.concurrency > 0 || std::isinf(o.request_rate)
                               ? nlohmann::ordered_json(nullptr)
                               : nlohmann::ordered_json(o.request_rate)},
      {"concurrency", o.concurrency > 0 ? nlohmann::ordered_json(o.concurrency)
                                        : nlohmann::ordered_json(nullptr)},
      {"input_len_min", w.input_len_min},
      {"input_len_max", w.input_len_max},
      {"output_len_min", w.output_len_min},
      {"output_len_max", w.output_len_max},
      {"vocab_limit", w.vocab_limit},
      {"seed", w.seed},
      {"temperature", o.temperature},
      {"timeout_ms", absl::ToInt64Milliseconds(o.timeout)},
  };
  j["completed"] = r.completed;
  j["failed"] = r.failed;
  nlohmann::ordered_json failures = nlohmann::ordered_json::object();
  for (const auto& [code, f] : r.failures) {
    failures[code] = {{"count", f.count}, {"first_message", f.first_message}};
  }
  j["failures"] = failures;
  j["duration_s"] = r.duration_s;
  j["request_throughput_rps"] = r.request_throughput_rps;
  j["output_throughput_tok_s"] = r.output_throughput_tok_s;
  j["total_token_throughput_tok_s"] = r.total_token_throughput_tok_s;
  j["total_input_tokens"] = r.total_input_tokens;
  j["total_output_tokens"] = r.total_output_tokens;
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
    nlohmann::ordered_json requests = nlohmann::ordered_json::array();
    for (const RequestRecord& rec : r.requests) {
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
      });
    }
    j["requests"] = requests;
  }
  return j.dump(2) + "\n";
}

}  // namespace duet::client
