#include "kernels/cpu/cpu_communicator.h"

#include <cstring>
#include <deque>
#include <map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/dtype.h"

namespace duet::kernels {
namespace {

// A send waiting for its receiver; the sender keeps `buf` alive until
// `consumed`.
struct Post {
  TensorView buf;
  bool consumed = false;
  absl::Status status;  // what the receiver found (a size mismatch)
};

struct Group {
  Group(int n, absl::Duration t) : size(n), timeout(t), bufs(n) {}

  const int size;
  const absl::Duration timeout;
  absl::Mutex mu;
  bool aborted ABSL_GUARDED_BY(mu) = false;
  // All-reduce rendezvous.
  int64_t generation ABSL_GUARDED_BY(mu) = 0;
  int arrived ABSL_GUARDED_BY(mu) = 0;
  std::vector<TensorView> bufs ABSL_GUARDED_BY(mu);
  absl::Status round_status ABSL_GUARDED_BY(mu);
  // Point to point: (src, dst) -> sends in issue order.
  std::map<std::pair<int, int>, std::deque<std::shared_ptr<Post>>> mail
      ABSL_GUARDED_BY(mu);
};

absl::Status Aborted() {
  return absl::AbortedError(
      "communicator aborted (a rank timed out or Abort was called)");
}

absl::Status CheckBuffer(const TensorView& t, absl::string_view what) {
  if (t.device != Device::kCpu) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the CPU communicator takes host buffers"));
  }
  if (t.numel() > 0 && t.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": null buffer"));
  }
  return absl::OkStatus();
}

// Sums bufs[0..n) elementwise in rank order into every buffer.
void SumInto(std::vector<TensorView>& bufs) {
  const int64_t n = bufs[0].numel();
  if (bufs[0].dtype == DType::kF32) {
    std::vector<float> sum(static_cast<size_t>(n), 0.0f);
    for (const TensorView& b : bufs) {
      const float* x = b.as<float>();
      for (int64_t i = 0; i < n; ++i) sum[i] += x[i];
    }
    for (TensorView& b : bufs) {
      std::memcpy(b.data, sum.data(), sizeof(float) * sum.size());
    }
    return;
  }
  std::vector<float> sum(static_cast<size_t>(n), 0.0f);
  for (const TensorView& b : bufs) {
    const uint16_t* x = b.as<uint16_t>();
    for (int64_t i = 0; i < n; ++i) sum[i] += Bf16ToFloat(x[i]);
  }
  std::vector<uint16_t> out(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) out[i] = FloatToBf16(sum[i]);
  for (TensorView& b : bufs) {
    std::memcpy(b.data, out.data(), sizeof(uint16_t) * out.size());
  }
}

