#include "kv_transfer/fault_injection.h"

#include <cmath>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/random.h"

namespace duet::kv_transfer {
namespace {

bool Faulted(const FaultPlan& plan, int64_t call) {
  if (plan.action == FaultAction::kPass || call <= plan.after) return false;
  const int64_t k = call - plan.after;
  if (plan.every > 0) return k % plan.every == 0;
  const uint64_t h =
      SplitMix64(plan.seed ^ SplitMix64(static_cast<uint64_t>(k)));
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;  // [0, 1)
  return u < plan.probability;
}

absl::string_view ActionName(FaultAction action) {
  switch (action) {
    case FaultAction::kPass:
      return "none";
    case FaultAction::kDrop:
      return "drop";
    case FaultAction::kDelay:
      return "delay";
    case FaultAction::kError:
      return "error";
  }
  return "?";
}

class FaultInjectingSenderImpl final : public FaultInjectingSender {
 public:
  FaultInjectingSenderImpl(std::unique_ptr<KvSender> inner, FaultPlan plan)
      : inner_(std::move(inner)), plan_(plan) {}

  absl::Status SendLayers(const KvDescriptor& dest,
                          std::span<const BlockCopy> copies, LayerRange layers,
                          std::shared_ptr<const kernels::StreamMark> ready,
                          absl::Duration timeout) override {
    return Inject(timeout, [&](absl::Duration t) {
      return inner_->SendLayers(dest, copies, layers, ready, t);
    });
  }

  absl::Status SendSlice(const KvDescriptor& dest,
                         std::span<const BlockCopy> copies, LayerRange layers,
                         const TransferSlice& slice,
                         std::shared_ptr<const kernels::StreamMark> ready,
                         absl::Duration timeout) override {
    return Inject(timeout, [&](absl::Duration t) {
      return inner_->SendSlice(dest, copies, layers, slice, ready, t);
    });
  }

  // Applies the plan to one send; `send(timeout)` is the real one.
  template <typename Send>
  absl::Status Inject(absl::Duration timeout, const Send& send) {
    int64_t call;
    {
      absl::MutexLock lock(&mu_);
      call = ++counters_.calls;
    }
    if (!Faulted(plan_, call)) {
      Count(&FaultCounters::passed);
      return send(timeout);
    }
    switch (plan_.action) {
      case FaultAction::kPass:
        break;
      case FaultAction::kDrop:
        Count(&FaultCounters::dropped);
        absl::SleepFor(timeout);
        return absl::DeadlineExceededError(absl::StrCat(
            "KV transfer timed out after ", absl::FormatDuration(timeout),
            " (injected drop, call ", call, ")"));
      case FaultAction::kDelay:
        Count(&FaultCounters::delayed);
        if (plan_.delay >= timeout) {
          absl::SleepFor(timeout);
          return absl::DeadlineExceededError(absl::StrCat(
              "KV transfer timed out after ", absl::FormatDuration(timeout),
              " (injected delay of ", absl::FormatDuration(plan_.delay),
              ", call ", call, ")"));
        }
        absl::SleepFor(plan_.delay);
        return send(timeout - plan_.delay);
      case FaultAction::kError:
        Count(&FaultCounters::errored);
        return absl::UnavailableError(
            absl::StrCat("injected fault (call ", call, ")"));
    }
    return send(timeout);
  }

  FaultCounters counters() const override {
    absl::MutexLock lock(&mu_);
    return counters_;
  }

 private:
  void Count(int64_t FaultCounters::*field) {
    absl::MutexLock lock(&mu_);
    ++(counters_.*field);
  }

  const std::unique_ptr<KvSender> inner_;
  const FaultPlan plan_;
  mutable absl::Mutex mu_;
  FaultCounters counters_ ABSL_GUARDED_BY(mu_);
};

absl::Status BadSpec(absl::string_view spec, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("bad fault plan '", spec, "': ", why,
                   " (expected none|drop|delay|error[:every=N|prob=P,"
                   "seed=S,after=N,ms=M])"));
}

}  // namespace

