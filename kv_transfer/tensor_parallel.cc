#include "kv_transfer/tensor_parallel.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kv_transfer/transfer_plan.h"

namespace duet::kv_transfer {
namespace {

class TensorParallelSender final : public KvSender {
 public:
  TensorParallelSender(std::vector<std::unique_ptr<KvSender>> ranks,
                       const KvLayout& layout)
      : ranks_(std::move(ranks)), layout_(layout) {}

  absl::Status SendLayers(const KvDescriptor& dest,
                          std::span<const BlockCopy> copies, LayerRange layers,
                          std::shared_ptr<const kernels::StreamMark> ready,
                          absl::Duration timeout) override {
    const int32_t dest_ranks =
        dest.ranks.empty() ? 1 : static_cast<int32_t>(dest.ranks.size());
    if (dest.layout.tp_size != dest_ranks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KV descriptor of tensor-parallel size ", dest.layout.tp_size,
          " has ", dest_ranks, " rank endpoints"));
    }
    absl::StatusOr<TransferPlan> plan = MakeTransferPlan(layout_, dest.layout);
    if (!plan.ok()) return plan.status();
    const bool whole_blocks = layout_.tp_size == dest.layout.tp_size;
    const absl::Time deadline = absl::Now() + timeout;
    // One slice after another: on host pools each is a memcpy or a UCX put
    // burst; GPU ranks would want their own threads (future work).
    for (const TransferSlice& slice : plan->slices) {
      const KvDescriptor& to = DescriptorForRank(dest, slice.dst_rank);
      if (to.layout.tp_rank != slice.dst_rank ||
          to.layout.tp_size != dest.layout.tp_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "KV descriptor rank endpoint ", slice.dst_rank, " says it is rank ",
            to.layout.tp_rank, " of ", to.layout.tp_size));
      }
      KvSender& from = *ranks_[static_cast<size_t>(slice.src_rank)];
      const absl::Duration left = deadline - absl::Now();
      absl::Status s =
          whole_blocks
              ? from.SendLayers(to, copies, layers, ready, left)
              : from.SendSlice(to, copies, layers, slice, ready, left);
      if (!s.ok()) {
        return absl::Status(
            s.code(), absl::StrCat("KV from rank ", slice.src_rank,
                                   " to rank ", slice.dst_rank, ": ",
                                   s.message()));
      }
    }
    return absl::OkStatus();
  }

 private:
  const std::vector<std::unique_ptr<KvSender>> ranks_;
  const KvLayout layout_;
};

class TensorParallelReceiver final : public KvReceiver {
 public:
  explicit TensorParallelReceiver(
      std::vector<std::unique_ptr<KvReceiver>> ranks)
      : ranks_(std::move(ranks)) {}

  absl::StatusOr<KvDescriptor> Describe(
      uint64_t key, std::span<const int32_t> block_ids) override {
    return Merge(key, [&](KvReceiver& r) { return r.Describe(key, block_ids); });
  }

  absl::StatusOr<KvDescriptor> DescribeFor(
      Transport transport, uint64_t key,
      std::span<const int32_t> block_ids) override {
    return Merge(key, [&](KvReceiver& r) {
      return r.DescribeFor(transport, key, block_ids);
    });
  }

  absl::Status Land(uint64_t key) override {
    absl::Status first;
    for (auto& r : ranks_) {
      absl::Status s = r->Land(key);
      if (first.ok()) first = s;
    }
    return first;
  }

  void Drop(uint64_t key) override {
    for (auto& r : ranks_) r->Drop(key);
  }

  void Discard(uint64_t key) override {
    for (auto& r : ranks_) r->Discard(key);
  }

  int32_t max_blocks_per_request() const override {
    int32_t most = INT32_MAX;
    for (const auto& r : ranks_) {
      most = std::min(most, r->max_blocks_per_request());
    }
    return most;
  }

 private:
  template <typename DescribeOne>
  absl::StatusOr<KvDescriptor> Merge(uint64_t key, const DescribeOne& one) {
    KvDescriptor merged;
    for (size_t r = 0; r < ranks_.size(); ++r) {
      absl::StatusOr<KvDescriptor> d = one(*ranks_[r]);
      absl::Status s = d.status();
      if (s.ok() && r > 0 &&
          (d->block_ids != merged.block_ids ||
           d->num_blocks != merged.num_blocks ||
           d->transport != merged.transport)) {
        // Every rank's pool (or staging) hands out the same ids for the
        // same sequence of calls; anything else would scatter one rank's
        // heads into another request's blocks.
        s = absl::InternalError(absl::StrCat(
            "KV receiver rank ", r, " described other blocks than rank 0"));
        ranks_[r]->Discard(key);
      }
      if (!s.ok()) {
        for (size_t q = 0; q < r; ++q) ranks_[q]->Discard(key);
        return s;
      }
      if (r == 0) {
        merged = *d;
        merged.layout.tp_rank = 0;
      }
      merged.ranks.push_back(*std::move(d));
    }
    return merged;
  }

  const std::vector<std::unique_ptr<KvReceiver>> ranks_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvSender>> MakeTensorParallelSender(
    std::vector<std::unique_ptr<KvSender>> ranks, const KvLayout& layout) {
  if (ranks.empty() || static_cast<int32_t>(ranks.size()) != layout.tp_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor-parallel KV sender: ", ranks.size(), " rank senders for TP ",
        layout.tp_size));
  }
  return std::make_unique<TensorParallelSender>(std::move(ranks), layout);
}

absl::StatusOr<std::unique_ptr<KvReceiver>> MakeTensorParallelReceiver(
    std::vector<std::unique_ptr<KvReceiver>> ranks) {
  if (ranks.empty()) {
    return absl::InvalidArgumentError("tensor-parallel KV receiver: no ranks");
  }
  if (ranks.size() == 1) return std::move(ranks[0]);
  return std::make_unique<TensorParallelReceiver>(std::move(ranks));
}

}  // namespace duet::kv_transfer
