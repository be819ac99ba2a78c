// UCX sender: one-sided puts into a receiver's registered memory, completed
// by an endpoint flush, under a deadline. The puts read the local pool
// (direct) or a staging buffer the backend gathered the blocks into
// (staged); everything after "where do the bytes come from" is one path.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "kernels/backend.h"
#include "kv_transfer/copy_plan.h"
#include "kv_transfer/ucx_context.h"
#include "kv_transfer/ucx_transport.h"

namespace duet::kv_transfer {
namespace {

using internal::UcpContext;
using internal::UcpEndpoint;
using internal::UcpMem;
using internal::UcpRkey;
using internal::UcpWorker;

// After this many progress calls in a row that found nothing to do, Send
// sleeps briefly between calls: the remaining work is then waiting on the
// peer, and spinning would take a core from the receiver's progress thread
// when both share a small host.
constexpr int kSpinsBeforeSleep = 256;
constexpr absl::Duration kIdleSleep = absl::Microseconds(20);

// An error UCX reports on the endpoint or an operation before our deadline
// means the peer is gone or unreachable: UNAVAILABLE (retry elsewhere), even
// for UCS_ERR_ENDPOINT_TIMEOUT, which is how UCX's tcp transport reports a
// refused reconnect to a dead process. DEADLINE_EXCEEDED is kept for our own
// deadline. Running out of local memory is not the peer's fault.
absl::Status TransferError(ucs_status_t status, absl::string_view what) {
  absl::Status s = internal::UcsError(status, what);
  if (s.code() == absl::StatusCode::kResourceExhausted) return s;
  return absl::UnavailableError(s.message());
}

// One cached connection to a receiver worker.
//
// UCX wants an rkey destroyed after the operations using it are done and
// before its endpoint. Between Sends nothing is in flight, so plain
// destruction (rkeys, then the endpoint) is right. A failed Send instead calls
// Abort(): the force close completes the outstanding operations (CANCELED)
// while the rkeys they reference still exist; the rkeys go afterwards (they
// hold no pointer to the endpoint in UCX 1.13).
struct Peer {
  void Abort() {
    ep.Close();
    rkeys.clear();
  }

  std::string name;
  ucs_status_t error = UCS_OK;  // set by OnEndpointError during progress
  UcpEndpoint ep;
  // Unpacked rkeys by their packed bytes. Declared after `ep` so they are
  // destroyed before the endpoint they were unpacked on.
  absl::flat_hash_map<std::string, UcpRkey> rkeys;
};

void OnEndpointError(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  static_cast<Peer*>(arg)->error = status;
}

// Book-keeping of one Send's in-flight operations. Lives on Send's stack;
// every request is freed (which stops its callbacks) before Send returns.
struct Batch;
struct Op {
  Batch* batch = nullptr;
  int64_t bytes = 0;
  void* request = nullptr;
};
struct Batch {
  int64_t pending_ops = 0;
  int64_t pending_bytes = 0;
  bool flush_pending = false;
  ucs_status_t error = UCS_OK;
  std::vector<Op> ops;  // reserved up front: callbacks hold Op pointers

