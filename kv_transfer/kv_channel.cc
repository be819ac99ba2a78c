#include "kv_transfer/kv_channel.h"

#include <algorithm>
#include <future>
#include <random>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status.h"
#include "kv_transfer/copy_plan.h"

namespace duet::kv_transfer {
namespace {

std::string RandomBytes(size_t n) {
  // std::random_device reads the kernel's CSPRNG on Linux (libstdc++).
  std::random_device rd;
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(rd() & 0xff);
  return out;
}

uint64_t RandomU64() {
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}

kernels::KvBlockPool PoolOf(const KvPoolView& v) {
  kernels::KvBlockPool p;
  p.layer_base = v.layer_base;
  p.num_blocks = v.num_blocks;
  p.block_bytes = v.layout.block_bytes();
  p.device = v.device;
  return p;
}

// `buf` seen as a pool of `n` blocks per layer, layers one after another:
// the [layer][i][block] message layout.
kernels::KvBlockPool PackedPool(void* buf, int32_t layers, int32_t n,
                                int64_t block_bytes, Device device) {
  kernels::KvBlockPool p;
  p.num_blocks = n;
  p.block_bytes = block_bytes;
  p.device = device;
  for (int32_t l = 0; l < layers; ++l) {
    p.layer_base.push_back(static_cast<char*>(buf) + l * n * block_bytes);
  }
  return p;
}

// Messages are whole numbers of 4-byte words (every KV block is), so the
// communicator sees them as f32 tensors.
TensorView MessageView(void* buf, int64_t bytes, Device device) {
  return TensorView{buf, DType::kF32, Shape{bytes / 4}, device};
}

// Device memory of the pool's backend for one message.
absl::StatusOr<kernels::Tensor> AllocateBuffer(kernels::Backend& backend,
                                               const KvChannelOptions& o) {
  Shape shape(1, o.buffer_bytes / 4);
  return backend.Allocate(DType::kF32, shape);
}

std::vector<int32_t> Iota(int32_t n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

absl::Status CheckOptions(const KvPoolView& pool, kernels::Backend* backend,
                          const CommunicatorFactory* factory,
                          const KvChannelOptions& o) {
  DUET_RETURN_IF_ERROR(internal::ValidatePool(pool, "KV channel pool"));
  if (backend == nullptr || factory == nullptr) {
    return absl::InvalidArgumentError(
        "KV channel transport needs the pool's backend and a communicator "
        "factory");
  }
  const int64_t all_layers =
      int64_t{pool.layout.num_layers} * pool.layout.block_bytes();
  if (pool.layout.block_bytes() % 4 != 0 || o.buffer_bytes < all_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV channel buffer of ", o.buffer_bytes,
                     " bytes must hold one block of every layer (", all_layers,
                     " bytes) in whole 4-byte words"));
  }
  if (o.join_timeout <= absl::ZeroDuration() || o.max_channels < 1) {
    return absl::InvalidArgumentError(
        "KV channel join_timeout and max_channels must be positive");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- receiver

class Receiver final : public KvChannelReceiver {
 public:
  Receiver(const KvPoolView& pool, kernels::Backend* backend,
           std::shared_ptr<CommunicatorFactory> factory,
           const KvChannelOptions& o)
      : pool_(pool),
        backend_(backend),
        factory_(std::move(factory)),
        options_(o),
        instance_(absl::BytesToHexString(RandomBytes(8))) {}

  absl::Status Init() {
    // Allocated here, on the thread that set the node up, never while the
    // engine may be capturing a CUDA graph.
    DUET_ASSIGN_OR_RETURN(buffer_, AllocateBuffer(*backend_, options_));
    DUET_ASSIGN_OR_RETURN(queue_, backend_->CreateKvCopyQueue());
    return absl::OkStatus();
  }

  // ---- KvReceiver
  absl::StatusOr<KvDescriptor> Describe(
      uint64_t key, std::span<const int32_t> block_ids) override {
    DUET_RETURN_IF_ERROR(internal::ValidateDescribeIds(
        block_ids, pool_.num_blocks, "KV channel receiver pool"));
    KvDescriptor d;
    d.transport = Transport::kNccl;
    d.layout = pool_.layout;
    d.block_ids.assign(block_ids.begin(), block_ids.end());
    d.num_blocks = pool_.num_blocks;
    d.endpoint_name = instance_;
    d.channel_secret = RandomBytes(kKvChannelSecretBytes);
    absl::MutexLock lock(&mu_);
    if (requests_.contains(key)) {
      return absl::AlreadyExistsError(
          absl::StrCat("KV of request ", key, " is already described"));
    }
    requests_[key] = Request{d.block_ids, d.channel_secret};
    by_secret_[d.channel_secret] = key;
    return d;
  }

  absl::Status Land(uint64_t key) override {
    absl::MutexLock lock(&mu_);
    if (!requests_.contains(key)) {
      return absl::NotFoundError(
          absl::StrCat("no KV described for request ", key));
    }
    ForgetLocked(key);
    return absl::OkStatus();
  }

  void Drop(uint64_t key) override {
    absl::MutexLock lock(&mu_);
    ForgetLocked(key);
  }

  // ---- KvChannelServer
  absl::StatusOr<KvChannelGrant> Open(int32_t sender_rank) override {
    auto ch = std::make_shared<Channel>();
    ch->sender_rank = sender_rank;
    DUET_ASSIGN_OR_RETURN(ch->communicator_id, factory_->NewId());
    {
      absl::MutexLock lock(&mu_);
      if (channels_.size() >= static_cast<size_t>(options_.max_channels) &&
          !EvictIdleLocked()) {
        return absl::ResourceExhaustedError(
            absl::StrCat("KV channel receiver keeps ", options_.max_channels,
                         " channels, all busy; retry later"));
      }
      do {
        ch->id = RandomU64();
      } while (ch->id == 0 || channels_.contains(ch->id));
      channels_[ch->id] = ch;
    }
    // Joining blocks until the sender joins; a detached thread owns a
    // reference, so a sender that never comes costs one timeout, not a
    // receiver that cannot shut down.
    std::thread([ch, factory = factory_, timeout = options_.join_timeout] {
      absl::StatusOr<std::unique_ptr<kernels::Communicator>> comm =
          factory->Join(ch->communicator_id, 1, timeout);
      absl::MutexLock lock(&ch->mu);
      if (comm.ok()) {
        ch->comm = std::move(*comm);
        if (ch->closed) ch->comm->Abort();
      } else {
        ch->join_status = comm.status();
      }
      ch->joined = true;
    }).detach();
    return KvChannelGrant{ch->id, ch->communicator_id, options_.buffer_bytes};
  }

  absl::Status Push(const KvChannelPush& push, absl::Time deadline) override {
    std::shared_ptr<Channel> ch;
    {
      absl::MutexLock lock(&mu_);
      auto it = channels_.find(push.channel_id);
      if (it == channels_.end()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "KV channel ", push.channel_id,
            " is not open on this decode node (closed after an error, "
            "evicted, or opened before a restart): open a new one"));
      }
      ch = it->second;
    }
    absl::Status s = PushOn(*ch, push, deadline);
    if (!s.ok()) Close(ch);
    return s;
  }

