// duet-kv-bench: KV handover through the KV transports, between two
// processes (receiver = decode side, forked before any CUDA or UCX call;
// sender = prefill side), against hardware floors measured in the same run.
//
// Per (transport, prompt length), the Qwen3-4B KV shape by default:
//   bulk      one SendLayers of every block and layer: p50 time, GB/s, and
//             the ratio to the floor (cuda-ipc: device-to-device
//             cudaMemcpy; ucx on GPU pools: the slowest of pinned D2H,
//             pinned H2D and loopback TCP; ucx on host pools: loopback TCP;
//             in-process: memcpy), all for the same byte count.
//   handover  a simulated prefill on the sender backend's stream (per layer
//             ~--layer_us of work, then a Mark), its KV pushed through
//             AsyncKvSender per layer (--push=layer) or once after the last
//             layer (--push=request): p50 / p99 of the time from the last
//             layer's mark being reached to the transfer's Close callback
//             (every byte visible at the receiver), and the p50 time from
//             the first Submit to that callback.
// The receiver's Land (a staged receiver's scatter into its pool) is timed
// on its side and shown separately. The first iteration of every
// measurement is verified byte for byte (checksums of both pools).
//
//   duet-kv-bench --backend=cuda --transports=cuda-ipc,ucx
//                 --tokens=512,2048,8192 [--layer_us=500] [--json_out=F]
//   duet-kv-bench --backend=cpu --transports=ucx,ucx-staged,in-process
//                 --tokens=64,256 --layers=4 --iters=3
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/flags.h"
#include "common/status.h"
#include "kv_transfer/async_sender.h"
#include "kv_transfer/cuda_ipc.h"
#include "kv_transfer/in_process.h"
#include "kv_transfer/ucx_transport.h"
#include "tools/kv_bench_common.h"
#include "tools/kv_bench_floors.h"
#include "tools/kv_bench_receiver.h"
#include "tools/kv_bench_wire.h"

ABSL_FLAG(std::string, tokens, "512,2048,8192", "prompt lengths (tokens)");
ABSL_FLAG(std::string, transports, "cuda-ipc,ucx",
          "cuda-ipc, ucx (staged on GPU pools), ucx-staged (host pools "
          "through staging), in-process (--backend=cpu only)");
ABSL_FLAG(std::string, backend, "cuda", "cpu or cuda (both processes)");
ABSL_FLAG(int32_t, device, 0, "CUDA device of the sender");
ABSL_FLAG(int32_t, receiver_device, -1,
          "CUDA device of the receiver (-1: --device)");
ABSL_FLAG(int32_t, iters, 20, "timed iterations per measurement");
ABSL_FLAG(int32_t, warmup, 3, "untimed iterations before them");
ABSL_FLAG(std::string, push, "both",
          "handover measured with per-layer pushes (layer), one push after "
          "the last layer (request), or both");
ABSL_FLAG(double, layer_us, 0,
          "simulated compute per layer on the sender backend's stream "
          "(RmsNorms); 0: marks back to back, no compute");
ABSL_FLAG(int32_t, layers, 36, "KV layers (Qwen3-4B: 36)");
ABSL_FLAG(int32_t, kv_heads, 8, "KV heads (Qwen3-4B: 8)");
ABSL_FLAG(int32_t, head_dim, 128, "head dim (Qwen3-4B: 128)");
ABSL_FLAG(int32_t, block_size, 16, "tokens per KV block");
ABSL_FLAG(std::string, ucx_tls, "tcp",
          "UCX transports (UCX_TLS syntax); empty: UCX_TLS or UCX's choice");
ABSL_FLAG(int32_t, floor_reps, 5, "timed runs per floor (median)");
ABSL_FLAG(bool, verify_all, false,
          "checksum every iteration, not only the first of each measurement");
ABSL_FLAG(double, timeout_s, 120, "deadline of one transfer");
ABSL_FLAG(std::string, json_out, "", "also write the results here");