class CpuCommunicator final : public Communicator {
 public:
  CpuCommunicator(std::shared_ptr<Group> group, int rank)
      : g_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return g_->size; }

  absl::Status AllReduceSum(TensorView buf) override {
    if (absl::Status s = CheckBuffer(buf, "AllReduceSum"); !s.ok()) return s;
    if (buf.dtype != DType::kF32 && buf.dtype != DType::kBF16) {
      return absl::InvalidArgumentError(
          absl::StrCat("AllReduceSum: dtype ", DTypeName(buf.dtype),
                       " (f32 or bf16 only)"));
    }
    absl::MutexLock lock(&g_->mu);
    if (g_->aborted) return Aborted();
    const int64_t my_generation = g_->generation;
    g_->bufs[static_cast<size_t>(rank_)] = buf;
    if (++g_->arrived == g_->size) {
      g_->round_status = absl::OkStatus();
      for (const TensorView& b : g_->bufs) {
        if (b.dtype != buf.dtype || b.numel() != buf.numel()) {
          g_->round_status = absl::InvalidArgumentError(absl::StrCat(
              "AllReduceSum: ranks passed different buffers (",
              DTypeName(b.dtype), " x ", b.numel(), " vs ",
              DTypeName(buf.dtype), " x ", buf.numel(), ")"));
        }
      }
      if (g_->round_status.ok()) SumInto(g_->bufs);
      g_->arrived = 0;
      ++g_->generation;
      return g_->round_status;
    }
    struct Arg {
      const Group* g;
      int64_t generation;
    } arg{g_.get(), my_generation};
    const bool done = g_->mu.AwaitWithTimeout(
        absl::Condition(
            +[](Arg* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return a->g->aborted || a->g->generation != a->generation;
            },
            &arg),
        g_->timeout);
    if (g_->generation != my_generation) return g_->round_status;
    if (!done) return TimedOutLocked("AllReduceSum");
    return Aborted();
  }

  absl::Status Send(TensorView buf, int peer) override {
    if (absl::Status s = CheckPeer(buf, peer, "Send"); !s.ok()) return s;
    if (in_group_) {
      pending_.push_back({true, buf, peer});
      return absl::OkStatus();
    }
    if (peer == rank_) {
      return absl::InvalidArgumentError(
          "Send to this rank outside GroupStart/GroupEnd would never match");
    }
    absl::MutexLock lock(&g_->mu);
    std::shared_ptr<Post> post;
    if (absl::Status s = PostLocked(buf, peer, &post); !s.ok()) return s;
    return AwaitConsumedLocked(*post);
  }

  absl::Status Recv(TensorView buf, int peer) override {
    if (absl::Status s = CheckPeer(buf, peer, "Recv"); !s.ok()) return s;
    if (in_group_) {
      pending_.push_back({false, buf, peer});
      return absl::OkStatus();
    }
    if (peer == rank_) {
      return absl::InvalidArgumentError(
          "Recv from this rank outside GroupStart/GroupEnd would never match");
    }
    absl::MutexLock lock(&g_->mu);
    return RecvLocked(buf, peer);
  }

  void GroupStart() override {
    in_group_ = true;
    pending_.clear();
  }

  absl::Status GroupEnd() override {
    in_group_ = false;
    std::vector<Op> ops = std::move(pending_);
    pending_.clear();
    absl::MutexLock lock(&g_->mu);
    // Every send is posted before any receive waits, so two ranks that
    // send to each other first do not deadlock.
    std::vector<std::shared_ptr<Post>> posted;
    for (const Op& op : ops) {
      if (!op.send) continue;
      std::shared_ptr<Post> post;
      if (absl::Status s = PostLocked(op.buf, op.peer, &post); !s.ok()) {
        return s;
      }
      posted.push_back(std::move(post));
    }
    for (const Op& op : ops) {
      if (op.send) continue;
      if (absl::Status s = RecvLocked(op.buf, op.peer); !s.ok()) return s;
    }
    for (const auto& post : posted) {
      if (absl::Status s = AwaitConsumedLocked(*post); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::Status Wait(absl::Duration) override {
    // Every operation finished before it returned.
    absl::MutexLock lock(&g_->mu);
    return g_->aborted ? Aborted() : absl::OkStatus();
  }

  void Abort() override {
    absl::MutexLock lock(&g_->mu);
    g_->aborted = true;
  }

  bool aborted() const override {
    absl::MutexLock lock(&g_->mu);
    return g_->aborted;
  }

 private:
  struct Op {
    bool send;
    TensorView buf;
    int peer;
  };

  absl::Status CheckPeer(const TensorView& buf, int peer,
                         absl::string_view what) const {
    if (absl::Status s = CheckBuffer(buf, what); !s.ok()) return s;
    if (peer < 0 || peer >= g_->size) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": peer ", peer, " is outside [0, ", g_->size, ")"));
    }
    return absl::OkStatus();
  }

  absl::Status TimedOutLocked(absl::string_view what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_->mu) {
    g_->aborted = true;
    return absl::DeadlineExceededError(absl::StrCat(
        what, " on rank ", rank_, " of ", g_->size, ": the peers did not "
        "arrive within ", absl::FormatDuration(g_->timeout),
        "; the communicator is aborted"));
  }

  absl::Status PostLocked(const TensorView& buf, int peer,
                          std::shared_ptr<Post>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_->mu) {
    if (g_->aborted) return Aborted();
    *out = std::make_shared<Post>();
    (*out)->buf = buf;
    g_->mail[{rank_, peer}].push_back(*out);
    return absl::OkStatus();
  }

  absl::Status AwaitConsumedLocked(const Post& post)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_->mu) {
    struct Arg {
      const Group* g;
      const Post* p;
    } arg{g_.get(), &post};
    const bool done = g_->mu.AwaitWithTimeout(
        absl::Condition(
            +[](Arg* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return a->g->aborted || a->p->consumed;
            },
            &arg),
        g_->timeout);
    if (post.consumed) return post.status;
    if (!done) return TimedOutLocked("Send");
    return Aborted();
  }

  absl::Status RecvLocked(const TensorView& buf, int peer)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_->mu) {
    auto& queue = g_->mail[{peer, rank_}];
    struct Arg {
      const Group* g;
      const std::deque<std::shared_ptr<Post>>* q;
    } arg{g_.get(), &queue};
    const bool done = g_->mu.AwaitWithTimeout(
        absl::Condition(
            +[](Arg* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return a->g->aborted || !a->q->empty();
            },
            &arg),
        g_->timeout);
    if (g_->aborted) return Aborted();
    if (!done) return TimedOutLocked("Recv");
    std::shared_ptr<Post> post = queue.front();
    queue.pop_front();
    if (post->buf.nbytes() != buf.nbytes()) {
      post->status = absl::InvalidArgumentError(
          absl::StrCat("Send of ", post->buf.nbytes(), " bytes from rank ",
                       peer, " met a Recv of ", buf.nbytes(), " bytes"));
    } else if (buf.nbytes() > 0) {
      std::memcpy(buf.data, post->buf.data, buf.nbytes());
    }
    post->consumed = true;
    return post->status;
  }

  std::shared_ptr<Group> g_;
  const int rank_;
  bool in_group_ = false;
  std::vector<Op> pending_;
};

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>>
CreateCpuCommunicators(int size, absl::Duration timeout) {
  if (size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("communicator size ", size, " (must be >= 1)"));
  }
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("communicator timeout must be > 0");
  }
  auto group = std::make_shared<Group>(size, timeout);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < size; ++r) {
    out.push_back(std::make_unique<CpuCommunicator>(group, r));
  }
  return out;
}

}  // namespace duet::kernels
