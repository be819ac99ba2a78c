#include "router/admission_queue.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace duet::router {

void AdmissionQueue::Notify() {
  absl::MutexLock lock(&mu_);
  ++generation_;
}

void AdmissionQueue::Poke() {
  absl::MutexLock lock(&mu_);
  ++pokes_;
}

AdmissionQueue::Ticket::~Ticket() {
  if (queue_ != nullptr) queue_->Leave(id_);
}

void AdmissionQueue::Leave(uint64_t id) {
  absl::MutexLock lock(&mu_);
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), id),
                 waiting_.end());
  // The next request gets a turn: the space this one did not take, or
  // the space left after it took its share, may fit it.
  ++generation_;
}

absl::Status AdmissionQueue::Enter(std::optional<Ticket>* ticket) {
  absl::MutexLock lock(&mu_);
  if (static_cast<int>(waiting_.size()) >= max_queued_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "every decode node's KV cache is full and ", waiting_.size(),
        " requests already wait for space (--max-queued-requests ",
        max_queued_, "); retry later"));
  }
  const uint64_t id = next_id_++;
  waiting_.push_back(id);
  // seen = the current generation: the first turn needs a change after
  // the attempt that found every node full.
  ticket->emplace(Ticket(this, id, generation_));
  return absl::OkStatus();
}

bool AdmissionQueue::busy() {
  absl::MutexLock lock(&mu_);
  return !waiting_.empty();
}

int AdmissionQueue::size() {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(waiting_.size());
}

AdmissionQueue::Wake AdmissionQueue::WaitTurn(
    Ticket& ticket, absl::Time deadline,
    const std::function<bool()>& cancelled) {
  absl::MutexLock lock(&mu_);
  struct Arg {
    AdmissionQueue* q;
    const Ticket* t;
    int64_t pokes;
  } arg{this, &ticket, pokes_};
  if (cancelled()) return Wake::kCancelled;
  while (true) {
    const bool woken = mu_.AwaitWithDeadline(
        absl::Condition(
            +[](Arg* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return a->q->pokes_ != a->pokes ||
                     (!a->q->waiting_.empty() &&
                      a->q->waiting_.front() == a->t->id_ &&
                      a->q->generation_ != a->t->seen_);
            },
            &arg),
        deadline);
    if (!woken) return Wake::kDeadline;
    // cancelled() is an atomic load: no lock order to respect.
    if (cancelled()) return Wake::kCancelled;
    arg.pokes = pokes_;
    if (!waiting_.empty() && waiting_.front() == ticket.id_ &&
        generation_ != ticket.seen_) {
      ticket.seen_ = generation_;
      return Wake::kTurn;
    }
  }
}

}  // namespace duet::router