namespace {

namespace kvb = duet::tools::kv_bench;
namespace kvt = duet::kv_transfer;
using Clock = std::chrono::steady_clock;
using kvb::BenchTransport;

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "duet-kv-bench: %s\n", s.ToString().c_str());
  return 1;
}

int BadFlag(const std::string& msg) {
  std::fprintf(stderr, "duet-kv-bench: %s\n", msg.c_str());
  return 2;
}

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Nearest-rank percentile, q in (0, 1].
double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * v.size()));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

// Lets AsyncKvSender (which owns its transport) share the bulk sender.
class BorrowedSender final : public kvt::KvSender {
 public:
  explicit BorrowedSender(kvt::KvSender* s) : s_(s) {}
  absl::Status SendLayers(
      const kvt::KvDescriptor& dest, std::span<const kvt::BlockCopy> copies,
      kvt::LayerRange layers,
      std::shared_ptr<const duet::kernels::StreamMark> ready,
      absl::Duration timeout) override {
    return s_->SendLayers(dest, copies, layers, std::move(ready), timeout);
  }

 private:
  kvt::KvSender* const s_;
};

struct Floors {
  std::optional<double> d2d, h2d, d2h, tcp, memcpy;
};

// The floor a transport's bulk figure is compared with, and its name.
std::pair<double, std::string> FloorOf(BenchTransport t, bool gpu,
                                       const Floors& f) {
  switch (t) {
    case BenchTransport::kCudaIpc:
      return {f.d2d.value_or(0), "d2d copy"};
    case BenchTransport::kInProcess:
      return {f.memcpy.value_or(0), "memcpy"};
    case BenchTransport::kUcx:
    case BenchTransport::kUcxStaged:
      if (!gpu) return {f.tcp.value_or(0), "tcp"};
      return {
          std::min({f.h2d.value_or(0), f.d2h.value_or(0), f.tcp.value_or(0)}),
          "min(h2d,d2h,tcp)"};
  }
  return {0, "?"};
}

struct Push {
  std::vector<double> handover_ms, total_ms, compute_ms;
};

struct Row {
  BenchTransport transport;
  int32_t tokens = 0, blocks = 0;
  int64_t bytes = 0;
  std::vector<double> bulk_ms, land_ms;
  std::map<std::string, Push> push;  // "request", "layer"
  int verified = 0;
};

// One transport's sender side, measuring against one receiver.
class Runner {
 public:
  Runner(duet::kernels::Backend* backend, kvb::BenchPool* pool,
         kvb::LayerWork* work, kvb::ReceiverClient* client,
         kvt::KvSender* sender)
      : backend_(backend),
        pool_(pool),
        work_(work),
        client_(client),
        sender_(sender),
        async_(std::make_unique<BorrowedSender>(sender)) {}

  absl::Status Measure(Row& row, const std::vector<std::string>& pushes) {
    DUET_RETURN_IF_ERROR(Repeat(row, [&](uint64_t, const kvt::KvDescriptor& d) {
      return Bulk(row, d);
    }));
    for (const std::string& mode : pushes) {
      Push& p = row.push[mode];
      DUET_RETURN_IF_ERROR(
          Repeat(row, [&](uint64_t key, const kvt::KvDescriptor& d) {
            return Handover(row, key, d, mode == "layer", p);
          }));
    }
    return absl::OkStatus();
  }

