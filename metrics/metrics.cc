#include "metrics/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace duet::metrics {
namespace {

bool ValidMetricName(absl::string_view n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                       c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// Label names take no colon, and names starting "__" are Prometheus's own.
bool ValidLabelName(absl::string_view n) {
  if (n.empty() || absl::StartsWith(n, "__")) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

const char* TypeName(Type t) {
  switch (t) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// `{a="x",b="y"}` with `extra` (le) appended; "" for no labels at all.
std::string LabelText(const Labels& labels,
                      const std::pair<std::string, std::string>* extra) {
  if (labels.empty() && extra == nullptr) return "";
  std::string out = "{";
  bool first = true;
  auto add = [&](const std::pair<std::string, std::string>& l) {
    if (!first) out += ",";
    first = false;
    absl::StrAppend(&out, l.first, "=\"", EscapeLabelValue(l.second), "\"");
  };
  for (const auto& l : labels) add(l);
  if (extra != nullptr) add(*extra);
  out += "}";
  return out;
}

}  // namespace

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Integers below 2^53 exactly (token and byte counts stay readable).
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// --- Histogram ---------------------------------------------------------------

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double v) {
  // Buckets are "less than or equal": v == bound lands in that bound's.
  const size_t i = static_cast<size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.bounds = bounds_;
  s.cumulative.resize(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = total;
  }
  s.count = total;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> TimeToFirstTokenBuckets() {
  return {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
          0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
          20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
}

std::vector<double> InterTokenLatencyBuckets() {
  return {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
          0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
}

std::vector<double> RequestLatencyBuckets() {
  return {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
          5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
          60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

// --- Registry ----------------------------------------------------------------

absl::StatusOr<Registry::Child*> Registry::NewChild(absl::string_view name,
                                                    absl::string_view help,
                                                    Type type,
                                                    const Labels& labels) {
  if (!ValidMetricName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name, "' is not a Prometheus metric name"));
  }
  std::vector<std::string> label_names;
  for (const auto& [label, value] : labels) {
    if (!ValidLabelName(label) || (type == Type::kHistogram && label == "le")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", label, "' is not a label name metric ", name, " may use"));
    }
    if (std::find(label_names.begin(), label_names.end(), label) !=
        label_names.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("label '", label, "' given twice for ", name));
    }
    label_names.push_back(label);
  }
  Family* family = nullptr;
  for (const auto& f : families_) {
    if (f->name == name) family = f.get();
  }
  if (family == nullptr) {
    auto f = std::make_unique<Family>();
    f->name = std::string(name);
    f->help = std::string(help);
    f->type = type;
    f->label_names = label_names;
    family = f.get();
    families_.push_back(std::move(f));
  } else if (family->type != type || family->help != help ||
             family->label_names != label_names) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metric ", name,
        " is registered already with another type, help or label names"));
  }
  for (const Child& c : family->children) {
    if (c.labels == labels) {
      return absl::AlreadyExistsError(absl::StrCat(
          "metric ", name, LabelText(labels, nullptr), " registered twice"));
    }
  }
  family->children.push_back(Child{labels, nullptr, nullptr, nullptr, {}});
  return &family->children.back();
}

absl::StatusOr<Counter*> Registry::AddCounter(absl::string_view name,
                                              absl::string_view help,
                                              const Labels& labels) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Child*> c = NewChild(name, help, Type::kCounter, labels);
  if (!c.ok()) return c.status();
  (*c)->counter = std::make_unique<Counter>();
  return (*c)->counter.get();
}

absl::StatusOr<Gauge*> Registry::AddGauge(absl::string_view name,
                                          absl::string_view help,
                                          const Labels& labels) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Child*> c = NewChild(name, help, Type::kGauge, labels);
  if (!c.ok()) return c.status();
  (*c)->gauge = std::make_unique<Gauge>();
  return (*c)->gauge.get();
}

absl::StatusOr<Histogram*> Registry::AddHistogram(absl::string_view name,
                                                  absl::string_view help,
                                                  std::vector<double> bounds,
                                                  const Labels& labels) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "histogram ", name, ": bucket bounds must be finite and increasing"));
    }
  }
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Child*> c = NewChild(name, help, Type::kHistogram, labels);
  if (!c.ok()) return c.status();
  (*c)->histogram = std::make_unique<Histogram>(std::move(bounds));
  return (*c)->histogram.get();
}

absl::Status Registry::AddCallback(absl::string_view name,
                                   absl::string_view help, Type type,
                                   std::function<double()> read,
                                   const Labels& labels) {
  if (type == Type::kHistogram || !read) {
    return absl::InvalidArgumentError(absl::StrCat(
        "callback metric ", name, " must be a counter or gauge with a reader"));
  }
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Child*> c = NewChild(name, help, type, labels);
  if (!c.ok()) return c.status();
  (*c)->read = std::move(read);
  return absl::OkStatus();
}

std::string Registry::Render() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  for (const auto& f : families_) {
    absl::StrAppend(&out, "# HELP ", f->name, " ", EscapeHelp(f->help), "\n",
                    "# TYPE ", f->name, " ", TypeName(f->type), "\n");
    for (const Child& c : f->children) {
      if (c.histogram != nullptr) {
        const Histogram::Snapshot s = c.histogram->Read();
        for (size_t i = 0; i < s.cumulative.size(); ++i) {
          const std::pair<std::string, std::string> le{
              "le", i < s.bounds.size() ? FormatValue(s.bounds[i]) : "+Inf"};
          absl::StrAppend(&out, f->name, "_bucket", LabelText(c.labels, &le),
                          " ", s.cumulative[i], "\n");
        }
        const std::string labels = LabelText(c.labels, nullptr);
        absl::StrAppend(&out, f->name, "_sum", labels, " ", FormatValue(s.sum),
                        "\n", f->name, "_count", labels, " ", s.count, "\n");
        continue;
      }
      double v = 0;
      if (c.counter != nullptr) v = c.counter->value();
      if (c.gauge != nullptr) v = c.gauge->value();
      if (c.read) v = c.read();
      absl::StrAppend(&out, f->name, LabelText(c.labels, nullptr), " ",
                      FormatValue(v), "\n");
    }
  }
  return out;
}

}  // namespace duet::metrics
