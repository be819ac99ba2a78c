// UCX receiver: registers the decode node's pool and keeps its worker
// progressed so that software-emulated RMA (tcp, shared memory) lands.
#include <poll.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/status.h"
#include "kv_transfer/copy_plan.h"
#include "kv_transfer/ucx_context.h"
#include "kv_transfer/ucx_transport.h"

namespace duet::kv_transfer {
namespace {

using internal::UcpContext;
using internal::UcpMem;
using internal::UcpWorker;

// Upper bound on one poll() of the progress thread. Wakeups come from the
// worker's event fd or the stop pipe; the bound only caps the cost of a
// missed event (a transport that does not signal) at this much latency.
constexpr int kPollTimeoutMs = 50;
// Idle sleep when the worker has no event fd (transport without wakeup).
constexpr absl::Duration kIdleSleep = absl::Microseconds(100);

class UcxReceiver final : public KvReceiver {
 public:
  static absl::StatusOr<std::unique_ptr<KvReceiver>> Create(
      const KvPoolView& pool, const UcxOptions& options);

  ~UcxReceiver() override {
    if (thread_.joinable()) {
      stop_.store(true, std::memory_order_release);
      wakeup_.Signal();
      thread_.join();
    }
    // Members go in reverse order: rkeys, mappings, worker, then context.
  }

  absl::StatusOr<KvDescriptor> Describe(
      std::span<const int32_t> block_ids) override;

 private:
  explicit UcxReceiver(const KvPoolView& pool) : pool_(pool) {}
  void ProgressLoop();

  const KvPoolView pool_;
  UcpContext context_;
  UcpWorker worker_;
  std::vector<UcpMem> layer_mem_;
  std::vector<std::string> rkeys_;  // packed, one per layer
  std::string worker_address_;
  internal::WakeupPipe wakeup_;
  int efd_ = -1;  // owned by the worker; -1 when it has none
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<KvReceiver>> UcxReceiver::Create(
    const KvPoolView& pool, const UcxOptions& options) {
  if (absl::Status s = internal::ValidatePool(pool, "UCX receiver pool");
      !s.ok()) {
    return s;
  }
  if (pool.device != Device::kCpu) {
    return absl::UnimplementedError(
        "UCX KV transport: GPU pools need host staging, not built yet");
  }
  std::unique_ptr<UcxReceiver> r(new UcxReceiver(pool));
  DUET_ASSIGN_OR_RETURN(r->context_, internal::CreateContext(options));
  DUET_ASSIGN_OR_RETURN(r->worker_, internal::CreateWorker(r->context_.get()));
  {
    DUET_ASSIGN_OR_RETURN(internal::UcpWorkerAddress address,
                          internal::GetWorkerAddress(r->worker_.get()));
    r->worker_address_ = address.bytes();
  }
  const size_t layer_bytes = static_cast<size_t>(pool.num_blocks) *
                             static_cast<size_t>(pool.layout.block_bytes());
  for (void* base : pool.layer_base) {
    DUET_ASSIGN_OR_RETURN(
        UcpMem mem, internal::MapMemory(r->context_.get(), base, layer_bytes));
    DUET_ASSIGN_OR_RETURN(std::string rkey,
                          internal::PackRkey(r->context_.get(), mem.get()));
    r->layer_mem_.push_back(std::move(mem));
    r->rkeys_.push_back(std::move(rkey));
  }
  DUET_RETURN_IF_ERROR(r->wakeup_.Open());
  if (ucp_worker_get_efd(r->worker_.get(), &r->efd_) != UCS_OK) {
    DUET_LOG(WARNING) << "UCX worker has no event fd; the KV receiver's "
                         "progress thread will poll with short sleeps";
    r->efd_ = -1;
  }
  r->thread_ = std::thread([raw = r.get()] { raw->ProgressLoop(); });
  return std::unique_ptr<KvReceiver>(std::move(r));
}

void UcxReceiver::ProgressLoop() {
  ucp_worker_h worker = worker_.get();
  while (!stop_.load(std::memory_order_acquire)) {
    if (ucp_worker_progress(worker) != 0) continue;
    if (efd_ < 0) {
      absl::SleepFor(kIdleSleep);
      continue;
    }
    // Arm only once nothing is pending; BUSY means events arrived meanwhile.
    const ucs_status_t armed = ucp_worker_arm(worker);
    if (armed == UCS_ERR_BUSY) continue;
    if (armed != UCS_OK) {
      absl::SleepFor(kIdleSleep);
      continue;
    }
    pollfd fds[2] = {{efd_, POLLIN, 0}, {wakeup_.read_fd(), POLLIN, 0}};
    poll(fds, 2, kPollTimeoutMs);
    if (fds[1].revents != 0) wakeup_.Drain();
  }
}

absl::StatusOr<KvDescriptor> UcxReceiver::Describe(
    std::span<const int32_t> block_ids) {
  // The sender cannot range-check destination ids (the descriptor does not
  // carry the pool size) and a put outside the pool would corrupt this
  // process, so ids are checked here, where they are minted.
  std::vector<bool> used(static_cast<size_t>(pool_.num_blocks), false);
  for (size_t i = 0; i < block_ids.size(); ++i) {
    const int32_t b = block_ids[i];
    if (b < 0 || b >= pool_.num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("block_ids[", i, "] = ", b, " outside the UCX pool of ",
                       pool_.num_blocks, " blocks"));
    }
    if (used[static_cast<size_t>(b)]) {
      return absl::InvalidArgumentError(
          absl::StrCat("block ", b, " appears twice in block_ids"));
    }
    used[static_cast<size_t>(b)] = true;
  }
  KvDescriptor d;
  d.transport = Transport::kUcx;
  d.layout = pool_.layout;
  d.block_ids.assign(block_ids.begin(), block_ids.end());
  d.ucx_worker_address = worker_address_;
  d.ucx_rkeys = rkeys_;
  d.remote_layer_base.reserve(pool_.layer_base.size());
  for (void* base : pool_.layer_base) {
    d.remote_layer_base.push_back(reinterpret_cast<uint64_t>(base));
  }
  return d;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvReceiver>> MakeUcxReceiver(
    const KvPoolView& pool, const UcxOptions& options) {
  return UcxReceiver::Create(pool, options);
}

}  // namespace duet::kv_transfer