  ~Batch() {
    for (Op& op : ops) {
      if (op.request != nullptr) ucp_request_free(op.request);
    }
  }
};

void OnOpDone(void* /*request*/, ucs_status_t status, void* user_data) {
  Op* op = static_cast<Op*>(user_data);
  Batch* batch = op->batch;
  --batch->pending_ops;
  batch->pending_bytes -= op->bytes;
  if (op->bytes == 0) batch->flush_pending = false;
  if (status != UCS_OK && batch->error == UCS_OK) batch->error = status;
}

// Puts from one registered source: per layer the base its runs' src_block
// index from and the memory handle covering it.
struct PutSource {
  std::vector<const char*> layer_base;
  std::vector<ucp_mem_h> memh;
};

// What one Send moves in one go. Direct: one part, the whole Send, from the
// pool. Staged: one part per staging batch; `gather` lists the pool blocks
// to gather into staging positions 0..n-1 first, and the runs' src_block
// are those positions.
struct SendPart {
  std::vector<int32_t> gather;
  std::vector<internal::CopyRun> runs;
};

class UcxSender final : public KvSender {
 public:
  static absl::StatusOr<std::unique_ptr<KvSender>> Create(
      const KvPoolView& local, const UcxOptions& options,
      kernels::Backend* backend);

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
  // Whole blocks, or `slice` of each block (two puts per block and layer:
  // the K run and the V run) when set.
  absl::Status Send(const KvDescriptor& dest, std::span<const BlockCopy> copies,
                    LayerRange layers, const TransferSlice* slice,
                    std::shared_ptr<const kernels::StreamMark> ready,
                    absl::Duration timeout);
  explicit UcxSender(const KvPoolView& local) : local_(local) {}

  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !busy_; }
  bool staged() const { return queue_ != nullptr; }
  std::vector<SendPart> PlanParts(const KvDescriptor& dest,
                                  std::span<const BlockCopy> copies) const;
  // Gathers layers [first, last) of part.gather into staging (staged) and
  // says where its runs read, per layer of the range.
  absl::StatusOr<PutSource> PrepareSource(const SendPart& part, int32_t first,
                                          int32_t last, absl::Time deadline);
  absl::Status SendExclusive(const KvDescriptor& dest,
                             std::span<const BlockCopy> copies, int32_t first,
                             int32_t last, const TransferSlice* slice,
                             std::shared_ptr<const kernels::StreamMark> ready,
                             absl::Duration timeout, absl::Time deadline);
  absl::StatusOr<Peer*> GetPeer(const std::string& address);
  absl::StatusOr<ucp_rkey_h> GetRkey(Peer& peer, const std::string& packed);

  const KvPoolView local_;
  // Staged: the backend's copy queue that gathers into staging. Null:
  // direct mode.
  std::unique_ptr<kernels::KvCopyQueue> queue_;
  UcpContext context_;
  UcpWorker worker_;
  // Staged: the staging buffer and how many blocks (of every layer) fit.
  kernels::HostBuffer staging_;
  int32_t staging_blocks_ = 0;
  // Direct: one registration per layer of the pool. Staged: one for the
  // staging buffer. Declared after staging_: unmapped before it is freed.
  std::vector<UcpMem> mem_;