 private:
  struct Request {
    std::vector<int32_t> ids;
    std::string secret;
    bool scattering = false;
  };
  struct Channel {
    uint64_t id = 0;
    int32_t sender_rank = 0;
    std::string communicator_id;
    absl::Mutex mu;
    bool joined ABSL_GUARDED_BY(mu) = false;
    bool busy ABSL_GUARDED_BY(mu) = false;
    bool closed ABSL_GUARDED_BY(mu) = false;
    absl::Status join_status ABSL_GUARDED_BY(mu);
    std::unique_ptr<kernels::Communicator> comm ABSL_GUARDED_BY(mu);
    uint64_t next_seq ABSL_GUARDED_BY(mu) = 0;
    absl::Time last_used ABSL_GUARDED_BY(mu) = absl::Now();
  };

  void ForgetLocked(uint64_t key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = requests_.find(key);
    if (it == requests_.end()) return;
    // A scatter into the request's blocks is one device copy: wait it out
    // so the blocks are never handed on while it may still write them.
    mu_.Await(absl::Condition(
        +[](bool* b) { return !*b; }, &it->second.scattering));
    by_secret_.erase(it->second.secret);
    requests_.erase(it);
  }

  bool EvictIdleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::shared_ptr<Channel> oldest;
    absl::Time oldest_use = absl::InfiniteFuture();
    for (auto& [id, ch] : channels_) {
      absl::MutexLock lock(&ch->mu);
      if (!ch->busy && ch->joined && ch->last_used < oldest_use) {
        oldest = ch;
        oldest_use = ch->last_used;
      }
    }
    if (oldest == nullptr) return false;
    channels_.erase(oldest->id);
    CloseChannel(*oldest);
    return true;
  }

