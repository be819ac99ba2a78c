// The router's queue of requests waiting for KV space on the decode nodes
// (every decode node answered Reserve with RESOURCE_EXHAUSTED). First come,
// first served: only the request at the head retries Reserve, and only
// after capacity may have changed (a heartbeat, a registration, a release,
// a finished request: Notify), so a full cluster costs no Reserve storm
// however many requests wait. Bounded: past `max_queued` a request is
// refused at once.
#ifndef DUET_ROUTER_ADMISSION_QUEUE_H_
#define DUET_ROUTER_ADMISSION_QUEUE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace duet::router {

class AdmissionQueue {
 public:
  explicit AdmissionQueue(int max_queued) : max_queued_(max_queued) {}

  // Capacity may have changed: wakes the head.
  void Notify();
  // A client went away: wakes every waiter to check its `cancelled`.
  void Poke();

  // A place in the queue, left on destruction (waking the next request).
  class Ticket {
   public:
    Ticket(Ticket&& other) noexcept
        : queue_(other.queue_), id_(other.id_), seen_(other.seen_) {
      other.queue_ = nullptr;
    }
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    Ticket& operator=(Ticket&&) = delete;
    ~Ticket();

   private:
    friend class AdmissionQueue;
    Ticket(AdmissionQueue* queue, uint64_t id, int64_t seen)
        : queue_(queue), id_(id), seen_(seen) {}
    AdmissionQueue* queue_;
    uint64_t id_;
    int64_t seen_;  // the capacity generation of the last attempt
  };

  // Joins the tail. RESOURCE_EXHAUSTED (naming the flag) when
  // `max_queued` requests already wait.
  absl::Status Enter(std::optional<Ticket>* ticket);

  // Whether requests wait (a new request then queues behind them instead
  // of trying first).
  bool busy();
  int size();

  enum class Wake { kTurn, kDeadline, kCancelled };
  // Blocks until `ticket` is at the head and capacity changed since its
  // last turn (kTurn), the deadline passes, or `cancelled()` says so
  // (checked at each Poke: no waiter wakes on a timer).
  Wake WaitTurn(Ticket& ticket, absl::Time deadline,
                const std::function<bool()>& cancelled);

 private:
  void Leave(uint64_t id);

  const int max_queued_;
  absl::Mutex mu_;
  std::deque<uint64_t> waiting_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t pokes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace duet::router

#endif  // DUET_ROUTER_ADMISSION_QUEUE_H_
