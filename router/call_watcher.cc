#include "router/call_watcher.h"

#include <utility>

namespace duet::router {
namespace {

int64_t NowNs() { return absl::GetCurrentTimeNanos(); }

}  // namespace

CallWatcher::CallWatcher(LiveNodes live_nodes,
                         absl::Duration node_check_interval,
                         std::function<void()> on_client_cancel,
                         absl::Duration client_write_timeout)
    : live_nodes_(std::move(live_nodes)),
      on_client_cancel_(std::move(on_client_cancel)),
      client_write_timeout_ns_(
          absl::ToInt64Nanoseconds(client_write_timeout)),
      node_check_interval_(node_check_interval),
      thread_([this] { Loop(); }) {}

CallWatcher::~CallWatcher() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void CallWatcher::CancelLocked(Scope* scope) {
  absl::MutexLock scope_lock(&scope->mu_);
  if (scope->current_ != nullptr) scope->current_->TryCancel();
}

void CallWatcher::Loop() {
  absl::MutexLock lock(&mu_);
  absl::Time next_node_check = absl::InfinitePast();
  while (!stop_) {
    mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Milliseconds(10));
    const int64_t now = NowNs();
    bool any_watched = false;
    bool any_cancelled = false;
    for (Scope* scope : scopes_) {
      const int64_t writing = scope->write_since_ns_.load();
      if (client_write_timeout_ns_ > 0 && writing != 0 &&
          now - writing > client_write_timeout_ns_ &&
          !scope->write_timed_out_.exchange(true)) {
        // Unblocks the write (it returns false); the check below then sees
        // the call cancelled and cancels the outgoing call.
        scope->server_->TryCancel();
      }
      if (!scope->cancelled_.load() && scope->server_->IsCancelled()) {
        scope->cancelled_.store(true);
        CancelLocked(scope);
        any_cancelled = true;
      }
      if (scope->node_.load() == 0 || scope->lost_.load() != Lost::kNone) {
        continue;
      }
      any_watched = true;
      const int64_t idle = scope->idle_ns_.load();
      if (idle > 0 && now - scope->last_touch_ns_.load() > idle) {
        scope->lost_.store(Lost::kIdle);
        CancelLocked(scope);
      }
    }
    if (any_cancelled && on_client_cancel_ != nullptr) on_client_cancel_();
    // The registry is asked only while calls are watched, and not on every
    // tick: it takes the registry's lock.
    if (!any_watched || live_nodes_ == nullptr ||
        absl::Now() < next_node_check) {
      continue;
    }
    next_node_check = absl::Now() + node_check_interval_;
    const absl::flat_hash_set<uint64_t> live = live_nodes_();
    for (Scope* scope : scopes_) {
      const uint64_t node = scope->node_.load();
      if (node == 0 || scope->lost_.load() != Lost::kNone) continue;
      if (!live.contains(node)) {
        scope->lost_.store(Lost::kNodeGone);
        CancelLocked(scope);
      }
    }
  }
}

CallWatcher::Scope::Scope(CallWatcher* watcher, grpc::ServerContext* server)
    : watcher_(watcher), server_(server) {
  absl::MutexLock lock(&watcher_->mu_);
  watcher_->scopes_.insert(this);
}

CallWatcher::Scope::~Scope() {
  absl::MutexLock lock(&watcher_->mu_);
  watcher_->scopes_.erase(this);
}

void CallWatcher::Scope::SetCurrent(grpc::ClientContext* ctx) {
  absl::MutexLock lock(&mu_);
  current_ = ctx;
  if (ctx != nullptr && (cancelled_.load() || lost_.load() != Lost::kNone)) {
    ctx->TryCancel();
  }
}

void CallWatcher::Scope::WatchNode(uint64_t node_id,
                                   absl::Duration idle_timeout) {
  lost_.store(Lost::kNone);
  last_touch_ns_.store(NowNs());
  idle_ns_.store(idle_timeout > absl::ZeroDuration()
                     ? absl::ToInt64Nanoseconds(idle_timeout)
                     : 0);
  node_.store(node_id);
}

void CallWatcher::Scope::Unwatch() { node_.store(0); }

void CallWatcher::Scope::Touch() { last_touch_ns_.store(NowNs()); }

void CallWatcher::Scope::BeginWrite() { write_since_ns_.store(NowNs()); }

void CallWatcher::Scope::EndWrite() { write_since_ns_.store(0); }

}  // namespace duet::router