  static void CloseChannel(Channel& ch) {
    absl::MutexLock lock(&ch.mu);
    ch.closed = true;
    if (ch.comm != nullptr) ch.comm->Abort();
  }

  void Close(const std::shared_ptr<Channel>& ch) {
    {
      absl::MutexLock lock(&mu_);
      channels_.erase(ch->id);
    }
    CloseChannel(*ch);
  }

  absl::Status PushOn(Channel& ch, const KvChannelPush& push,
                      absl::Time deadline) {
    // One message at a time per channel: NCCL matches a pair's sends and
    // receives in the order they were issued.
    kernels::Communicator* comm = nullptr;
    {
      ch.mu.LockWhenWithDeadline(
          absl::Condition(
              +[](Channel* c) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                return c->closed || (c->joined && !c->busy);
              },
              &ch),
          deadline);
      absl::Cleanup unlock = [&] { ch.mu.Unlock(); };
      if (ch.closed) {
        return absl::FailedPreconditionError(
            absl::StrCat("KV channel ", ch.id, " closed: open a new one"));
      }
      if (!ch.joined || ch.busy) {
        return absl::DeadlineExceededError(absl::StrCat(
            "KV channel ", ch.id, ": not ready before the push's deadline"));
      }
      if (ch.comm == nullptr) {
        return absl::UnavailableError(
            absl::StrCat("KV channel ", ch.id, ": the sender never joined (",
                         ch.join_status.message(), ")"));
      }
      if (push.seq != ch.next_seq) {
        return absl::FailedPreconditionError(
            absl::StrCat("KV channel ", ch.id, ": push ", push.seq,
                         " out of order (expected ", ch.next_seq, ")"));
      }
      ch.busy = true;
      comm = ch.comm.get();
    }
    absl::Status s = Receive(*comm, push, deadline);
    absl::MutexLock lock(&ch.mu);
    ch.busy = false;
    ch.last_used = absl::Now();
    if (s.ok()) ++ch.next_seq;
    return s;
  }

  // Checks the header against the request's reservation; on success the
  // destination blocks, in message order, and the request's key.
  absl::StatusOr<std::vector<int32_t>> Destinations(const KvChannelPush& p,
                                                    uint64_t* key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // A 128-bit random secret: finding one by probing is hopeless, so a
    // hash lookup's timing gives nothing away.
    auto found = by_secret_.find(p.secret);
    if (p.secret.size() != kKvChannelSecretBytes || found == by_secret_.end()) {
      return absl::UnauthenticatedError(
          "KV push carries no secret of a reservation on this decode node "
          "(released, expired, or never described)");
    }
    *key = found->second;
    const Request& r = requests_.at(*key);
    if (p.layer_begin < 0 || p.layer_begin >= p.layer_end ||
        p.layer_end > pool_.layout.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV push: layers [", p.layer_begin, ", ", p.layer_end,
                       ") outside the model's ", pool_.layout.num_layers));
    }
    std::vector<int32_t> dst;
    std::vector<bool> seen(r.ids.size(), false);
    for (int32_t i : p.logical_blocks) {
      if (i < 0 || static_cast<size_t>(i) >= r.ids.size() ||
          seen[static_cast<size_t>(i)]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "KV push: logical block ", i, " is outside the reservation's ",
            r.ids.size(), " blocks or listed twice"));
      }
      seen[static_cast<size_t>(i)] = true;
      dst.push_back(r.ids[static_cast<size_t>(i)]);
    }
    const int64_t want = int64_t{p.layer_end - p.layer_begin} *
                         static_cast<int64_t>(dst.size()) *
                         pool_.layout.block_bytes();
    if (dst.empty() || p.bytes != want || want > options_.buffer_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KV push of ", p.bytes, " bytes for ", dst.size(), " blocks x ",
          p.layer_end - p.layer_begin, " layers (", want, " expected, at most ",
          options_.buffer_bytes, ")"));
    }
    return dst;
  }

  absl::Status Receive(kernels::Communicator& comm, const KvChannelPush& push,
                       absl::Time deadline) {
    std::vector<int32_t> dst;
    uint64_t key = 0;
    {
      absl::MutexLock lock(&mu_);
      DUET_ASSIGN_OR_RETURN(dst, Destinations(push, &key));
    }
    // One message in the receive buffer at a time (one buffer per rank).
    absl::MutexLock buffer_lock(&buffer_mu_);
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError("KV push: deadline passed");
    }
    DUET_RETURN_IF_ERROR(comm.Recv(
        MessageView(buffer_.view().data, push.bytes, pool_.device), 0));
    DUET_RETURN_IF_ERROR(comm.Wait(left));
    {
      absl::MutexLock lock(&mu_);
      auto it = requests_.find(key);
      if (it == requests_.end() || it->second.secret != push.secret) {
        return absl::NotFoundError(absl::StrCat(
            "request ", key, " was released during its KV transfer"));
      }
      it->second.scattering = true;
    }
    const int32_t layers = push.layer_end - push.layer_begin;
    const int32_t n = static_cast<int32_t>(dst.size());
    absl::Status s = queue_->Copy(
        PackedPool(buffer_.view().data, layers, n, pool_.layout.block_bytes(),
                   pool_.device),
        Iota(n),
        internal::LayerSlice(PoolOf(pool_), push.layer_begin, push.layer_end),
        dst, deadline);
    absl::MutexLock lock(&mu_);
    auto it = requests_.find(key);
    if (it != requests_.end()) it->second.scattering = false;
    return s;
  }

  const KvPoolView pool_;
  kernels::Backend* const backend_;
  const std::shared_ptr<CommunicatorFactory> factory_;
  const KvChannelOptions options_;
  const std::string instance_;
  absl::Mutex buffer_mu_;
  kernels::Tensor buffer_;
  std::unique_ptr<kernels::KvCopyQueue> queue_;
  absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Request> requests_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint64_t> by_secret_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::shared_ptr<Channel>> channels_
      ABSL_GUARDED_BY(mu_);
};

