#include "kv_transfer/in_process.h"

#include <cstring>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kv_transfer/copy_plan.h"

namespace duet::kv_transfer {
namespace {

// One registered pool. Its own reader/writer lock lets Sends copy
// concurrently without holding the registry lock, while the receiver's
// destructor (writer) waits until no Send is inside the pool.
struct Slot {
  explicit Slot(const KvPoolView& p) : pool(p) {}
  absl::Mutex mu;
  bool alive ABSL_GUARDED_BY(mu) = true;
  const KvPoolView pool;
};

absl::Status CheckHostPool(const KvPoolView& pool, absl::string_view what) {
  if (absl::Status s = internal::ValidatePool(pool, what); !s.ok()) return s;
  if (pool.device != Device::kCpu) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": the in-process transport copies host memory only"));
  }
  return absl::OkStatus();
}

}  // namespace

struct InProcessRegistry::State {
  mutable absl::Mutex mu;
  absl::flat_hash_map<std::string, std::shared_ptr<Slot>> slots
      ABSL_GUARDED_BY(mu);

  std::shared_ptr<Slot> Find(const std::string& name) const {
    absl::ReaderMutexLock lock(&mu);
    auto it = slots.find(name);
    return it == slots.end() ? nullptr : it->second;
  }
};

InProcessRegistry::InProcessRegistry() : state_(std::make_shared<State>()) {}
InProcessRegistry::~InProcessRegistry() = default;

bool InProcessRegistry::Contains(const std::string& name) const {
  return state_->Find(name) != nullptr;
}

namespace {

class InProcessReceiver final : public KvReceiver {
 public:
  InProcessReceiver(std::shared_ptr<InProcessRegistry::State> state,
                    std::string name, std::shared_ptr<Slot> slot)
      : state_(std::move(state)),
        name_(std::move(name)),
        slot_(std::move(slot)) {}

  ~InProcessReceiver() override {
    {
      absl::MutexLock lock(&state_->mu);
      state_->slots.erase(name_);
    }
    // A Send that found the slot before the erase may still be copying.
    absl::MutexLock lock(&slot_->mu);
    slot_->alive = false;
  }

  absl::StatusOr<KvDescriptor> Describe(
      uint64_t key, std::span<const int32_t> block_ids) override {
    if (absl::Status s =
            internal::ValidateDescribeIds(block_ids, slot_->pool.num_blocks,
                                          absl::StrCat("pool '", name_, "'"));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = keys_.Add(key); !s.ok()) return s;
    KvDescriptor d;
    d.transport = Transport::kInProcess;
    d.layout = slot_->pool.layout;
    d.block_ids.assign(block_ids.begin(), block_ids.end());
    d.num_blocks = slot_->pool.num_blocks;
    d.endpoint_name = name_;
    return d;
  }

  // Senders write the pool itself: nothing to land.
  absl::Status Land(uint64_t key) override { return keys_.Land(key); }
  void Drop(uint64_t key) override { keys_.Drop(key); }

 private:
  const std::shared_ptr<InProcessRegistry::State> state_;
  const std::string name_;
  const std::shared_ptr<Slot> slot_;
  internal::DescribedKeys keys_;
};

class InProcessSender final : public KvSender {
 public:
  InProcessSender(std::shared_ptr<InProcessRegistry::State> state,
                  const KvPoolView& local)
      : state_(std::move(state)), local_(local) {}

  absl::Status SendLayers(const KvDescriptor& dest,
                          std::span<const BlockCopy> copies, LayerRange layers,
                          std::shared_ptr<const kernels::StreamMark> ready,
                          absl::Duration timeout) override {
    return Send(dest, copies, layers, nullptr, std::move(ready), timeout);
  }

  absl::Status SendSlice(const KvDescriptor& dest,
                         std::span<const BlockCopy> copies, LayerRange layers,
                         const TransferSlice& slice,
                         std::shared_ptr<const kernels::StreamMark> ready,
                         absl::Duration timeout) override {
    return Send(dest, copies, layers, &slice, std::move(ready), timeout);
  }

