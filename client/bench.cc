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
#include "absl/time/clock.h"
#include "common/status.h"

namespace duet::client {
namespace {

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

// Counting semaphore for --max-concurrency (std::counting_semaphore needs a
// compile-time bound).
class Slots {
 public:
  explicit Slots(int n) : free_(n) {}
  void Acquire() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return free_ > 0; });
    --free_;
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++free_;
    }
    cv_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int free_;
};

// Redraws the progress line every `interval` until stopped, then once more
// with a newline, so the final counts stay on screen.
class ProgressLine {
 public:
  ProgressLine(FILE* out, absl::Duration interval, int total, SteadyTime start,
               const std::atomic<int>& sent, const std::atomic<int>& completed,
               const std::atomic<int>& failed)
      : out_(out),
        total_(total),
        start_(start),
        sent_(sent),
        completed_(completed),
        failed_(failed) {
    if (out_ == nullptr) return;
    thread_ = std::thread([this, interval] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!cv_.wait_for(lock, absl::ToChronoNanoseconds(interval),
                           [this] { return stop_; })) {
        Draw("");
      }
    });
  }
  ~ProgressLine() { Stop(); }
  void Stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    Draw("\n");
  }

 private:
  void Draw(const char* end) {
    const int done = completed_.load(), failed = failed_.load();
    const std::string line = FormatProgress(
        done, failed, sent_.load() - done - failed, total_,
        MsBetween(start_, std::chrono::steady_clock::now()) / 1000.0);
    // Trailing spaces wipe what a longer previous line left.
    std::fprintf(out_, "\r%s   %s", line.c_str(), end);
    std::fflush(out_);
  }

  FILE* out_;
  int total_;
  SteadyTime start_;
  const std::atomic<int>& sent_;
  const std::atomic<int>& completed_;
  const std::atomic<int>& failed_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

RequestRecord RunOne(DuetClient& client, const BenchRequestSpec& spec,
                     const BenchOptions& options, SteadyTime run_start) {
  v1::GenerateRequest request;
  request.set_request_id(absl::StrCat(options.request_id_prefix, spec.index));
  if (spec.prompt_text.empty()) {
    request.mutable_prompt_token_ids()->Add(spec.prompt_token_ids.begin(),
                                            spec.prompt_token_ids.end());
  } else {
    request.set_prompt(spec.prompt_text);  // The router tokenizes it.
  }
  v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_max_tokens(spec.output_len);
  sampling->set_ignore_eos(options.ignore_eos);
  sampling->set_temperature(options.temperature);
  sampling->set_seed(spec.sampling_seed);
  GenerateOptions call;
  call.timeout = options.timeout;

  GenerateResult result = client.Generate(request, call);
  RequestRecord record;
  record.index = spec.index;
  record.input_len = spec.input_len;
  // Text prompts: the router's token count beats the client's estimate.
  if (!spec.prompt_text.empty() && result.got_finished &&
      result.usage.prompt_tokens() > 0) {
    record.input_len = static_cast<int>(result.usage.prompt_tokens());
  }
  record.output_len_requested = spec.output_len;
  record.code = result.status.code();
  record.error_message = std::string(result.status.message());
  record.output_tokens = static_cast<int>(result.tokens.size());
  record.start_ms = MsBetween(run_start, result.start);
  record.ttft_ms = result.ttft_ms;
  record.e2e_ms = result.e2e_ms;
  record.itl_ms = std::move(result.itl_ms);
  record.server_timings = result.server_timings;
  if (result.got_finished) {
    record.cached_prompt_tokens =
        static_cast<int>(result.usage.cached_prompt_tokens());
  }
  return record;
}

}  // namespace

