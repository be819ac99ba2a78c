// UCX receiver: registers the decode node's pool (direct) or its staging
// slots (staged), hands out descriptors per request, lands staged requests
// with the backend, and keeps its worker progressed so that
// software-emulated RMA (tcp, shared memory) lands.
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/status.h"
#include "kernels/backend.h"
#include "kv_transfer/copy_plan.h"
#include "kv_transfer/staging_slots.h"
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
      const KvPoolView& pool, const UcxOptions& options,
      kernels::Backend* backend);

  ~UcxReceiver() override {
    if (thread_.joinable()) {
      stop_.store(true, std::memory_order_release);
      wakeup_.Signal();
      thread_.join();
    }
    // Members go in reverse order: rkeys, mappings (before the staging
    // memory they map), worker, then context.
  }

  absl::StatusOr<KvDescriptor> Describe(
      uint64_t key, std::span<const int32_t> block_ids) override;
  absl::Status Land(uint64_t key) override;
  void Drop(uint64_t key) override;
  void Discard(uint64_t key) override;
  int32_t max_blocks_per_request() const override {
    return staged() ? slots_.num_slots() : pool_.num_blocks;
  }

 private:
  // A described request of a staged receiver: its pool blocks and its run
  // of staging slots.
  struct Staged {
    std::vector<int32_t> block_ids;
    int32_t first_slot = 0;
  };

  UcxReceiver(const KvPoolView& pool, kernels::Backend* backend,
              const UcxOptions& options, int32_t staging_slots)
      : pool_(pool),
        backend_(backend),
        slot_bytes_(static_cast<int64_t>(pool.layout.num_layers) *
                    pool.layout.block_bytes()),
        slots_(staging_slots, options.staging_quarantine) {}
  bool staged() const { return backend_ != nullptr; }
  // Staging of a run of n slots starting at `first`: [layer][i][block].
  char* SlotsBase(int32_t first) const {
    return static_cast<char*>(staging_.data()) + first * slot_bytes_;
  }
  absl::StatusOr<KvDescriptor> DescribeStaged(
      uint64_t key, std::span<const int32_t> block_ids);
  // Drop (quarantine: bytes may still arrive) or Discard (free at once).
  void Forget(uint64_t key, bool quarantine);
  void ProgressLoop();

  const KvPoolView pool_;
  kernels::Backend* const backend_;  // null: direct mode
  const int64_t slot_bytes_;         // one block of every layer
  UcpContext context_;
  UcpWorker worker_;
  std::string worker_address_;
  // Direct: one mapping and packed rkey per layer of the pool. Staged: one
  // of each for the staging memory.
  kernels::HostBuffer staging_;
  std::vector<UcpMem> mem_;
  std::vector<std::string> rkeys_;

  internal::DescribedKeys direct_keys_;
  absl::Mutex mu_;
  internal::StagingSlots slots_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Staged> staged_keys_ ABSL_GUARDED_BY(mu_);

  internal::WakeupPipe wakeup_;
  int efd_ = -1;  // owned by the worker; -1 when it has none
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<KvReceiver>> UcxReceiver::Create(
    const KvPoolView& pool, const UcxOptions& options,
    kernels::Backend* backend) {
  if (absl::Status s = internal::ValidatePool(pool, "UCX receiver pool");
      !s.ok()) {
    return s;
  }
  DUET_ASSIGN_OR_RETURN(
      const bool staged,
      internal::UseStaging(pool, options, backend, "UCX receiver"));
  if (staged && options.staging_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("UCX receiver: staging_blocks must be positive, got ",
                     options.staging_blocks));
  }
  // More slots than pool blocks could never be used at once.
  const int32_t slots =
      staged ? std::min(options.staging_blocks, pool.num_blocks) : 0;
  std::unique_ptr<UcxReceiver> r(
      new UcxReceiver(pool, staged ? backend : nullptr, options, slots));
  DUET_ASSIGN_OR_RETURN(r->context_, internal::CreateContext(options));
  DUET_ASSIGN_OR_RETURN(r->worker_, internal::CreateWorker(r->context_.get()));
  {
    DUET_ASSIGN_OR_RETURN(internal::UcpWorkerAddress address,
                          internal::GetWorkerAddress(r->worker_.get()));
    r->worker_address_ = address.bytes();
  }
  std::vector<std::pair<void*, size_t>> regions;
  if (staged) {
    DUET_ASSIGN_OR_RETURN(r->staging_,
                          backend->AllocateHostStaging(slots * r->slot_bytes_));
    regions.emplace_back(r->staging_.data(), r->staging_.size());
  } else {
    const size_t layer_bytes = static_cast<size_t>(pool.num_blocks) *
                               static_cast<size_t>(pool.layout.block_bytes());
    for (void* base : pool.layer_base) regions.emplace_back(base, layer_bytes);
  }
  for (const auto& [base, bytes] : regions) {
    DUET_ASSIGN_OR_RETURN(UcpMem mem,
                          internal::MapMemory(r->context_.get(), base, bytes));
    DUET_ASSIGN_OR_RETURN(std::string rkey,
                          internal::PackRkey(r->context_.get(), mem.get()));
    r->mem_.push_back(std::move(mem));
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
    uint64_t key, std::span<const int32_t> block_ids) {
  // Ids are checked where they are minted, and the descriptor carries the
  // size they were checked against, so the sender can check them again.
  DUET_RETURN_IF_ERROR(internal::ValidateDescribeIds(
      block_ids, pool_.num_blocks, "the UCX pool"));
  if (staged()) return DescribeStaged(key, block_ids);
  DUET_RETURN_IF_ERROR(direct_keys_.Add(key));
  KvDescriptor d;
  d.transport = Transport::kUcx;
  d.layout = pool_.layout;
  d.block_ids.assign(block_ids.begin(), block_ids.end());
  d.num_blocks = pool_.num_blocks;
  d.ucx_worker_address = worker_address_;
  d.ucx_rkeys = rkeys_;
  d.remote_layer_base.reserve(pool_.layer_base.size());
  for (void* base : pool_.layer_base) {
    d.remote_layer_base.push_back(reinterpret_cast<uint64_t>(base));
  }
  return d;
}