 private:
  // Whole blocks, or `slice` of each block when set.
  absl::Status Send(const KvDescriptor& dest,
                    std::span<const BlockCopy> copies, LayerRange layers,
                    const TransferSlice* slice,
                    std::shared_ptr<const kernels::StreamMark> ready,
                    absl::Duration timeout) {
    if (absl::Status s = CheckHostPool(local_, "local KV pool"); !s.ok()) {
      return s;
    }
    if (absl::Status s =
            slice == nullptr
                ? internal::ValidateSend(local_, dest, copies,
                                         Transport::kInProcess)
                : internal::ValidateSliceSend(local_, dest, copies,
                                              Transport::kInProcess, *slice);
        !s.ok()) {
      return s;
    }
    absl::StatusOr<std::pair<int32_t, int32_t>> range =
        internal::ResolveLayers(local_.layout, layers);
    if (!range.ok()) return range.status();
    if (timeout <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "KV transfer to '", dest.endpoint_name, "' given no time (timeout ",
          absl::FormatDuration(timeout), ")"));
    }
    if (ready != nullptr) {
      if (absl::Status s = ready->Wait(absl::Now() + timeout); !s.ok()) {
        return s;
      }
    }
    std::shared_ptr<Slot> slot = state_->Find(dest.endpoint_name);
    if (slot == nullptr) {
      return absl::UnavailableError(absl::StrCat(
          "no in-process KV receiver named '", dest.endpoint_name, "'"));
    }
    absl::ReaderMutexLock lock(&slot->mu);
    if (!slot->alive) {
      return absl::UnavailableError(absl::StrCat(
          "in-process KV receiver '", dest.endpoint_name, "' was destroyed"));
    }
    const KvPoolView& remote = slot->pool;
    // The descriptor could be stale or forged: check it against the pool it
    // names, not only against the local one.
    if (absl::Status s = CheckSameLayout(remote.layout, dest.layout); !s.ok()) {
      return s;
    }
    // ValidateSend kept every id below dest.num_blocks.
    if (dest.num_blocks != remote.num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "descriptor says receiver '", dest.endpoint_name, "' has ",
          dest.num_blocks, " blocks, it has ", remote.num_blocks));
    }
    const int64_t block_bytes = local_.layout.block_bytes();
    const int64_t dest_block_bytes = remote.layout.block_bytes();
    for (const internal::CopyRun& run : internal::PlanCopyRuns(dest, copies)) {
      for (int32_t l = range->first; l < range->second; ++l) {
        const auto* src = static_cast<const char*>(local_.layer_base[l]);
        auto* dst = static_cast<char*>(remote.layer_base[l]);
        if (slice == nullptr) {
          std::memcpy(dst + run.dst_block * block_bytes,
                      src + run.src_block * block_bytes,
                      static_cast<size_t>(run.num_blocks * block_bytes));
          continue;
        }
        for (int32_t b = 0; b < run.num_blocks; ++b) {
          for (int kv = 0; kv < 2; ++kv) {
            std::memcpy(dst + (run.dst_block + b) * dest_block_bytes +
                            slice->dst_offset[kv],
                        src + (run.src_block + b) * block_bytes +
                            slice->src_offset[kv],
                        static_cast<size_t>(slice->bytes));
          }
        }
      }
    }
    return absl::OkStatus();
  }

  const std::shared_ptr<InProcessRegistry::State> state_;
  const KvPoolView local_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvReceiver>> MakeInProcessReceiver(
    InProcessRegistry& registry, std::string name, const KvPoolView& pool) {
  if (absl::Status s =
          CheckHostPool(pool, absl::StrCat("KV pool '", name, "'"));
      !s.ok()) {
    return s;
  }
  auto slot = std::make_shared<Slot>(pool);
  {
    absl::MutexLock lock(&registry.state_->mu);
    auto [it, inserted] = registry.state_->slots.emplace(name, slot);
    if (!inserted) {
      return absl::AlreadyExistsError(absl::StrCat(
          "an in-process KV receiver named '", name, "' already exists"));
    }
  }
  return std::make_unique<InProcessReceiver>(registry.state_, std::move(name),
                                             std::move(slot));
}

std::unique_ptr<KvSender> MakeInProcessSender(InProcessRegistry& registry,
                                              const KvPoolView& local) {
  return std::make_unique<InProcessSender>(registry.state_, local);
}

}  // namespace duet::kv_transfer