absl::Status ValidateBenchOptions(const BenchOptions& o) {
  const WorkloadOptions& w = o.workload;
  auto invalid = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(parts...));
  };
  if (w.num_requests <= 0) {
    return invalid("--num-prompts (--num-requests) must be > 0, got ",
                   w.num_requests);
  }
  if (w.input_len_min <= 0 || w.input_len_max < w.input_len_min) {
    return invalid("input length range must satisfy 1 <= min <= max, got ",
                   w.input_len_min, "..", w.input_len_max,
                   " (check --input-len, --input-len-max and --range-ratio)");
  }
  if (w.output_len_min <= 0 || w.output_len_max < w.output_len_min) {
    return invalid("output length range must satisfy 1 <= min <= max, got ",
                   w.output_len_min, "..", w.output_len_max,
                   " (check --output-len, --output-len-max and --range-ratio)");
  }
  if (w.vocab_limit <= 0) {
    return invalid("--vocab-limit must be > 0, got ", w.vocab_limit);
  }
  if (w.dataset == DatasetKind::kPrefixRepetition) {
    if (w.prefix_len <= 0) {
      return invalid("--prefix-len must be > 0 for prefix-repetition, got ",
                     w.prefix_len);
    }
    if (w.num_prefixes <= 0) {
      return invalid("--num-prefixes must be > 0 for prefix-repetition, got ",
                     w.num_prefixes);
    }
  }
  if (IsTextDataset(w.dataset) && w.dataset_path.empty()) {
    return invalid("--dataset-name ", DatasetName(w.dataset),
                   " needs --dataset-path FILE");
  }
  if (!IsTextDataset(w.dataset) && !w.dataset_path.empty()) {
    return invalid(
        "--dataset-path is read only by --dataset-name sharegpt "
        "or jsonl, not ",
        DatasetName(w.dataset));
  }
  if (!(o.request_rate > 0)) {  // NaN fails too.
    return invalid(
        "--request-rate must be > 0 requests/s or inf (all at once), got ",
        o.request_rate);
  }
  if (!(o.burstiness > 0) || std::isinf(o.burstiness)) {
    return invalid(
        "--burstiness must be a finite number > 0 (1 = Poisson, < 1 "
        "burstier, > 1 more regular), got ",
        o.burstiness);
  }
  if (o.max_concurrency < 0 || o.max_concurrency > kMaxConcurrency) {
    return invalid("--max-concurrency (--concurrency) must be in [0, ",
                   kMaxConcurrency, "] (0 = no cap), got ", o.max_concurrency);
  }
  if (o.timeout <= absl::ZeroDuration()) {
    return invalid("--timeout-ms must be > 0");
  }
  if (!(o.temperature >= 0)) {
    return invalid("--temperature must be >= 0, got ", o.temperature);
  }
  for (const std::string& m : o.percentile_metrics) {
    const auto& all = AllLatencyMetrics();
    if (std::find(all.begin(), all.end(), m) == all.end()) {
      return invalid("--percentile-metrics: unknown metric '", m,
                     "' (use ttft, tpot, itl, e2el)");
    }
  }
  for (double p : o.metric_percentiles) {
    if (!(p > 0 && p <= 100)) {
      return invalid("--metric-percentiles: ", p, " is not in (0, 100]");
    }
  }
  return absl::OkStatus();
}

std::string FormatProgress(int completed, int failed, int in_flight, int total,
                           double elapsed_s) {
  return absl::StrFormat(
      "[duet-bench] %d/%d done, %d failed, %d in flight, "
      "%.1f s",
      completed + failed, total, failed, in_flight, elapsed_s);
}

absl::StatusOr<BenchReport> RunBench(DuetClient& client,
                                     const BenchOptions& options,
                                     absl::Duration connect_timeout) {
  DUET_RETURN_IF_ERROR(ValidateBenchOptions(options));
  absl::StatusOr<std::vector<BenchRequestSpec>> specs =
      LoadBenchRequests(options.workload);
  if (!specs.ok()) return specs.status();
  return RunBench(client, options, *specs, connect_timeout);
}

absl::StatusOr<BenchReport> RunBench(DuetClient& client,
                                     const BenchOptions& options,
                                     const std::vector<BenchRequestSpec>& specs,
                                     absl::Duration connect_timeout) {
  DUET_RETURN_IF_ERROR(ValidateBenchOptions(options));
  DUET_RETURN_IF_ERROR(client.WaitForConnected(connect_timeout));
  const int n = static_cast<int>(specs.size());
  std::vector<RequestRecord> records(specs.size());
  const std::vector<double> offsets =
      ArrivalOffsets(n, options.request_rate, options.burstiness,
                     DeriveSeed(options.workload.seed, kArrivalSeedStream));
  const std::string date =
      absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::LocalTimeZone());
  std::atomic<int> sent{0}, completed{0}, failed{0};
  const SteadyTime start = std::chrono::steady_clock::now();
  ProgressLine progress(options.progress, options.progress_interval, n, start,
                        sent, completed, failed);
  Slots slots(options.max_concurrency);
  {
    ElasticPool pool;
    for (int i = 0; i < n; ++i) {
      // Absolute send times, so scheduling delays never accumulate.
      std::this_thread::sleep_until(
          start +
          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
              std::chrono::duration<double>(offsets[i])));
      // Due requests wait here for a slot, in order, as vLLM's semaphore
      // makes them; with rate inf this is a closed loop.
      if (options.max_concurrency > 0) slots.Acquire();
      sent.fetch_add(1);
      // Each slot of `records` is written by exactly one thread; joining
      // the pool publishes them.
      pool.Submit([&, i] {
        records[i] = RunOne(client, specs[i], options, start);
        (records[i].ok() ? completed : failed).fetch_add(1);
        if (options.max_concurrency > 0) slots.Release();
      });
    }
    pool.Join();
  }
  const double duration_s =
      MsBetween(start, std::chrono::steady_clock::now()) / 1000.0;
  progress.Stop();
  BenchReport report =
      BuildReport(options, client.address(), std::move(records), duration_s);
  report.date = date;
  return report;
}

}  // namespace duet::client