  // Send holds busy_ (not mu_) while it uses the worker, so a queued Send can
  // give up at its own deadline (Mutex::AwaitWithDeadline) instead of waiting
  // out the timeouts of every Send ahead of it.
  absl::Mutex mu_;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  // Used only by the Send that set busy_. Destroyed first (closing endpoints
  // needs the worker). Keyed by the receiver's packed worker address.
  absl::flat_hash_map<std::string, std::unique_ptr<Peer>> peers_;
};

absl::StatusOr<std::unique_ptr<KvSender>> UcxSender::Create(
    const KvPoolView& local, const UcxOptions& options,
    kernels::Backend* backend) {
  if (absl::Status s = internal::ValidatePool(local, "UCX sender pool");
      !s.ok()) {
    return s;
  }
  DUET_ASSIGN_OR_RETURN(
      const bool staged,
      internal::UseStaging(local, options, backend, "UCX sender"));
  std::unique_ptr<UcxSender> s(new UcxSender(local));
  if (staged) {
    DUET_ASSIGN_OR_RETURN(s->queue_, backend->CreateKvCopyQueue());
  }
  DUET_ASSIGN_OR_RETURN(s->context_, internal::CreateContext(options));
  DUET_ASSIGN_OR_RETURN(s->worker_, internal::CreateWorker(s->context_.get()));
  // Registering once here spares UCX a registration-cache lookup (or a
  // registration) per put.
  if (staged) {
    const int64_t block_all_layers =
        int64_t{local.layout.num_layers} * local.layout.block_bytes();
    s->staging_blocks_ = static_cast<int32_t>(std::clamp<int64_t>(
        options.sender_staging_bytes / block_all_layers, 1, local.num_blocks));
    DUET_ASSIGN_OR_RETURN(
        s->staging_,
        backend->AllocateHostStaging(s->staging_blocks_ * block_all_layers));
    DUET_ASSIGN_OR_RETURN(
        UcpMem mem, internal::MapMemory(s->context_.get(), s->staging_.data(),
                                        s->staging_.size()));
    s->mem_.push_back(std::move(mem));
  } else {
    const size_t layer_bytes = static_cast<size_t>(local.num_blocks) *
                               static_cast<size_t>(local.layout.block_bytes());
    for (void* base : local.layer_base) {
      DUET_ASSIGN_OR_RETURN(UcpMem mem, internal::MapMemory(s->context_.get(),
                                                            base, layer_bytes));
      s->mem_.push_back(std::move(mem));
    }
  }
  return std::unique_ptr<KvSender>(std::move(s));
}

std::vector<SendPart> UcxSender::PlanParts(
    const KvDescriptor& dest, std::span<const BlockCopy> copies) const {
  if (!staged()) return {SendPart{{}, internal::PlanCopyRuns(dest, copies)}};
  // By destination, so consecutive destination blocks sit in consecutive
  // staging positions and one put per layer carries each run of them.
  std::vector<std::pair<int32_t, int32_t>> by_dst;  // (dst, src)
  by_dst.reserve(copies.size());
  for (const BlockCopy& c : copies) {
    by_dst.emplace_back(dest.block_ids[static_cast<size_t>(c.logical_block)],
                        c.src_block);
  }
  std::sort(by_dst.begin(), by_dst.end());
  std::vector<SendPart> parts;
  for (size_t i = 0; i < by_dst.size(); ++i) {
    if (i % static_cast<size_t>(staging_blocks_) == 0) parts.emplace_back();
    SendPart& part = parts.back();
    const int32_t pos = static_cast<int32_t>(part.gather.size());
    const int32_t dst = by_dst[i].first;
    part.gather.push_back(by_dst[i].second);
    if (!part.runs.empty()) {
      internal::CopyRun& last = part.runs.back();
      if (dst == last.dst_block + last.num_blocks) {
        ++last.num_blocks;
        continue;
      }
    }
    part.runs.push_back(internal::CopyRun{pos, dst, 1});
  }
  return parts;
}

absl::StatusOr<PutSource> UcxSender::PrepareSource(const SendPart& part,
                                                   int32_t first, int32_t last,
                                                   absl::Time deadline) {
  const auto num_layers = static_cast<size_t>(last - first);
  PutSource source;
  if (!staged()) {
    for (auto l = static_cast<size_t>(first); l < static_cast<size_t>(last);
         ++l) {
      source.layer_base.push_back(
          static_cast<const char*>(local_.layer_base[l]));
      source.memh.push_back(mem_[l].get());
    }
    return source;
  }
  const int64_t block_bytes = local_.layout.block_bytes();
  const int64_t n = static_cast<int64_t>(part.gather.size());
  DUET_RETURN_IF_ERROR(queue_->Gather(
      internal::LayerSlice(internal::ToBlockPool(local_), first, last),
      part.gather, staging_.data(), static_cast<int64_t>(staging_.size()),
      deadline));
  // The gather wrote [layer][position][block].
  for (size_t l = 0; l < num_layers; ++l) {
    source.layer_base.push_back(static_cast<const char*>(staging_.data()) +
                                static_cast<int64_t>(l) * n * block_bytes);
    source.memh.push_back(mem_[0].get());
  }
  return source;
}

absl::StatusOr<Peer*> UcxSender::GetPeer(const std::string& address) {
  // Forget connections that failed since they were last used; a receiver
  // that restarts comes back with a new worker address.
  absl::erase_if(
      peers_, [](const auto& entry) { return entry.second->error != UCS_OK; });
  if (auto it = peers_.find(address); it != peers_.end()) {
    return it->second.get();
  }
  auto peer = std::make_unique<Peer>();
  peer->name = internal::PeerName(address);
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.address = reinterpret_cast<const ucp_address_t*>(address.data());
  // PEER mode makes a dead receiver surface as an error on the endpoint
  // instead of a request that never completes.
  params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  params.err_handler.cb = OnEndpointError;
  params.err_handler.arg = peer.get();
  ucp_ep_h ep = nullptr;
  const ucs_status_t status = ucp_ep_create(worker_.get(), &params, &ep);
  if (status != UCS_OK) {
    // UNREACHABLE is either a dead receiver (tcp connect refused) or no
    // usable transport: PEER mode needs transports that detect peer failure,
    // which UCX 1.13's shared-memory ones do not, so a shm-only UCX_TLS
    // ends here too.
    return TransferError(
        status,
        absl::StrCat("connecting to KV receiver ", peer->name,
                     status == UCS_ERR_UNREACHABLE
                         ? " (receiver gone, or no transport that detects "
                           "peer failure: UcxOptions::transports / UCX_TLS "
                           "must include tcp or an RDMA transport)"
                         : ""));
  }
  peer->ep = UcpEndpoint(worker_.get(), ep);
  Peer* raw = peer.get();
  peers_.emplace(address, std::move(peer));
  return raw;
}

absl::StatusOr<ucp_rkey_h> UcxSender::GetRkey(Peer& peer,
                                              const std::string& packed) {
  if (auto it = peer.rkeys.find(packed); it != peer.rkeys.end()) {
    return it->second.get();
  }
  ucp_rkey_h rkey = nullptr;
  const ucs_status_t status =
      ucp_ep_rkey_unpack(peer.ep.get(), packed.data(), &rkey);
  if (status != UCS_OK) {
    absl::Status s = internal::UcsError(
        status, absl::StrCat("unpacking an rkey from ", peer.name));
    // A malformed rkey is the descriptor's fault, not the network's.
    return status == UCS_ERR_INVALID_PARAM
               ? absl::InvalidArgumentError(s.message())
               : s;
  }
  peer.rkeys.emplace(packed, UcpRkey(rkey));
  return rkey;
}

absl::Status UcxSender::Send(const KvDescriptor& dest,
                             std::span<const BlockCopy> copies,
                             LayerRange layers, const TransferSlice* slice,
                             std::shared_ptr<const kernels::StreamMark> ready,
                             absl::Duration timeout) {
  DUET_RETURN_IF_ERROR(
      slice == nullptr
          ? internal::ValidateSend(local_, dest, copies, Transport::kUcx)
          : internal::ValidateSliceSend(local_, dest, copies, Transport::kUcx,
                                        *slice));
  DUET_ASSIGN_OR_RETURN(const auto range,
                        internal::ResolveLayers(local_.layout, layers));
  const size_t num_layers = static_cast<size_t>(local_.layout.num_layers);
  if (dest.ucx_rkeys.size() != num_layers ||
      dest.remote_layer_base.size() != num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("UCX descriptor has ", dest.ucx_rkeys.size(),
                     " rkeys and ", dest.remote_layer_base.size(),
                     " layer bases for ", num_layers, " layers"));
  }
  if (dest.ucx_worker_address.empty()) {
    return absl::InvalidArgumentError("UCX descriptor has no worker address");
  }
  if (timeout <= absl::ZeroDuration()) {
    return absl::DeadlineExceededError(
        absl::StrCat("KV transfer given no time (timeout ",
                     absl::FormatDuration(timeout), ")"));
  }
  if (copies.empty()) return absl::OkStatus();
  const absl::Time deadline = absl::Now() + timeout;
  {
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithDeadline(absl::Condition(this, &UcxSender::Idle),
                               deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(
          "KV transfer to ", internal::PeerName(dest.ucx_worker_address),
          " spent its whole timeout (", absl::FormatDuration(timeout),
          ") queued behind other transfers of this sender"));
    }
    busy_ = true;
  }
  absl::Cleanup release = [this] {
    absl::MutexLock lock(&mu_);
    busy_ = false;
  };
  return SendExclusive(dest, copies, range.first, range.second, slice,
                       std::move(ready), timeout, deadline);
}

