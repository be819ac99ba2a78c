// Ends the router's outgoing calls that can no longer succeed, so no
// request waits silently: gRPC's synchronous server API has no cancellation
// callback, and a peer that stops (SIGSTOP, a hung GPU) keeps its TCP
// connection open, so one thread checks every few milliseconds:
// - a client that went away cancels the call in flight (Scope::cancelled);
// - a client that stopped reading (a write to it blocked too long) has its
//   call cancelled, which ends the request and frees its KV;
// - a call watched on a node (Scope::WatchNode) is cancelled when that node
//   leaves the registry (missed heartbeats), or when nothing arrived on it
//   for its idle timeout (Touch on every message); lost() says which.
#ifndef DUET_ROUTER_CALL_WATCHER_H_
#define DUET_ROUTER_CALL_WATCHER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace duet::router {

class CallWatcher {
 public:
  // `live_nodes` lists the registered nodes (called from the watcher's
  // thread at most every `node_check_interval`).
  using LiveNodes = std::function<absl::flat_hash_set<uint64_t>()>;
  // `on_client_cancel` (may be null) runs on the watcher's thread whenever
  // it saw a client go away (requests waiting elsewhere then look).
  explicit CallWatcher(
      LiveNodes live_nodes = nullptr,
      absl::Duration node_check_interval = absl::Milliseconds(50),
      std::function<void()> on_client_cancel = nullptr,
      absl::Duration client_write_timeout = absl::ZeroDuration());
  ~CallWatcher();

  enum class Lost { kNone, kNodeGone, kIdle };

  // While a Scope lives, a cancelled `server` cancels whatever ClientContext
  // is set as current, and so does a watched node that is lost.
  class Scope {
   public:
    Scope(CallWatcher* watcher, grpc::ServerContext* server);
    ~Scope();
    void SetCurrent(grpc::ClientContext* ctx);
    bool cancelled() const { return cancelled_.load(); }

    // Watches the current call's peer: node `node_id` must stay registered,
    // and with `idle_timeout` > 0 a message must arrive (Touch) at least
    // that often. Until Unwatch.
    void WatchNode(uint64_t node_id, absl::Duration idle_timeout);
    void Unwatch();
    void Touch();
    Lost lost() const { return lost_.load(); }

    // Brackets a write to the client. A write blocked longer than the
    // watcher's client write timeout (the client stopped reading and gRPC's
    // flow-control window is full) cancels the client's call: the write
    // fails, and the request ends like a client that went away.
    void BeginWrite();
    void EndWrite();
    bool write_timed_out() const { return write_timed_out_.load(); }

   private:
    friend class CallWatcher;
    CallWatcher* watcher_;
    grpc::ServerContext* server_;
    absl::Mutex mu_;
    grpc::ClientContext* current_ ABSL_GUARDED_BY(mu_) = nullptr;
    std::atomic<bool> cancelled_{false};
    // The watched node (0: none) and its idle limit in ns (0: none).
    std::atomic<uint64_t> node_{0};
    std::atomic<int64_t> idle_ns_{0};
    std::atomic<int64_t> last_touch_ns_{0};
    std::atomic<Lost> lost_{Lost::kNone};
    std::atomic<int64_t> write_since_ns_{0};  // 0: no write in progress
    std::atomic<bool> write_timed_out_{false};
  };

 private:
  void Loop();
  void CancelLocked(Scope* scope) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const LiveNodes live_nodes_;
  const std::function<void()> on_client_cancel_;
  const int64_t client_write_timeout_ns_;  // 0: none
  const absl::Duration node_check_interval_;
  absl::Mutex mu_;
  absl::flat_hash_set<Scope*> scopes_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace duet::router

#endif  // DUET_ROUTER_CALL_WATCHER_H_
