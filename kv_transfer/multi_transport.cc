#include "kv_transfer/multi_transport.h"

#include <algorithm>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace duet::kv_transfer {
namespace {

template <typename T>
absl::Status CheckParts(const std::vector<std::pair<Transport, T>>& parts,
                        absl::string_view what) {
  if (parts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no KV ", what));
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].second == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("null KV ", what));
    }
    for (size_t j = 0; j < i; ++j) {
      if (parts[j].first == parts[i].first) {
        return absl::InvalidArgumentError(absl::StrCat(
            "two KV ", what, "s for ", TransportName(parts[i].first)));
      }
    }
  }
  return absl::OkStatus();
}

class MultiReceiver final : public KvReceiver {
 public:
  explicit MultiReceiver(
      std::vector<std::pair<Transport, std::unique_ptr<KvReceiver>>> parts)
      : parts_(std::move(parts)) {}

  absl::StatusOr<KvDescriptor> Describe(
      uint64_t key, std::span<const int32_t> block_ids) override {
    return DescribeFor(parts_.front().first, key, block_ids);
  }

  absl::StatusOr<KvDescriptor> DescribeFor(
      Transport transport, uint64_t key,
      std::span<const int32_t> block_ids) override {
    for (auto& [t, receiver] : parts_) {
      if (t != transport) continue;
      {
        absl::MutexLock lock(&mu_);
        if (!owner_.emplace(key, receiver.get()).second) {
          return absl::AlreadyExistsError(
              absl::StrCat("request ", key, " is already described"));
        }
      }
      absl::StatusOr<KvDescriptor> d = receiver->Describe(key, block_ids);
      if (!d.ok()) {
        absl::MutexLock lock(&mu_);
        owner_.erase(key);
      }
      return d;
    }
    std::string have;
    for (const auto& [t, r] : parts_) {
      absl::StrAppend(&have, have.empty() ? "" : ", ", TransportName(t));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("this decode node receives KV over ", have, ", not ",
                     TransportName(transport)));
  }

  absl::Status Land(uint64_t key) override {
    KvReceiver* r = Take(key);
    if (r == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("no KV described for request ", key));
    }
    return r->Land(key);
  }
  void Drop(uint64_t key) override {
    if (KvReceiver* r = Take(key)) r->Drop(key);
  }
  void Discard(uint64_t key) override {
    if (KvReceiver* r = Take(key)) r->Discard(key);
  }
  int32_t max_blocks_per_request() const override {
    int32_t n = INT32_MAX;
    for (const auto& [t, r] : parts_) {
      n = std::min(n, r->max_blocks_per_request());
    }
    return n;
  }

 private:
  KvReceiver* Take(uint64_t key) {
    absl::MutexLock lock(&mu_);
    auto it = owner_.find(key);
    if (it == owner_.end()) return nullptr;
    KvReceiver* r = it->second;
    owner_.erase(it);
    return r;
  }

  const std::vector<std::pair<Transport, std::unique_ptr<KvReceiver>>> parts_;
  absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, KvReceiver*> owner_ ABSL_GUARDED_BY(mu_);
};

class MultiSender final : public KvSender {
 public:
  explicit MultiSender(
      std::vector<std::pair<Transport, std::unique_ptr<KvSender>>> parts)
      : parts_(std::move(parts)) {}

  absl::Status SendLayers(const KvDescriptor& dest,
                          std::span<const BlockCopy> copies, LayerRange layers,
                          std::shared_ptr<const kernels::StreamMark> ready,
                          absl::Duration timeout) override {
    for (auto& [t, sender] : parts_) {
      if (t == dest.transport) {
        return sender->SendLayers(dest, copies, layers, std::move(ready),
                                  timeout);
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat("this prefill node cannot send KV over ",
                     TransportName(dest.transport)));
  }

  absl::Status SendSlice(const KvDescriptor& dest,
                         std::span<const BlockCopy> copies, LayerRange layers,
                         const TransferSlice& slice,
                         std::shared_ptr<const kernels::StreamMark> ready,
                         absl::Duration timeout) override {
    for (auto& [t, sender] : parts_) {
      if (t == dest.transport) {
        return sender->SendSlice(dest, copies, layers, slice, std::move(ready),
                                 timeout);
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat("this prefill node cannot send KV over ",
                     TransportName(dest.transport)));
  }

 private:
  const std::vector<std::pair<Transport, std::unique_ptr<KvSender>>> parts_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvReceiver>> MakeMultiReceiver(
    std::vector<std::pair<Transport, std::unique_ptr<KvReceiver>>> receivers) {
  if (absl::Status s = CheckParts(receivers, "receiver"); !s.ok()) return s;
  return std::make_unique<MultiReceiver>(std::move(receivers));
}

absl::StatusOr<std::unique_ptr<KvSender>> MakeMultiSender(
    std::vector<std::pair<Transport, std::unique_ptr<KvSender>>> senders) {
  if (absl::Status s = CheckParts(senders, "sender"); !s.ok()) return s;
  return std::make_unique<MultiSender>(std::move(senders));
}

}  // namespace duet::kv_transfer