// The descriptor of a staged request addresses only its own run of n
// slots, as a pool of n blocks per layer (layer l at run + l * n blocks),
// with logical block i at staging block i: a sender that stays inside the
// descriptor cannot touch another request's staging, and the run is the
// [layer][i] buffer ScatterKvBlocks reads.
absl::StatusOr<KvDescriptor> UcxReceiver::DescribeStaged(
    uint64_t key, std::span<const int32_t> block_ids) {
  const int32_t n = static_cast<int32_t>(block_ids.size());
  if (n == 0) {
    return absl::InvalidArgumentError(
        "UCX receiver: a staged request needs at least one block");
  }
  int32_t first = 0;
  {
    absl::MutexLock lock(&mu_);
    if (staged_keys_.contains(key)) {
      return absl::AlreadyExistsError(
          absl::StrCat("KV key ", key, " is already described"));
    }
    DUET_ASSIGN_OR_RETURN(first, slots_.Allocate(n, absl::Now()));
    staged_keys_.emplace(
        key, Staged{std::vector<int32_t>(block_ids.begin(), block_ids.end()),
                    first});
  }
  const int64_t block_bytes = pool_.layout.block_bytes();
  KvDescriptor d;
  d.transport = Transport::kUcx;
  d.layout = pool_.layout;
  d.block_ids.resize(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) d.block_ids[static_cast<size_t>(i)] = i;
  d.num_blocks = n;
  d.ucx_worker_address = worker_address_;
  // One registration covers every layer's part of the run.
  d.ucx_rkeys.assign(static_cast<size_t>(pool_.layout.num_layers), rkeys_[0]);
  for (int32_t l = 0; l < pool_.layout.num_layers; ++l) {
    d.remote_layer_base.push_back(reinterpret_cast<uint64_t>(
        SlotsBase(first) + int64_t{l} * n * block_bytes));
  }
  return d;
}

absl::Status UcxReceiver::Land(uint64_t key) {
  if (!staged()) return direct_keys_.Land(key);
  Staged entry;
  {
    absl::MutexLock lock(&mu_);
    auto it = staged_keys_.find(key);
    if (it == staged_keys_.end()) {
      return absl::NotFoundError(
          absl::StrCat("KV key ", key,
                       " was never described, or already landed or "
                       "dropped"));
    }
    entry = std::move(it->second);
    staged_keys_.erase(it);
  }
  const int32_t n = static_cast<int32_t>(entry.block_ids.size());
  // Outside the lock: Describe and Drop of other keys go on meanwhile, and
  // nobody else can reach these slots now that the key is gone.
  absl::Status s =
      backend_->ScatterKvBlocks(SlotsBase(entry.first_slot), n * slot_bytes_,
                                entry.block_ids, internal::ToBlockPool(pool_));
  absl::MutexLock lock(&mu_);
  // The sender finished (that is why we land), so nothing more arrives:
  // the slots are free at once, whether the scatter worked or not.
  slots_.Free(entry.first_slot, n);
  return s;
}

void UcxReceiver::Drop(uint64_t key) { Forget(key, /*quarantine=*/true); }

void UcxReceiver::Discard(uint64_t key) { Forget(key, /*quarantine=*/false); }

void UcxReceiver::Forget(uint64_t key, bool quarantine) {
  if (!staged()) {
    direct_keys_.Drop(key);
    return;
  }
  absl::MutexLock lock(&mu_);
  auto it = staged_keys_.find(key);
  if (it == staged_keys_.end()) return;
  const int32_t n = static_cast<int32_t>(it->second.block_ids.size());
  if (quarantine) {
    slots_.Quarantine(it->second.first_slot, n, absl::Now());
  } else {
    slots_.Free(it->second.first_slot, n);
  }
  staged_keys_.erase(it);
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvReceiver>> MakeUcxReceiver(
    const KvPoolView& pool, const UcxOptions& options,
    kernels::Backend* backend) {
  return UcxReceiver::Create(pool, options, backend);
}

}  // namespace duet::kv_transfer
