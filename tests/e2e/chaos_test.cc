// Chaos under load (the reliability issue): a cluster of 2 prefill and 2
// decode nodes serves steady traffic while, every couple of seconds, a node
// or the router is stopped (SIGSTOP, then SIGCONT) or killed and restarted
// at its address: 8 faults, every process hit and the router both ways, in
// an order shuffled from a fixed seed. Every request must end by its deadline with all its tokens or a
// clear status; the cluster must be whole again soon after each fault; at
// the end it serves every request and every pool is free again.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <csignal>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/e2e/local_cluster.h"
#include "tests/testing/test_model.h"

namespace duet::testing {
namespace {

constexpr int kMaxTokens = 24;
constexpr absl::Duration kDeadline = absl::Seconds(15);

struct Outcome {
  grpc::StatusCode code;
  std::string message;
  size_t tokens;
  absl::Duration took;
};

Outcome Send(v1::Duet::Stub& stub, int k) {
  v1::GenerateRequest req;
  for (int32_t id : LcgPrompt(10 + k % 30, 1000)) req.add_prompt_token_ids(id);
  req.mutable_sampling()->set_max_tokens(kMaxTokens);
  req.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kDeadline));
  const absl::Time start = absl::Now();
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  size_t tokens = 0;
  while (reader->Read(&msg)) tokens += msg.chunk().token_ids_size();
  const grpc::Status s = reader->Finish();
  return {s.error_code(), s.error_message(), tokens, absl::Now() - start};
}

// A fresh client (a channel of the restarted router's own).
std::unique_ptr<v1::Duet::Stub> Client(const LocalCluster& c) {
  return v1::Duet::NewStub(
      grpc::CreateChannel(c.router_address(), TestCredentials(false)));
}

bool Whole(const LocalCluster& c, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    auto stub = Client(c);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    v1::HealthResponse h;
    if (stub->Health(&ctx, v1::HealthRequest(), &h).ok() &&
        h.num_prefill_nodes() == 2 && h.num_decode_nodes() == 2) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

TEST(ChaosTest, RandomStopsAndKillsUnderLoadEndEveryRequestCleanly) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.num_prefill = 2;
  o.num_decode = 2;
  // Short TTLs so reservations orphaned by a killed router come back
  // within the test; quarantine above the transfer timeout.
  o.router_args = {"--reservation-ttl-ms", "4000", "--stream-idle-timeout-ms",
                   "5000"};
  o.prefill_args = {"--num-kv-blocks", "256", "--kv-transfer-timeout-ms",
                    "2000"};
  o.decode_args = {"--num-kv-blocks", "512", "--release-quarantine-ms",
                   "2500"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;

  absl::Mutex mu;
  std::vector<Outcome> outcomes;
  std::atomic<bool> stop{false};
  std::vector<std::thread> load;
  for (int t = 0; t < 4; ++t) {
    load.emplace_back([&, t] {
      std::unique_ptr<v1::Duet::Stub> stub = Client(c);
      for (int k = t; !stop.load(); k += 4) {
        Outcome out = Send(*stub, k);
        if (out.code == grpc::StatusCode::UNAVAILABLE) {
          stub = Client(c);  // the router may have been restarted
          absl::SleepFor(absl::Milliseconds(50));
        }
        absl::MutexLock lock(&mu);
        outcomes.push_back(std::move(out));
      }
    });
  }

  // Every process gets a fault and the router both kinds; the order is
  // shuffled from a fixed seed. Victims: P0 P1 D0 D1 router.
  std::vector<std::pair<int, bool>> faults = {
      {4, true}, {4, false}, {0, true}, {1, false},
      {2, true}, {3, false}, {2, false}, {1, true}};
  std::shuffle(faults.begin(), faults.end(), std::mt19937(20261206));
  for (size_t cycle = 0; cycle < faults.size(); ++cycle) {
    absl::SleepFor(absl::Seconds(2));
    const auto [victim, kill] = faults[cycle];
    Process& p = victim < 2   ? c.prefill(victim)
                 : victim < 4 ? c.decode(victim - 2)
                              : c.router();
    const std::string what =
        absl::StrCat("cycle ", cycle, ": ", kill ? "kill " : "stop ",
                     victim < 2   ? absl::StrCat("prefill ", victim)
                     : victim < 4 ? absl::StrCat("decode ", victim - 2)
                                  : std::string("router"));
    std::printf("chaos: %s\n", what.c_str());
    SCOPED_TRACE(what);
    if (kill) {
      const absl::Status s =
          victim < 2   ? c.RestartPrefill(victim, absl::Milliseconds(500))
          : victim < 4 ? c.RestartDecode(victim - 2, absl::Milliseconds(500))
                       : c.RestartRouter(absl::Milliseconds(500));
      ASSERT_TRUE(s.ok()) << s;
    } else {
      p.Kill(SIGSTOP);
      absl::SleepFor(absl::Milliseconds(1500));
      p.Kill(SIGCONT);
    }
    // Whole again within a few heartbeat timeouts (1 s in tests).
    const absl::Time back = absl::Now();
    EXPECT_TRUE(Whole(c, absl::Seconds(10)));
    EXPECT_LT(absl::Now() - back, absl::Seconds(10));
  }
  stop = true;
  for (auto& t : load) t.join();

  int ok = 0;
  for (const Outcome& out : outcomes) {
    EXPECT_LE(out.took, kDeadline + absl::Seconds(2)) << out.message;
    if (out.code == grpc::StatusCode::OK) {
      ++ok;
      EXPECT_EQ(out.tokens, static_cast<size_t>(kMaxTokens));
      continue;
    }
    // A clear status and a message; never INTERNAL, UNKNOWN or an empty
    // message.
    EXPECT_TRUE(out.code == grpc::StatusCode::UNAVAILABLE ||
                out.code == grpc::StatusCode::DEADLINE_EXCEEDED ||
                out.code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                out.code == grpc::StatusCode::CANCELLED)
        << out.code << ": " << out.message;
    EXPECT_FALSE(out.message.empty()) << out.code;
  }
  std::printf("chaos: %d of %zu requests completed, the rest ended with a "
              "status\n",
              ok, outcomes.size());
  EXPECT_GT(ok, static_cast<int>(outcomes.size()) / 3)
      << ok << " of " << outcomes.size() << " requests completed";
  // The survivors and the restarted serve every request afterwards.
  ASSERT_TRUE(Whole(c, absl::Seconds(10)));
  auto stub = Client(c);
  for (int k = 0; k < 8; ++k) {
    const Outcome out = Send(*stub, 1000 + k);
    EXPECT_EQ(out.code, grpc::StatusCode::OK) << out.message;
  }
  // Orphaned reservations (4 s TTL) and quarantined blocks (2.5 s) return.
  EXPECT_TRUE(c.WaitAllBlocksFree(absl::Seconds(30)).ok())
      << "logs in " << c.log_dir();
}

}  // namespace
}  // namespace duet::testing