 private:
  // Runs `one` warmup + iters times, each on a freshly described key
  // (fresh source bytes and a checksum on the first or every iteration).
  template <typename F>
  absl::Status Repeat(Row& row, F one) {
    const int warmup = absl::GetFlag(FLAGS_warmup);
    const int total = warmup + absl::GetFlag(FLAGS_iters);
    for (int i = 0; i < total; ++i) {
      timed_ = i >= warmup;
      const uint64_t key = next_key_++;
      const bool verify = i == 0 || absl::GetFlag(FLAGS_verify_all);
      uint64_t expected = 0;
      if (verify) {
        DUET_RETURN_IF_ERROR(pool_->Fill(key * 7919, row.blocks));
        DUET_ASSIGN_OR_RETURN(expected, pool_->Checksum(row.blocks));
      }
      DUET_ASSIGN_OR_RETURN(kvt::KvDescriptor d,
                            client_->Describe(key, row.blocks));
      if (absl::Status s = one(key, d); !s.ok()) {
        (void)client_->Drop(key);
        return s;
      }
      DUET_ASSIGN_OR_RETURN(kvb::ReceiverClient::Landed landed,
                            client_->Land(key, verify));
      if (timed_) row.land_ms.push_back(landed.land_ms);
      if (verify) {
        if (landed.checksum != expected) {
          return absl::DataLossError(absl::StrFormat(
              "%s, %d tokens: the receiver's blocks differ from the "
              "sender's (checksum %016x, expected %016x)",
              kvb::TransportName(row.transport), row.tokens, landed.checksum,
              expected));
        }
        ++row.verified;
      }
    }
    return absl::OkStatus();
  }

  // One query: whether `mark` is reached now (Wait with a past deadline
  // polls once).
  static bool Reached(const duet::kernels::StreamMark& mark) {
    return mark.Wait(absl::InfinitePast()).ok();
  }

  absl::Duration Timeout() const {
    return absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  }

  std::vector<kvt::BlockCopy> Copies(const Row& row) const {
    std::vector<kvt::BlockCopy> copies(static_cast<size_t>(row.blocks));
    for (int32_t i = 0; i < row.blocks; ++i) copies[i] = {i, i};
    return copies;
  }

  absl::Status Bulk(Row& row, const kvt::KvDescriptor& d) {
    const std::vector<kvt::BlockCopy> copies = Copies(row);
    const auto start = Clock::now();
    DUET_RETURN_IF_ERROR(sender_->Send(d, copies, Timeout()));
    if (timed_) row.bulk_ms.push_back(Ms(start, Clock::now()));
    return absl::OkStatus();
  }

  absl::Status Handover(Row& row, uint64_t key, const kvt::KvDescriptor& d,
                        bool per_layer, Push& p) {
    struct Done {
      absl::Mutex mu;
      bool fired = false;
      absl::Status status;
      Clock::time_point at;
    };
    auto done = std::make_shared<Done>();
    DUET_RETURN_IF_ERROR(async_.Open(key, d, absl::Now() + Timeout()));
    const int32_t layers = pool_->view().layout.num_layers;
    const auto start = Clock::now();
    Clock::time_point first_submit, taken;
    std::shared_ptr<const duet::kernels::StreamMark> last;
    // Whether the last mark was reached as soon as it was taken (always on
    // the CPU, where every op is done when it returns): then it was reached
    // at `taken`, not when this thread gets round to asking.
    bool reached_when_taken = false;
    absl::Status s;
    for (int32_t l = 0; l < layers && s.ok(); ++l) {
      s = work_->Run();
      if (!s.ok() || !per_layer) continue;
      absl::StatusOr<std::shared_ptr<const duet::kernels::StreamMark>> mark =
          backend_->Mark();
      if (!mark.ok()) {
        s = mark.status();
        continue;
      }
      last = *mark;
      taken = Clock::now();
      if (l == 0) first_submit = taken;
      if (l == layers - 1) reached_when_taken = Reached(*last);
      async_.Submit(key, Copies(row), {l, l + 1}, last);
    }
    if (s.ok() && !per_layer) {
      absl::StatusOr<std::shared_ptr<const duet::kernels::StreamMark>> mark =
          backend_->Mark();
      if (mark.ok()) {
        last = *mark;
        taken = first_submit = Clock::now();
        reached_when_taken = Reached(*last);
        async_.Submit(key, Copies(row), {}, last);
      } else {
        s = mark.status();
      }
    }
    if (!s.ok()) {
      (void)async_.Abort(key, s, nullptr);
      return s;
    }
    DUET_RETURN_IF_ERROR(async_.Close(key, [done](absl::Status st) {
      absl::MutexLock lock(&done->mu);
      done->at = Clock::now();
      done->status = std::move(st);
      done->fired = true;
    }));
    // Polled without sleeping, so `reached` is within a query of the mark.
    const absl::Time deadline = absl::Now() + Timeout();
    while (!reached_when_taken && !Reached(*last)) {
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError("the last layer's mark");
      }
    }
    const auto reached = reached_when_taken ? taken : Clock::now();
    absl::MutexLock lock(&done->mu);
    if (!done->mu.AwaitWithTimeout(absl::Condition(&done->fired), Timeout())) {
      return absl::DeadlineExceededError("transfer did not complete");
    }
    DUET_RETURN_IF_ERROR(done->status);
    if (timed_) {
      p.handover_ms.push_back(std::max(0.0, Ms(reached, done->at)));
      p.total_ms.push_back(Ms(first_submit, done->at));
      p.compute_ms.push_back(Ms(start, reached));
    }
    return absl::OkStatus();
  }

  duet::kernels::Backend* const backend_;
  kvb::BenchPool* const pool_;
  kvb::LayerWork* const work_;
  kvb::ReceiverClient* const client_;
  kvt::KvSender* const sender_;
  kvt::AsyncKvSender async_;
  uint64_t next_key_ = 1;
  bool timed_ = false;
};