// ------------------------------------------------------------------ sender

class Sender final : public KvSender {
 public:
  Sender(const KvPoolView& pool, kernels::Backend* backend, int32_t rank,
         std::shared_ptr<CommunicatorFactory> factory,
         std::shared_ptr<KvChannelClient> client, const KvChannelOptions& o)
      : pool_(pool),
        backend_(backend),
        rank_(rank),
        factory_(std::move(factory)),
        client_(std::move(client)),
        options_(o) {}

  absl::Status Init() {
    DUET_ASSIGN_OR_RETURN(buffer_, AllocateBuffer(*backend_, options_));
    DUET_ASSIGN_OR_RETURN(queue_, backend_->CreateKvCopyQueue());
    return absl::OkStatus();
  }

  absl::Status SendLayers(const KvDescriptor& dest,
                          std::span<const BlockCopy> copies, LayerRange layers,
                          std::shared_ptr<const kernels::StreamMark> ready,
                          absl::Duration timeout) override {
    DUET_RETURN_IF_ERROR(
        internal::ValidateSend(pool_, dest, copies, Transport::kNccl));
    DUET_ASSIGN_OR_RETURN(const auto range,
                          internal::ResolveLayers(pool_.layout, layers));
    if (dest.control_address.empty() || dest.endpoint_name.empty()) {
      return absl::InvalidArgumentError(
          "NCCL KV descriptor without the decode node's address or pool id");
    }
    if (timeout <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          "KV transfer given no time (its deadline passed)");
    }
    if (copies.empty()) return absl::OkStatus();
    const absl::Time deadline = absl::Now() + timeout;
    // One send buffer and copy queue: sends are serialized (the
    // asynchronous sender drives them from one thread anyway).
    absl::MutexLock lock(&mu_);
    if (ready != nullptr) DUET_RETURN_IF_ERROR(queue_->After(std::move(ready)));
    const std::string key =
        absl::StrCat(dest.control_address, "|", dest.endpoint_name, "|",
                     dest.layout.tp_rank);
    DUET_ASSIGN_OR_RETURN(Channel * ch, ChannelFor(key, dest, deadline));
    const int32_t layer_count = range.second - range.first;
    const int64_t per_block = int64_t{layer_count} * pool_.layout.block_bytes();
    const int64_t max_bytes =
        std::min(options_.buffer_bytes, ch->grant.max_message_bytes);
    const size_t per_message = static_cast<size_t>(max_bytes / per_block);
    if (per_message == 0) {
      channels_.erase(key);
      return absl::FailedPreconditionError(absl::StrCat(
          "one KV block of ", layer_count, " layers is ", per_block,
          " bytes, more than the decode node's ", max_bytes, "-byte messages"));
    }
    const kernels::KvBlockPool src =
        internal::LayerSlice(PoolOf(pool_), range.first, range.second);
    bool fresh = ch->next_seq == 0;
    for (size_t at = 0; at < copies.size(); at += per_message) {
      const auto batch =
          copies.subspan(at, std::min(per_message, copies.size() - at));
      absl::Status s = SendMessage(*ch, dest, batch, range, src, deadline);
      if (!s.ok()) {
        // A failed channel is never reused: its sequence or its
        // communicator may be out of step with the receiver's.
        ch->comm->Abort();
        channels_.erase(key);
        // A cached channel the receiver has since closed (evicted while
        // idle, or the node restarted under the same address): its first
        // message was refused before any byte moved, so one retry on a
        // new channel is safe.
        if (fresh || s.code() != absl::StatusCode::kFailedPrecondition) {
          return s;
        }
        DUET_ASSIGN_OR_RETURN(ch, ChannelFor(key, dest, deadline));
        fresh = true;
        s = SendMessage(*ch, dest, batch, range, src, deadline);
        if (!s.ok()) {
          ch->comm->Abort();
          channels_.erase(key);
          return s;
        }
      }
      fresh = true;
    }
    return absl::OkStatus();
  }

 private:
  struct Channel {
    KvChannelGrant grant;
    std::unique_ptr<kernels::Communicator> comm;
    uint64_t next_seq = 0;
  };

  absl::StatusOr<Channel*> ChannelFor(const std::string& key,
                                      const KvDescriptor& dest,
                                      absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = channels_.find(key);
    if (it != channels_.end()) return it->second.get();
    auto ch = std::make_unique<Channel>();
    DUET_ASSIGN_OR_RETURN(ch->grant, client_->Open(dest, rank_, deadline));
    if (ch->grant.communicator_id.empty() || ch->grant.max_message_bytes <= 0) {
      return absl::UnavailableError(
          "decode node granted a KV channel without a communicator id or "
          "message size");
    }
    const absl::Duration join =
        std::min(options_.join_timeout, deadline - absl::Now());
    if (join <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          "KV channel: deadline passed before joining");
    }
    DUET_ASSIGN_OR_RETURN(ch->comm,
                          factory_->Join(ch->grant.communicator_id, 0, join));
    Channel* out = ch.get();
    channels_[key] = std::move(ch);
    return out;
  }

  absl::Status SendMessage(Channel& ch, const KvDescriptor& dest,
                           std::span<const BlockCopy> batch,
                           std::pair<int32_t, int32_t> range,
                           const kernels::KvBlockPool& src, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int32_t n = static_cast<int32_t>(batch.size());
    const int32_t layers = range.second - range.first;
    KvChannelPush push;
    push.channel_id = ch.grant.channel_id;
    push.secret = dest.channel_secret;
    push.layer_begin = range.first;
    push.layer_end = range.second;
    push.bytes = int64_t{n} * layers * pool_.layout.block_bytes();
    std::vector<int32_t> src_ids;
    for (const BlockCopy& c : batch) {
      src_ids.push_back(c.src_block);
      push.logical_blocks.push_back(c.logical_block);
    }
    // Pack: one copy of n blocks x layers into [layer][i][block].
    DUET_RETURN_IF_ERROR(
        queue_->Copy(src, src_ids,
                     PackedPool(buffer_.view().data, layers, n,
                                pool_.layout.block_bytes(), pool_.device),
                     Iota(n), deadline));
    push.seq = ch.next_seq++;
    kernels::Communicator* comm = ch.comm.get();
    // The header and the bytes go together: the receiver posts its Recv
    // when the header arrives, and a refused header aborts the channel so
    // this Send does not wait for a Recv that never comes.
    std::future<absl::Status> header =
        std::async(std::launch::async, [&, comm] {
          absl::Status s = client_->Push(dest, push, deadline);
          if (!s.ok()) comm->Abort();
          return s;
        });
    absl::Status sent = comm->Send(
        MessageView(buffer_.view().data, push.bytes, pool_.device), 1);
    if (sent.ok()) sent = comm->Wait(deadline - absl::Now());
    absl::Status pushed = header.get();
    if (!pushed.ok()) return pushed;
    if (!sent.ok()) {
      return absl::Status(sent.code(),
                          absl::StrCat("KV channel send: ", sent.message()));
    }
    return absl::OkStatus();
  }

  const KvPoolView pool_;
  kernels::Backend* const backend_;
  const int32_t rank_;
  const std::shared_ptr<CommunicatorFactory> factory_;
  const std::shared_ptr<KvChannelClient> client_;
  const KvChannelOptions options_;
  absl::Mutex mu_;
  kernels::Tensor buffer_;
  std::unique_ptr<kernels::KvCopyQueue> queue_;
  absl::flat_hash_map<std::string, std::unique_ptr<Channel>> channels_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvChannelReceiver>> MakeKvChannelReceiver(
    const KvPoolView& pool, kernels::Backend* backend,
    std::shared_ptr<CommunicatorFactory> factory,
    const KvChannelOptions& options) {
  DUET_RETURN_IF_ERROR(CheckOptions(pool, backend, factory.get(), options));
  auto r =
      std::make_unique<Receiver>(pool, backend, std::move(factory), options);
  DUET_RETURN_IF_ERROR(r->Init());
  return std::unique_ptr<KvChannelReceiver>(std::move(r));
}

absl::StatusOr<std::unique_ptr<KvSender>> MakeKvChannelSender(
    const KvPoolView& pool, kernels::Backend* backend, int32_t sender_rank,
    std::shared_ptr<CommunicatorFactory> factory,
    std::shared_ptr<KvChannelClient> client, const KvChannelOptions& options) {
  DUET_RETURN_IF_ERROR(CheckOptions(pool, backend, factory.get(), options));
  if (client == nullptr) {
    return absl::InvalidArgumentError(
        "KV channel sender needs a client for the decode node's control "
        "plane");
  }
  auto s =
      std::make_unique<Sender>(pool, backend, sender_rank, std::move(factory),
                               std::move(client), options);
  DUET_RETURN_IF_ERROR(s->Init());
  return std::unique_ptr<KvSender>(std::move(s));
}

}  // namespace duet::kv_transfer
