// A KvSender wrapper that injects faults, for tests and chaos runs of the
// node binaries (after Mooncake's fault-injecting transport). Deterministic:
// whether call n is faulted depends only on the plan and n.
//
//   DUET_ASSIGN_OR_RETURN(FaultPlan plan, ParseFaultPlan(flag_value));
//   auto sender = MakeFaultInjectingSender(std::move(real_sender), plan);
#ifndef DUET_KV_TRANSFER_FAULT_INJECTION_H_
#define DUET_KV_TRANSFER_FAULT_INJECTION_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kv_transfer {

enum class FaultAction {
  kPass,   // forward to the inner sender
  kDrop,   // do nothing, block for the whole timeout, DEADLINE_EXCEEDED
  kDelay,  // sleep `delay`, then forward with the rest of the timeout
  kError,  // do nothing, UNAVAILABLE "injected fault"
};

struct FaultPlan {
  FaultAction action = FaultAction::kPass;
  // The first `after` calls always pass (e.g. let a warm-up transfer through).
  int64_t after = 0;
  // Of the calls after those, which get `action` (k = 1, 2, ... counts them):
  // every > 0: those with k % every == 0 (every = 1: all of them);
  // every == 0: each with `probability`, drawn from a hash of (seed, k).
  int64_t every = 1;
  double probability = 0.0;
  uint64_t seed = 0;
  // kDelay only. A delay >= the call's timeout behaves like a drop.
  absl::Duration delay = absl::ZeroDuration();

  friend bool operator==(const FaultPlan&, const FaultPlan&) = default;
};

// Parses "<action>[:key=value,...]": action none|pass|drop|delay|error; keys
// every=N (N >= 1), prob=P (0 <= P <= 1, not with every), seed=S, after=N,
// ms=M (delay only, required there). "" means no faults. Examples:
// "drop:every=3", "delay:ms=200", "error:prob=0.5,seed=1",
// "drop:after=2". InvalidArgument for anything else.
absl::StatusOr<FaultPlan> ParseFaultPlan(absl::string_view spec);
// The canonical spec of `plan` (ParseFaultPlan(FaultPlanString(p)) == p up to
// millisecond rounding of the delay).
std::string FaultPlanString(const FaultPlan& plan);

struct FaultCounters {
  int64_t calls = 0;   // every Send
  int64_t passed = 0;  // forwarded without a fault
  int64_t dropped = 0;
  int64_t delayed = 0;  // forwarded after a delay, or timed out in it
  int64_t errored = 0;
};

class FaultInjectingSender : public KvSender {
 public:
  // A consistent snapshot. Thread-safe.
  virtual FaultCounters counters() const = 0;
};

// Wraps `inner` (kept and destroyed with the wrapper). Thread-safe when
// `inner` is; Sends are numbered in the order they enter the wrapper.
std::unique_ptr<FaultInjectingSender> MakeFaultInjectingSender(
    std::unique_ptr<KvSender> inner, FaultPlan plan);

}  // namespace duet::kv_transfer

#endif  // DUET_KV_TRANSFER_FAULT_INJECTION_H_