absl::StatusOr<std::vector<int32_t>> ParseInts(const std::string& flag,
                                               const std::string& s) {
  std::vector<int32_t> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int32_t v;
    if (!absl::SimpleAtoi(p, &v) || v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": positive comma-separated integers"));
    }
    out.push_back(v);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " is empty"));
  }
  return out;
}

nlohmann::json PushJson(const Push& p) {
  return {{"handover_p50_ms", Percentile(p.handover_ms, 0.5)},
          {"handover_p99_ms", Percentile(p.handover_ms, 0.99)},
          {"total_p50_ms", Percentile(p.total_ms, 0.5)},
          {"compute_p50_ms", Percentile(p.compute_ms, 0.5)},
          {"handover_ms", p.handover_ms}};
}

std::string HandoverCell(const Row& r, const std::string& mode) {
  auto it = r.push.find(mode);
  if (it == r.push.end()) return "-";
  return absl::StrFormat("%.3f/%.3f", Percentile(it->second.handover_ms, 0.5),
                         Percentile(it->second.handover_ms, 0.99));
}

// Reaps the receiver process: it exits once its channel is closed.
void Reap(pid_t pid) {
  if (pid <= 0) return;
  for (int i = 0; i < 200; ++i) {
    if (waitpid(pid, nullptr, WNOHANG) == pid) return;
    usleep(50 * 1000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "KV handover through the KV transports between two processes, against "
      "measured floors.\nUsage: duet-kv-bench --backend=cuda "
      "--transports=cuda-ipc,ucx --tokens=512,2048,8192");
  duet::ParseFlags(argc, argv);
  // Every check before the fork: a bad flag exits 2 in one process.
  auto tokens = ParseInts("tokens", absl::GetFlag(FLAGS_tokens));
  if (!tokens.ok()) return BadFlag(std::string(tokens.status().message()));
  std::vector<BenchTransport> transports;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_transports),
                                               ',', absl::SkipEmpty())) {
    auto t = kvb::ParseTransport(name);
    if (!t.ok()) return BadFlag(std::string(t.status().message()));
    transports.push_back(*t);
  }
  if (transports.empty()) return BadFlag("--transports is empty");
  const std::string backend_name = absl::GetFlag(FLAGS_backend);
  if (backend_name != "cpu" && backend_name != "cuda") {
    return BadFlag("--backend must be cpu or cuda");
  }
  const bool gpu = backend_name == "cuda";
  for (BenchTransport t : transports) {
    if (gpu ? t == BenchTransport::kInProcess : t == BenchTransport::kCudaIpc) {
      return BadFlag(
          absl::StrCat("--transports: ", kvb::TransportName(t),
                       " does not run with --backend=", backend_name));
    }
  }
  std::vector<std::string> pushes;
  const std::string push = absl::GetFlag(FLAGS_push);
  if (push == "request" || push == "both") pushes.push_back("request");
  if (push == "layer" || push == "both") pushes.push_back("layer");
  if (pushes.empty()) return BadFlag("--push must be layer, request or both");
  if (absl::GetFlag(FLAGS_iters) <= 0 || absl::GetFlag(FLAGS_warmup) < 0) {
    return BadFlag("--iters must be positive and --warmup not negative");
  }
  const kvt::KvLayout layout{
      absl::GetFlag(FLAGS_layers), absl::GetFlag(FLAGS_kv_heads),
      absl::GetFlag(FLAGS_head_dim), absl::GetFlag(FLAGS_block_size),
      duet::DType::kBF16};
  if (layout.num_layers <= 0 || layout.num_kv_heads <= 0 ||
      layout.head_dim <= 0 || layout.block_size <= 0) {
    return BadFlag("--layers, --kv_heads, --head_dim, --block_size: positive");
  }
  const int32_t max_tokens = *std::max_element(tokens->begin(), tokens->end());
  const int32_t max_blocks =
      (max_tokens + layout.block_size - 1) / layout.block_size;

  kvb::ReceiverConfig rconfig;
  rconfig.backend = backend_name;
  rconfig.device = absl::GetFlag(FLAGS_receiver_device) >= 0
                       ? absl::GetFlag(FLAGS_receiver_device)
                       : absl::GetFlag(FLAGS_device);
  rconfig.layout = layout;
  rconfig.num_blocks = max_blocks;
  rconfig.ucx_tls = absl::GetFlag(FLAGS_ucx_tls);

  // The receiver process, forked before anything touches CUDA or UCX.
  pid_t child = -1;
  std::unique_ptr<kvb::Channel> channel;
  if (std::any_of(transports.begin(), transports.end(), [](BenchTransport t) {
        return t != BenchTransport::kInProcess;
      })) {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) {
      return Fail(absl::InternalError("socketpair failed"));
    }
    std::fflush(nullptr);
    child = fork();
    if (child < 0) return Fail(absl::InternalError("fork failed"));
    if (child == 0) {
      close(fds[0]);
      const int rc = kvb::ServeReceiver(rconfig, fds[1]);
      std::fflush(nullptr);
      _exit(rc);
    }
    close(fds[1]);
    channel = std::make_unique<kvb::Channel>(fds[0]);
  }
  // Closes the channel (the receiver exits) and reaps it on every return.
  struct ChildGuard {
    std::unique_ptr<kvb::Channel>& channel;
    pid_t pid;
    ~ChildGuard() {
      channel.reset();
      Reap(pid);
    }
  } guard{channel, child};

  if (channel != nullptr) {
    absl::StatusOr<std::string> hello = channel->Receive();
    absl::Status s;
    if (!hello.ok()) {
      s = hello.status();
    } else if (kvb::WireReader in(*hello); !in.Status(s)) {
      s = absl::InternalError("malformed hello from the receiver");
    }
    if (!s.ok()) {
      return Fail(absl::Status(
          s.code(), absl::StrCat("receiver process: ", s.message())));
    }
  }
  const int device = absl::GetFlag(FLAGS_device);
  auto backend = kvb::MakeBenchBackend(backend_name, device);
  if (!backend.ok()) return Fail(backend.status());
  auto pool = kvb::BenchPool::Create(backend->get(), layout, max_blocks);
  if (!pool.ok()) return Fail(pool.status());
  auto work =
      kvb::LayerWork::Create(backend->get(), absl::GetFlag(FLAGS_layer_us));
  if (!work.ok()) return Fail(work.status());
  std::printf("backend %s, KV %s: %.0f KiB per block and layer\n",
              backend_name.c_str(), kvt::KvLayoutString(layout).c_str(),
              layout.block_bytes() / 1024.0);
  std::printf(
      "simulated compute per layer: %s; %d warm-up + %d timed "
      "iterations\n",
      (*work)->Describe().c_str(), absl::GetFlag(FLAGS_warmup),
      absl::GetFlag(FLAGS_iters));

  // Floors, per byte count, before any transport runs.
  auto has = [&](BenchTransport t) {
    return std::find(transports.begin(), transports.end(), t) !=
           transports.end();
  };
  const bool ucx = has(BenchTransport::kUcx) || has(BenchTransport::kUcxStaged);
  const int reps = absl::GetFlag(FLAGS_floor_reps);
  const int64_t bytes_per_block =
      int64_t{layout.num_layers} * layout.block_bytes();
  std::map<int32_t, Floors> floors;
  nlohmann::json floors_json = nlohmann::json::array();
  for (int32_t t : *tokens) {
    const int64_t bytes =
        int64_t{(t + layout.block_size - 1) / layout.block_size} *
        bytes_per_block;
    Floors& f = floors[t];
    auto take = [](absl::StatusOr<double> v, std::optional<double>& out) {
      if (!v.ok()) return v.status();
      out = *v;
      return absl::OkStatus();
    };
    absl::Status s;
    if (has(BenchTransport::kCudaIpc)) {
      s.Update(take(kvb::DeviceCopyGbps(device, bytes, reps), f.d2d));
    }
    if (ucx && gpu) {
      auto pinned = kvb::PinnedCopyGbps(device, bytes, reps);
      if (pinned.ok()) {
        f.h2d = pinned->host_to_device_gbps;
        f.d2h = pinned->device_to_host_gbps;
      }
      s.Update(pinned.status());
    }
    if (ucx) s.Update(take(kvb::TcpLoopbackGbps(bytes, reps), f.tcp));
    if (has(BenchTransport::kInProcess)) {
      s.Update(take(kvb::HostCopyGbps(bytes, reps), f.memcpy));
    }
    if (!s.ok()) return Fail(s);
    std::string line =
        absl::StrFormat("floors, %d tokens (%.1f MiB):", t, bytes / 1048576.0);
    nlohmann::json j = {{"tokens", t}, {"bytes", bytes}};
    for (const auto& [name, v] :
         {std::pair{"d2d", f.d2d}, std::pair{"h2d", f.h2d},
          std::pair{"d2h", f.d2h}, std::pair{"tcp", f.tcp},
          std::pair{"memcpy", f.memcpy}}) {
      if (!v.has_value()) continue;
      absl::StrAppendFormat(&line, " %s %.2f GB/s", name, *v);
      j[absl::StrCat(name, "_gbps")] = *v;
    }
    std::printf("%s\n", line.c_str());
    floors_json.push_back(j);
  }

  std::printf(
      "\nGB/s = 1e9 bytes/s; handover = last layer's mark reached -> "
      "all KV visible at the receiver (p50/p99 ms)\n");
  std::printf("%-10s %7s %9s %9s %9s %6s %-17s %17s %17s %9s %8s\n",
              "transport", "tokens", "MiB", "bulk GB/s", "floor", "ratio",
              "floor kind", "request p50/p99", "layer p50/p99", "layer tot",
              "land ms");
  std::fflush(stdout);

  std::unique_ptr<kvb::ReceiverSide> local;  // in-process receiver side
  nlohmann::json results = nlohmann::json::array();
  int verified = 0;
  for (BenchTransport t : transports) {
    kvb::ReceiverClient::Call call;
    if (t == BenchTransport::kInProcess) {
      if (local == nullptr) {
        auto side = kvb::ReceiverSide::Create(rconfig);
        if (!side.ok()) return Fail(side.status());
        local = std::move(*side);
      }
      call = [&local](std::string req) -> absl::StatusOr<std::string> {
        return local->Handle(req);
      };
    } else {
      call = [&channel](std::string req) { return channel->Call(req); };
    }
    kvb::ReceiverClient client(std::move(call));
    if (absl::Status s = client.Open(t); !s.ok()) {
      return Fail(absl::Status(
          s.code(),
          absl::StrCat(kvb::TransportName(t), " receiver: ", s.message())));
    }
    absl::StatusOr<std::unique_ptr<kvt::KvSender>> sender;
    kvt::UcxOptions options;
    options.transports = absl::GetFlag(FLAGS_ucx_tls);
    options.staged = t == BenchTransport::kUcxStaged;
    switch (t) {
      case BenchTransport::kCudaIpc:
        sender =
            kvt::MakeCudaIpcSender((*pool)->view(), backend->get(), device);
        break;
      case BenchTransport::kUcx:
      case BenchTransport::kUcxStaged:
        sender = kvt::MakeUcxSender((*pool)->view(), options, backend->get());
        break;
      case BenchTransport::kInProcess:
        sender = kvt::MakeInProcessSender(local->registry(), (*pool)->view());
        break;
    }
    if (!sender.ok()) {
      return Fail(absl::Status(sender.status().code(),
                               absl::StrCat(kvb::TransportName(t), " sender: ",
                                            sender.status().message())));
    }
    Runner runner(backend->get(), pool->get(), work->get(), &client,
                  sender->get());
    for (int32_t tok : *tokens) {
      Row row;
      row.transport = t;
      row.tokens = tok;
      row.blocks = (tok + layout.block_size - 1) / layout.block_size;
      row.bytes = row.blocks * bytes_per_block;
      if (absl::Status s = runner.Measure(row, pushes); !s.ok()) {
        return Fail(absl::Status(s.code(),
                                 absl::StrCat(kvb::TransportName(t), ", ", tok,
                                              " tokens: ", s.message())));
      }
      const double bulk_ms = Percentile(row.bulk_ms, 0.5);
      const double gbps = row.bytes / (bulk_ms * 1e-3) / 1e9;
      const auto [floor, floor_kind] = FloorOf(t, gpu, floors[tok]);
      const double ratio = floor > 0 ? gbps / floor : 0;
      const double land_ms = Percentile(row.land_ms, 0.5);
      std::string layer_total = "-";
      if (row.push.contains("layer")) {
        layer_total = absl::StrFormat(
            "%.3f", Percentile(row.push["layer"].total_ms, 0.5));
      }
      std::printf(
          "%-10s %7d %9.1f %9.2f %9.2f %6.2f %-17s %17s %17s %9s "
          "%8.3f\n",
          std::string(kvb::TransportName(t)).c_str(), tok,
          row.bytes / 1048576.0, gbps, floor, ratio, floor_kind.c_str(),
          HandoverCell(row, "request").c_str(),
          HandoverCell(row, "layer").c_str(), layer_total.c_str(), land_ms);
      std::fflush(stdout);
      nlohmann::json j = {{"transport", kvb::TransportName(t)},
                          {"tokens", tok},
                          {"blocks", row.blocks},
                          {"bytes", row.bytes},
                          {"bulk_p50_ms", bulk_ms},
                          {"bulk_gbps", gbps},
                          {"floor_gbps", floor},
                          {"floor_kind", floor_kind},
                          {"ratio", ratio},
                          {"land_p50_ms", land_ms},
                          {"verified_iterations", row.verified},
                          {"bulk_ms", row.bulk_ms}};
      for (const auto& [mode, p] : row.push) {
        j[absl::StrCat(mode, "_push")] = PushJson(p);
      }
      results.push_back(j);
      verified += row.verified;
    }
  }
  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) {
    nlohmann::json out = {{"backend", backend_name},
                          {"layout", kvt::KvLayoutString(layout)},
                          {"block_bytes", layout.block_bytes()},
                          {"layer_us", absl::GetFlag(FLAGS_layer_us)},
                          {"layer_work", (*work)->Describe()},
                          {"layer_work_us", (*work)->measured_us()},
                          {"iters", absl::GetFlag(FLAGS_iters)},
                          {"warmup", absl::GetFlag(FLAGS_warmup)},
                          {"ucx_tls", absl::GetFlag(FLAGS_ucx_tls)},
                          {"floors", floors_json},
                          {"results", results}};
    std::ofstream f(json_out);
    f << out.dump(2) << "\n";
    if (!f) return Fail(absl::InternalError("cannot write " + json_out));
  }
  std::printf("verified: %d transfers landed byte-identical (%s)\n", verified,
              absl::GetFlag(FLAGS_verify_all)
                  ? "every iteration"
                  : "the first iteration of each measurement");
  return 0;
}
