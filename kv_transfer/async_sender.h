// The asynchronous KV sender: the engine loop hands it pieces of a
// request's KV (blocks x layers, each with the stream mark after which the
// forward pass has written them) and goes on computing; one sender thread
// moves them through a transport (KvSender) in submission order, each
// copy on the transport's own copy queue. A request's transfer completes
// only after every piece it was given is visible at the receiver.
//
//   sender.Open(id, descriptor, deadline);
//   for each layer l of each chunk: sender.Submit(id, copies, {l, l + 1},
//   mark); sender.Close(id, [](absl::Status s) { ... });  // once, on the
//   thread
//
// The descriptor may come later than the pieces (OpenPending, then Bind):
// a prefill node asks the decode node where to write while the prompt
// already runs, so that round trip is off the time to first token. Pieces
// of a transfer still waiting for its descriptor wait in the queue while
// other requests' pieces go by. Copies index the request's logical blocks
// from 0: the sender skips those below the descriptor's first_block (the
// receiver's prefix cache holds them) and addresses the rest from there.
//
// A failed piece (the transport's error, or DEADLINE_EXCEEDED once the
// request's deadline passes, waiting for the mark included) fails the
// transfer: the pieces after it are skipped and Close's callback gets that
// error. Abort skips what has not started. Callbacks run on the sender
// thread, never inside Open/Submit/Close/Abort, and never with the
// sender's lock held, so they may take the caller's locks.
#ifndef DUET_KV_TRANSFER_ASYNC_SENDER_H_
#define DUET_KV_TRANSFER_ASYNC_SENDER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kernels/backend.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kv_transfer {

class AsyncKvSender {
 public:
  using Done = std::function<void(absl::Status)>;

  // One request's transfer as it ended (for metrics).
  struct TransferReport {
    uint64_t key = 0;
    // KV bytes of the pieces that reached the receiver, counted as the
    // whole model's (every tensor-parallel rank's head slice together).
    int64_t bytes = 0;
    absl::Duration elapsed;  // Open -> the end (Close's or Abort's callback)
    absl::Status status;     // what that callback gets
  };
  using Observer = std::function<void(const TransferReport&)>;

  // Starts the sender thread over `transport`. `observer` (may be empty)
  // runs on the sender thread as each transfer ends, just before its
  // callback.
  explicit AsyncKvSender(std::unique_ptr<KvSender> transport,
                         Observer observer = nullptr);
  // Shutdown().
  ~AsyncKvSender();
  AsyncKvSender(const AsyncKvSender&) = delete;
  AsyncKvSender& operator=(const AsyncKvSender&) = delete;

  // Starts request `key`'s transfer into `dest`; every piece must be
  // visible by `deadline`, and each piece's copy (waiting for its mark
  // included) may take at most `piece_timeout`. AlreadyExists for a key
  // still open; UNAVAILABLE after Shutdown.
  absl::Status Open(uint64_t key, KvDescriptor dest, absl::Time deadline,
                    absl::Duration piece_timeout = absl::InfiniteDuration());
  // As Open, with the descriptor to come (Bind). Pieces submitted meanwhile
  // wait for it, past the deadline too: the caller must Bind (a descriptor
  // or an error) by then, or they wait until Shutdown (the prefill node's
  // Describe call has the request's deadline and always answers).
  absl::Status OpenPending(
      uint64_t key, absl::Time deadline,
      absl::Duration piece_timeout = absl::InfiniteDuration());
  // The descriptor of a transfer opened pending, or why there is none (the
  // transfer then fails with that status). FailedPrecondition for a key
  // already bound, NotFound for one not open (ended transfers included).
  absl::Status Bind(uint64_t key, absl::StatusOr<KvDescriptor> dest);
  // Queues a piece and returns at once: layers `layers` of `copies`, to be
  // read once `ready` is reached (null: the KV is in the pool already).
  // Ignored for a key that is not open or has failed (its status says
  // why).
  void Submit(uint64_t key, std::vector<BlockCopy> copies, LayerRange layers,
              std::shared_ptr<const kernels::StreamMark> ready);
  // The transfer's first error so far (OK while none; NotFound for a key
  // not open): lets the loop end a request whose KV can no longer arrive
  // before computing the rest of its prompt.
  absl::Status status(uint64_t key);
  // No more pieces for `key`: `done` gets OK once every piece submitted is
  // visible at the receiver, else the first error. NotFound (and `done`
  // is not called) for a key that is not open, UNAVAILABLE after the
  // thread has shut down.
  absl::Status Close(uint64_t key, Done done);
  // As Close, but pieces of `key` that have not started are skipped and
  // `done` gets `why` unless an earlier error came first. A piece already
  // being copied finishes (or fails) first: `done` never runs while the
  // transport may still read the request's blocks.
  absl::Status Abort(uint64_t key, absl::Status why, Done done);

  // Skips every piece not yet started (their transfers end CANCELLED),
  // runs every pending callback and joins the thread. Idempotent.
  void Shutdown();

  // Pieces queued and not yet finished (tests, metrics).
  int64_t pending_pieces();

 private:
  struct Transfer {
    std::shared_ptr<const KvDescriptor> dest;  // null until bound
    absl::Time deadline;
    absl::Duration piece_timeout;
    absl::Status status;
    bool closed = false;
    absl::Time opened;
    int64_t bytes = 0;  // of pieces sent
  };
  struct Work {
    uint64_t key = 0;
    // A piece, or (done set) the end of the key's transfer.
    std::vector<BlockCopy> copies;
    LayerRange layers;
    std::shared_ptr<const kernels::StreamMark> ready;
    Done done;
  };

  void Run();
  absl::Status OpenLocked(uint64_t key,
                          std::shared_ptr<const KvDescriptor> dest,
                          absl::Time deadline, absl::Duration piece_timeout)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status End(uint64_t key, absl::Status why, Done done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The first queued item that may run now (its transfer bound, failed or
  // stopping, and no earlier item of its key waiting), or queue_.end().
  std::deque<Work>::iterator NextRunnable() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::unique_ptr<KvSender> transport_;
  const Observer observer_;
  absl::Mutex mu_;
  std::deque<Work> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Transfer> transfers_ ABSL_GUARDED_BY(mu_);
  // Open transfers without a descriptor: while none, the queue's front
  // runs next (NextRunnable scans only while a Describe is out).
  int64_t unbound_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t pending_pieces_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool exited_ ABSL_GUARDED_BY(mu_) = false;  // the thread returned
  std::thread thread_;
};

}  // namespace duet::kv_transfer

#endif  // DUET_KV_TRANSFER_ASYNC_SENDER_H_