absl::Status UcxSender::SendExclusive(
    const KvDescriptor& dest, std::span<const BlockCopy> copies, int32_t first,
    int32_t last, const TransferSlice* slice,
    std::shared_ptr<const kernels::StreamMark> ready, absl::Duration timeout,
    absl::Time deadline) {
  // Nothing may be read before the forward pass wrote it: a staged send
  // queues the wait before its gather; a direct one reads the pool itself.
  if (ready != nullptr) {
    if (staged()) {
      DUET_RETURN_IF_ERROR(queue_->After(std::move(ready)));
    } else {
      DUET_RETURN_IF_ERROR(ready->Wait(deadline));
    }
  }
  DUET_ASSIGN_OR_RETURN(Peer * peer, GetPeer(dest.ucx_worker_address));
  const std::string peer_name = peer->name;
  // Drops the cached connection after a failure (see Peer).
  auto drop_peer = [&] {
    peer->Abort();
    peers_.erase(dest.ucx_worker_address);
  };

  const auto num_layers = static_cast<size_t>(last - first);
  std::vector<ucp_rkey_h> rkeys(num_layers);
  for (size_t l = 0; l < num_layers; ++l) {
    absl::StatusOr<ucp_rkey_h> rkey =
        GetRkey(*peer, dest.ucx_rkeys[static_cast<size_t>(first) + l]);
    if (!rkey.ok()) {
      drop_peer();
      return rkey.status();
    }
    rkeys[l] = *rkey;
  }

  const std::vector<SendPart> parts = PlanParts(dest, copies);
  const int64_t block_bytes = local_.layout.block_bytes();
  const int64_t dest_block_bytes = dest.layout.block_bytes();
  int64_t total_puts = 0;
  for (const SendPart& part : parts) {
    if (slice == nullptr) {
      total_puts += static_cast<int64_t>(part.runs.size() * num_layers);
      continue;
    }
    for (const internal::CopyRun& run : part.runs) {
      total_puts += 2 * int64_t{run.num_blocks} *
                    static_cast<int64_t>(num_layers);
    }
  }
  const int64_t total_bytes =
      static_cast<int64_t>(copies.size()) *
      (slice == nullptr ? block_bytes : 2 * slice->bytes) *
      static_cast<int64_t>(num_layers);

  Batch batch;
  batch.ops.reserve(static_cast<size_t>(total_puts) + 1);
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                       UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_MEMH;
  param.cb.send = OnOpDone;
  // Records one non-blocking call's outcome: done now, failed, or in flight.
  auto track = [&](ucs_status_ptr_t request, Op& op) {
    if (request == nullptr) return;
    if (UCS_PTR_IS_ERR(request)) {
      if (batch.error == UCS_OK) batch.error = UCS_PTR_STATUS(request);
      return;
    }
    op.request = request;
    ++batch.pending_ops;
    batch.pending_bytes += op.bytes;
    if (op.bytes == 0) batch.flush_pending = true;
  };
  auto failed = [&] { return batch.error != UCS_OK || peer->error != UCS_OK; };

  ucp_worker_h worker = worker_.get();
  bool timed_out = false;
  // Progresses until every operation issued so far completed, one failed,
  // or the deadline passed (timed_out).
  auto wait = [&] {
    int idle_spins = 0;
    int busy_spins = 0;
    while (batch.pending_ops > 0 && !failed()) {
      if (ucp_worker_progress(worker) != 0) {
        idle_spins = 0;
        // A worker that always has something to do must not outrun the
        // deadline either; absl::Now() per call would be wasted while busy.
        if (++busy_spins % 64 != 0 || absl::Now() < deadline) continue;
        timed_out = true;
        return;
      }
      if (absl::Now() >= deadline) {
        timed_out = true;
        return;
      }
      if (++idle_spins > kSpinsBeforeSleep) absl::SleepFor(kIdleSleep);
    }
  };

  for (size_t p = 0; p < parts.size() && !failed() && !timed_out; ++p) {
    // Staging holds one part at a time: the puts of the previous part must
    // have left it (locally complete) before the next gather overwrites it.
    if (p > 0) {
      wait();
      if (failed() || timed_out) break;
    }
    absl::StatusOr<PutSource> source =
        PrepareSource(parts[p], first, last, deadline);
    if (!source.ok()) {
      // Nothing is in flight (see the wait above); the connection is fine.
      return source.status();
    }
    // One put of `bytes` from local offset `from` to remote offset `to`
    // within layer l.
    auto put = [&](size_t l, int64_t from, int64_t to, int64_t bytes) {
      Op& op = batch.ops.emplace_back();
      op.batch = &batch;
      op.bytes = bytes;
      param.user_data = &op;
      const uint64_t remote =
          dest.remote_layer_base[static_cast<size_t>(first) + l] +
          static_cast<uint64_t>(to);
      track(ucp_put_nbx(peer->ep.get(), source->layer_base[l] + from,
                        static_cast<size_t>(bytes), remote, rkeys[l], &param),
            op);
    };
    for (size_t l = 0; l < num_layers && !failed(); ++l) {
      param.memh = source->memh[l];
      for (const internal::CopyRun& run : parts[p].runs) {
        if (slice == nullptr) {
          put(l, run.src_block * block_bytes, run.dst_block * block_bytes,
              run.num_blocks * block_bytes);
        } else {
          // A head slice is not contiguous across blocks: a K and a V put
          // per block.
          for (int32_t b = 0; b < run.num_blocks && !failed(); ++b) {
            for (int kv = 0; kv < 2; ++kv) {
              put(l, (run.src_block + b) * block_bytes + slice->src_offset[kv],
                  (run.dst_block + b) * dest_block_bytes +
                      slice->dst_offset[kv],
                  slice->bytes);
            }
          }
        }
        if (failed()) break;
      }
    }
  }
  if (!failed() && !timed_out) {
    // The flush completes once every put above is complete at the target:
    // this is what makes OK mean "visible at the receiver".
    Op& op = batch.ops.emplace_back();
    op.batch = &batch;
    op.bytes = 0;
    ucp_request_param_t flush_param{};
    flush_param.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    flush_param.cb.send = OnOpDone;
    flush_param.user_data = &op;
    track(ucp_ep_flush_nbx(peer->ep.get(), &flush_param), op);
    wait();
  }

  if (failed()) {
    const ucs_status_t status =
        peer->error != UCS_OK ? peer->error : batch.error;
    drop_peer();
    return TransferError(status, absl::StrCat("KV transfer to ", peer_name));
  }
  if (timed_out) {
    // Puts can be locally complete (handed to the transport) long before
    // the flush confirms them, so both numbers matter when debugging.
    const std::string message = absl::StrCat(
        "KV transfer to ", peer_name, " timed out after ",
        absl::FormatDuration(timeout), ": ", total_puts, " puts (", total_bytes,
        " bytes, ", copies.size(), " blocks x ", num_layers,
        " layers) unconfirmed by the flush; ",
        batch.pending_ops - (batch.flush_pending ? 1 : 0), " puts (",
        batch.pending_bytes, " bytes) not even locally complete");
    drop_peer();
    return absl::DeadlineExceededError(message);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvSender>> MakeUcxSender(
    const KvPoolView& local, const UcxOptions& options,
    kernels::Backend* backend) {
  return UcxSender::Create(local, options, backend);
}

}  // namespace duet::kv_transfer
