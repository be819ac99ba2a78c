// router/call_watcher.h: a watched call is marked lost (and its context
// cancelled) when its node leaves the live set or nothing arrives within
// its idle timeout; Touch keeps it alive; Unwatch stops watching.
#include "router/call_watcher.h"

#include <atomic>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace duet::router {
namespace {

bool WaitFor(const CallWatcher::Scope& scope, CallWatcher::Lost want,
             absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (scope.lost() == want) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return scope.lost() == want;
}

TEST(CallWatcherTest, IdleCallIsLostAndTouchKeepsItAlive) {
  CallWatcher watcher([] { return absl::flat_hash_set<uint64_t>{7}; });
  grpc::ServerContext server;
  CallWatcher::Scope scope(&watcher, &server);
  grpc::ClientContext call;
  scope.SetCurrent(&call);
  scope.WatchNode(7, absl::Milliseconds(200));
  // Touched every 50 ms for 600 ms: never idle.
  absl::Time quiet;
  for (int i = 0; i < 12; ++i) {
    quiet = absl::Now();
    scope.Touch();
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(scope.lost(), CallWatcher::Lost::kNone);
  EXPECT_TRUE(WaitFor(scope, CallWatcher::Lost::kIdle, absl::Seconds(2)));
  EXPECT_GE(absl::Now() - quiet, absl::Milliseconds(190));
  scope.SetCurrent(nullptr);
}

TEST(CallWatcherTest, NodeLeavingTheRegistryLosesItsCalls) {
  absl::Mutex mu;
  absl::flat_hash_set<uint64_t> live = {1, 2};
  CallWatcher watcher([&] {
    absl::MutexLock lock(&mu);
    return live;
  });
  grpc::ServerContext server;
  CallWatcher::Scope on_one(&watcher, &server);
  CallWatcher::Scope on_two(&watcher, &server);
  CallWatcher::Scope unwatched(&watcher, &server);
  on_one.WatchNode(1, absl::ZeroDuration());
  on_two.WatchNode(2, absl::ZeroDuration());
  unwatched.WatchNode(1, absl::ZeroDuration());
  unwatched.Unwatch();
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(on_one.lost(), CallWatcher::Lost::kNone);
  {
    absl::MutexLock lock(&mu);
    live.erase(1);
  }
  EXPECT_TRUE(WaitFor(on_one, CallWatcher::Lost::kNodeGone, absl::Seconds(2)));
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(on_two.lost(), CallWatcher::Lost::kNone);
  EXPECT_EQ(unwatched.lost(), CallWatcher::Lost::kNone);
  // A lost scope cancels the next call set on it at once.
  grpc::ClientContext late;
  on_one.SetCurrent(&late);
  on_one.SetCurrent(nullptr);
}

}  // namespace
}  // namespace duet::router
