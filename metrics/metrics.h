// Prometheus metrics: counters, gauges and histograms with fixed buckets,
// kept in a Registry and rendered in the Prometheus text exposition format
// 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).
//
// Written by hand on purpose. Debian 12 does package a C++ client
// (prometheus-cpp 1.0.1, prometheus-cpp-dev), but duet needs only the text
// format, served by its own http/ server, plus values read at scrape time
// (an engine's running / waiting requests, KV pool use), which
// prometheus-cpp has no metric type for (it would take a custom
// Collectable); this file is that subset, with no new dependency.
//
// Hot paths cost one or two relaxed atomic operations: Counter::Inc,
// Gauge::Set/Add and Histogram::Observe never lock. Registration and
// Render take the registry's mutex. Metric objects live as long as their
// Registry and never move, so callers keep plain pointers to them.
//
//   metrics::Registry registry;
//   DUET_ASSIGN_OR_RETURN(metrics::Counter* ok,
//       registry.AddCounter("duet:request_success_total", "Requests...",
//                           {{"finished_reason", "stop"}}));
//   ok->Inc();
//   std::string text = registry.Render();
#ifndef DUET_METRICS_METRICS_H_
#define DUET_METRICS_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace duet::metrics {

// Label name -> value pairs of one metric (a small fixed set: every child
// of a family has the same names in the same order).
using Labels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing value.
class Counter {
 public:
  // `v` must be >= 0 (a negative one is ignored: counters never go down).
  void Inc(double v = 1.0) {
    if (v > 0) value_.fetch_add(v, std::memory_order_relaxed);
  }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into fixed buckets (upper bounds, increasing; +Inf
// is implicit), with their sum.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);

  struct Snapshot {
    std::vector<double> bounds;        // without +Inf
    std::vector<uint64_t> cumulative;  // bounds.size() + 1 (last: +Inf)
    uint64_t count = 0;                // == cumulative.back()
    double sum = 0.0;
  };
  // Consistent in itself: count is always the +Inf bucket (an observation
  // racing with it may be missing from the sum or the buckets, never
  // counted in one bucket twice).
  Snapshot Read() const;

 private:
  const std::vector<double> bounds_;
  // Per bucket (not cumulative): bounds_.size() + 1 slots, the last +Inf.
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0.0};
};

// Buckets of vLLM's histograms of the same name, so dashboards made for
// vLLM read duet's the same way.
std::vector<double> TimeToFirstTokenBuckets();
std::vector<double> InterTokenLatencyBuckets();
std::vector<double> RequestLatencyBuckets();
// `count` bounds from `start`, each `factor` times the previous.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

enum class Type { kCounter, kGauge, kHistogram };

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Each Add* registers one metric (one label set) of the family `name`,
  // creating the family on first use. InvalidArgument for a name or label
  // name Prometheus does not accept, or one whose family was registered
  // with another type, help text or label names; AlreadyExists for a label
  // set registered twice.
  absl::StatusOr<Counter*> AddCounter(absl::string_view name,
                                      absl::string_view help,
                                      const Labels& labels = {});
  absl::StatusOr<Gauge*> AddGauge(absl::string_view name,
                                  absl::string_view help,
                                  const Labels& labels = {});
  // `bounds`: finite and strictly increasing (InvalidArgument otherwise).
  absl::StatusOr<Histogram*> AddHistogram(absl::string_view name,
                                          absl::string_view help,
                                          std::vector<double> bounds,
                                          const Labels& labels = {});
  // A counter or gauge whose value `read` returns at each Render (a value
  // something else already keeps: an engine's queue length, its
  // preemptions since start). `read` runs with the registry's lock held:
  // it must not call back into the registry. kHistogram is
  // InvalidArgument.
  absl::Status AddCallback(absl::string_view name, absl::string_view help,
                           Type type, std::function<double()> read,
                           const Labels& labels = {});

  // Every family in registration order, each metric in registration order.
  std::string Render() const;

 private:
  struct Child {
    Labels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::function<double()> read;
  };
  struct Family {
    std::string name;
    std::string help;
    Type type;
    std::vector<std::string> label_names;
    std::vector<Child> children;
  };
  // The child to fill for (name, labels), or why not.
  absl::StatusOr<Child*> NewChild(absl::string_view name,
                                  absl::string_view help, Type type,
                                  const Labels& labels)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Family>> families_ ABSL_GUARDED_BY(mu_);
};

// The exposition format's pieces, public for tests.
// A sample value: integers exactly, others in the shortest form that reads
// back the same; +Inf, -Inf, NaN.
std::string FormatValue(double v);
// HELP text: backslash and newline escaped.
std::string EscapeHelp(absl::string_view help);
// A label value: backslash, double quote and newline escaped.
std::string EscapeLabelValue(absl::string_view value);

// The Content-Type of Render()'s text.
inline constexpr absl::string_view kContentType =
    "text/plain; version=0.0.4; charset=utf-8";

}  // namespace duet::metrics

#endif  // DUET_METRICS_METRICS_H_