absl::StatusOr<FaultPlan> ParseFaultPlan(absl::string_view spec) {
  const absl::string_view text = absl::StripAsciiWhitespace(spec);
  FaultPlan plan;
  if (text.empty()) return plan;
  std::pair<absl::string_view, absl::string_view> head =
      absl::StrSplit(text, absl::MaxSplits(':', 1));
  const absl::string_view action = absl::StripAsciiWhitespace(head.first);
  if (action == "none" || action == "pass") {
    plan.action = FaultAction::kPass;
  } else if (action == "drop") {
    plan.action = FaultAction::kDrop;
  } else if (action == "delay") {
    plan.action = FaultAction::kDelay;
  } else if (action == "error") {
    plan.action = FaultAction::kError;
  } else {
    return BadSpec(spec, absl::StrCat("unknown action '", action, "'"));
  }
  absl::flat_hash_set<std::string> seen;
  bool has_ms = false;
  bool has_every = false;
  bool has_prob = false;
  if (text.find(':') != absl::string_view::npos) {
    for (absl::string_view item : absl::StrSplit(head.second, ',')) {
      item = absl::StripAsciiWhitespace(item);
      std::pair<absl::string_view, absl::string_view> kv =
          absl::StrSplit(item, absl::MaxSplits('=', 1));
      const absl::string_view key = absl::StripAsciiWhitespace(kv.first);
      const absl::string_view value = absl::StripAsciiWhitespace(kv.second);
      if (key.empty() || item.find('=') == absl::string_view::npos) {
        return BadSpec(spec, absl::StrCat("'", item, "' is not key=value"));
      }
      if (!seen.insert(std::string(key)).second) {
        return BadSpec(spec, absl::StrCat("'", key, "' given twice"));
      }
      if (key == "every") {
        if (!absl::SimpleAtoi(value, &plan.every) || plan.every < 1) {
          return BadSpec(spec, "every must be an integer >= 1");
        }
        has_every = true;
      } else if (key == "prob") {
        if (!absl::SimpleAtod(value, &plan.probability) ||
            !std::isfinite(plan.probability) || plan.probability < 0 ||
            plan.probability > 1) {
          return BadSpec(spec, "prob must be a number in [0, 1]");
        }
        plan.every = 0;
        has_prob = true;
      } else if (key == "seed") {
        if (!absl::SimpleAtoi(value, &plan.seed)) {
          return BadSpec(spec, "seed must be an unsigned integer");
        }
      } else if (key == "after") {
        if (!absl::SimpleAtoi(value, &plan.after) || plan.after < 0) {
          return BadSpec(spec, "after must be an integer >= 0");
        }
      } else if (key == "ms") {
        int64_t ms = 0;
        if (!absl::SimpleAtoi(value, &ms) || ms < 0) {
          return BadSpec(spec, "ms must be an integer >= 0");
        }
        plan.delay = absl::Milliseconds(ms);
        has_ms = true;
      } else {
        return BadSpec(spec, absl::StrCat("unknown key '", key, "'"));
      }
    }
  }
  if (has_every && has_prob) {
    return BadSpec(spec, "every and prob exclude each other");
  }
  if (has_ms != (plan.action == FaultAction::kDelay)) {
    return BadSpec(spec, has_ms ? "ms is for delay only"
                                : "delay needs ms=<milliseconds>");
  }
  if (plan.action == FaultAction::kPass && !seen.empty()) {
    return BadSpec(spec, "none takes no options");
  }
  return plan;
}

std::string FaultPlanString(const FaultPlan& plan) {
  if (plan.action == FaultAction::kPass) return "none";
  std::vector<std::string> items;
  if (plan.every > 0) {
    items.push_back(absl::StrCat("every=", plan.every));
  } else {
    items.push_back(absl::StrCat("prob=", plan.probability));
    items.push_back(absl::StrCat("seed=", plan.seed));
  }
  if (plan.after > 0) items.push_back(absl::StrCat("after=", plan.after));
  if (plan.action == FaultAction::kDelay) {
    items.push_back(absl::StrCat("ms=", absl::ToInt64Milliseconds(plan.delay)));
  }
  return absl::StrCat(ActionName(plan.action), ":", absl::StrJoin(items, ","));
}

std::unique_ptr<FaultInjectingSender> MakeFaultInjectingSender(
    std::unique_ptr<KvSender> inner, FaultPlan plan) {
  return std::make_unique<FaultInjectingSenderImpl>(std::move(inner), plan);
}

}  // namespace duet::kv_transfer
