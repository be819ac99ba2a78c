#include "kv_transfer/async_sender.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace duet::kv_transfer {

namespace {

// Bytes of `copies` x `layers` in the whole model (all TP ranks' heads).
int64_t PieceBytes(const KvDescriptor& dest, size_t copies, LayerRange layers) {
  KvLayout whole = dest.layout;
  whole.tp_size = 1;
  whole.tp_rank = 0;
  const int32_t end = std::min(layers.end, whole.num_layers);
  const int64_t num_layers = std::max(0, end - layers.begin);
  return static_cast<int64_t>(copies) * num_layers * whole.block_bytes();
}

// Copies of logical blocks from 0 as the descriptor addresses them: those
// the receiver holds (below first_block) dropped, the rest shifted.
std::vector<BlockCopy> ToDescriptor(std::vector<BlockCopy> copies,
                                    int32_t first_block) {
  if (first_block <= 0) return copies;
  std::erase_if(copies, [&](const BlockCopy& c) {
    return c.logical_block < first_block;
  });
  for (BlockCopy& c : copies) c.logical_block -= first_block;
  return copies;
}

}  // namespace

AsyncKvSender::AsyncKvSender(std::unique_ptr<KvSender> transport,
                             Observer observer)
    : transport_(std::move(transport)), observer_(std::move(observer)) {
  thread_ = std::thread([this] { Run(); });
}

AsyncKvSender::~AsyncKvSender() { Shutdown(); }

absl::Status AsyncKvSender::Open(uint64_t key, KvDescriptor dest,
                                 absl::Time deadline,
                                 absl::Duration piece_timeout) {
  absl::MutexLock lock(&mu_);
  return OpenLocked(key, std::make_shared<const KvDescriptor>(std::move(dest)),
                    deadline, piece_timeout);
}

absl::Status AsyncKvSender::OpenPending(uint64_t key, absl::Time deadline,
                                        absl::Duration piece_timeout) {
  absl::MutexLock lock(&mu_);
  return OpenLocked(key, nullptr, deadline, piece_timeout);
}

absl::Status AsyncKvSender::OpenLocked(uint64_t key,
                                       std::shared_ptr<const KvDescriptor> dest,
                                       absl::Time deadline,
                                       absl::Duration piece_timeout) {
  if (stop_) return absl::UnavailableError("KV sender is shutting down");
  const bool unbound = dest == nullptr;
  Transfer t;
  t.dest = std::move(dest);
  t.deadline = deadline;
  t.piece_timeout = piece_timeout;
  t.opened = absl::Now();
  if (!transfers_.emplace(key, std::move(t)).second) {
    return absl::AlreadyExistsError(
        absl::StrCat("a KV transfer for request ", key, " is already open"));
  }
  if (unbound) ++unbound_;
  return absl::OkStatus();
}

absl::Status AsyncKvSender::Bind(uint64_t key,
                                 absl::StatusOr<KvDescriptor> dest) {
  absl::MutexLock lock(&mu_);
  auto it = transfers_.find(key);
  if (it == transfers_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no open KV transfer for request ", key));
  }
  Transfer& t = it->second;
  if (t.dest != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the KV transfer of request ", key, " has its descriptor already"));
  }
  --unbound_;
  if (!dest.ok()) {
    if (t.status.ok()) t.status = dest.status();
    // Bound to an empty descriptor, which nothing reads: the failed
    // status skips the pieces, and the transfer's end runs.
    t.dest = std::make_shared<const KvDescriptor>();
    return absl::OkStatus();
  }
  t.dest = std::make_shared<const KvDescriptor>(std::move(*dest));
  return absl::OkStatus();
}

void AsyncKvSender::Submit(uint64_t key, std::vector<BlockCopy> copies,
                           LayerRange layers,
                           std::shared_ptr<const kernels::StreamMark> ready) {
  absl::MutexLock lock(&mu_);
  auto it = transfers_.find(key);
  if (it == transfers_.end() || it->second.closed || !it->second.status.ok()) {
    return;
  }
  Work w;
  w.key = key;
  w.copies = std::move(copies);
  w.layers = layers;
  w.ready = std::move(ready);
  queue_.push_back(std::move(w));
  ++pending_pieces_;
}

absl::Status AsyncKvSender::status(uint64_t key) {
  absl::MutexLock lock(&mu_);
  auto it = transfers_.find(key);
  if (it == transfers_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no open KV transfer for request ", key));
  }
  return it->second.status;
}

absl::Status AsyncKvSender::End(uint64_t key, absl::Status why, Done done) {
  if (exited_) {
    return absl::UnavailableError(
        "KV sender has shut down; the callback will not run");
  }
  auto it = transfers_.find(key);
  if (it == transfers_.end() || it->second.closed) {
    return absl::NotFoundError(
        absl::StrCat("no open KV transfer for request ", key));
  }
  it->second.closed = true;
  if (it->second.status.ok()) it->second.status = std::move(why);
  // Behind the key's pieces: it runs once none of them can still copy.
  Work w;
  w.key = key;
  w.done = done ? std::move(done) : [](absl::Status) {};
  queue_.push_back(std::move(w));
  return absl::OkStatus();
}

absl::Status AsyncKvSender::Close(uint64_t key, Done done) {
  absl::MutexLock lock(&mu_);
  return End(key, absl::OkStatus(), std::move(done));
}

absl::Status AsyncKvSender::Abort(uint64_t key, absl::Status why, Done done) {
  if (why.ok()) why = absl::CancelledError("KV transfer aborted");
  absl::MutexLock lock(&mu_);
  return End(key, std::move(why), std::move(done));
}

int64_t AsyncKvSender::pending_pieces() {
  absl::MutexLock lock(&mu_);
  return pending_pieces_;
}

void AsyncKvSender::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

std::deque<AsyncKvSender::Work>::iterator AsyncKvSender::NextRunnable() {
  if (stop_ || unbound_ == 0) return queue_.begin();
  // A key's items all wait or none do (its transfer is bound or not).
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    const Transfer& t = transfers_.at(it->key);
    if (t.dest != nullptr || !t.status.ok()) return it;
  }
  return queue_.end();
}

void AsyncKvSender::Run() {
  while (true) {
    Work w;
    std::shared_ptr<const KvDescriptor> dest;
    absl::Status status;
    absl::Time deadline;
    absl::Duration piece_timeout;
    TransferReport report;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](AsyncKvSender* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
            return (s->stop_ && s->queue_.empty()) ||
                   s->NextRunnable() != s->queue_.end();
          },
          this));
      if (queue_.empty()) {  // stop_ and nothing left
        exited_ = true;
        return;
      }
      auto next = NextRunnable();
      w = std::move(*next);
      queue_.erase(next);
      Transfer& t = transfers_.at(w.key);
      if (stop_ && t.status.ok()) {
        t.status = absl::CancelledError(
            "KV transfer cancelled: the prefill node is shutting down");
      }
      if (w.done) {
        status = t.status;
        report.key = w.key;
        report.bytes = t.bytes;
        report.elapsed = absl::Now() - t.opened;
        report.status = t.status;
        if (t.dest == nullptr) --unbound_;  // ended (stopping) unbound
        transfers_.erase(w.key);
      } else if (!t.status.ok()) {
        --pending_pieces_;  // skipped
        continue;
      } else {
        dest = t.dest;
        deadline = t.deadline;
        piece_timeout = t.piece_timeout;
      }
    }
    if (w.done) {
      if (observer_) observer_(report);
      w.done(std::move(status));
      continue;
    }
    const std::vector<BlockCopy> copies =
        ToDescriptor(std::move(w.copies), dest->first_block);
    const absl::Duration left = std::min(deadline - absl::Now(), piece_timeout);
    absl::Status s =
        left <= absl::ZeroDuration()
            ? absl::DeadlineExceededError(absl::StrCat(
                  "KV transfer of request ", w.key,
                  " passed its deadline before all of its KV was sent"))
        : copies.empty() ? absl::OkStatus()
                         : transport_->SendLayers(*dest, copies, w.layers,
                                                  std::move(w.ready), left);
    absl::MutexLock lock(&mu_);
    --pending_pieces_;
    Transfer& t = transfers_.at(w.key);
    if (!s.ok()) {
      if (t.status.ok()) t.status = std::move(s);
    } else {
      t.bytes += PieceBytes(*dest, copies.size(), w.layers);
    }
  }
}

}  // namespace duet::kv_transfer
