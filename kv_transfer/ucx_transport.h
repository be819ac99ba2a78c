// UCX KV transport: one-sided puts from the prefill node's KV into the
// decode node's registered memory (DESIGN.md §1, §4).
//
// The receiver maps its memory, packs its rkeys and worker address once, and
// runs a progress thread (with tcp or shared-memory transports UCX emulates
// RMA in software, so the *target* worker must be progressed). The sender
// issues one put per (layer, run of consecutive destination blocks), flushes
// the endpoint and returns OK only after the flush completes, i.e. once the
// bytes are visible in the receiver's memory.
//
// Two modes per side, chosen at creation:
// - direct (host pools): the puts read the sender's pool and write the
//   receiver's pool; Land has nothing to do.
// - staged (GPU pools, or UcxOptions::staged): UCX here has no CUDA
//   support, so KV moves through registered host staging. The sender
//   gathers the blocks of a Send into its staging buffer on the backend's
//   KV copy queue (one kernel + one copy per batch) and puts from there; the
//   receiver gives each described request a run of staging slots, the
//   descriptor points at them, and Land scatters them into the pool with the
//   backend. Both sides run the same put path; only the source / target memory
//   differs.
//
// Transport selection: UcxOptions::transports, else the UCX_TLS environment
// variable, else UCX's own choice. Force tcp across hosts with transports =
// "tcp" (or UCX_TLS=tcp).
//
// No UCX header is included here; the UCX types live in the .cc files.
#ifndef DUET_KV_TRANSFER_UCX_TRANSPORT_H_
#define DUET_KV_TRANSFER_UCX_TRANSPORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kernels {
class Backend;
}  // namespace duet::kernels

namespace duet::kv_transfer {

// Staging slots of a staged receiver (one block of every layer each): 1024
// slots of Qwen3-4B blocks (36 layers x 64 KiB) are 2.25 GiB of pinned host
// memory, the KV of 16k tokens described and not yet landed at once.
inline constexpr int32_t kDefaultStagingBlocks = 1024;

struct UcxOptions {
  // UCX transport list in UCX_TLS syntax ("tcp", "rc,tcp", "^rdmacm").
  // Empty: the UCX_TLS environment variable if set, else all transports UCX
  // finds. A non-empty value overrides UCX_TLS. The sender needs transports
  // that detect peer failure: with UCX 1.13 on a host without RDMA that is
  // tcp only (shared-memory-only lists fail with UNAVAILABLE, see README).
  std::string transports;
  // Raises tcp's segment size from 8 KiB to 64 KiB unless the environment
  // sets UCX_TCP_TX_SEG_SIZE / UCX_TCP_RX_SEG_SIZE: without RDMA, puts are
  // emulated with messages of that size, and on a 2-core VM over loopback
  // this moved KV transfers from 0.4 to 1.7 GB/s. Both sides of a transfer
  // should use the same sizes (they do with the defaults). Any other UCX
  // setting: the usual UCX_* environment variables.
  bool tune_tcp_segments = true;
  // Network devices UCX may use, in UCX_NET_DEVICES syntax ("lo",
  // "eth0,mlx5_0:1"); empty: the UCX_NET_DEVICES environment variable if
  // set, else all. Nodes set it to the interface of their --listen address,
  // so UCX does not listen on interfaces the node was not told to use.
  std::string net_devices;
  // Move KV through host staging with the backend's gather / scatter even
  // when the pool is host memory (a GPU pool always is staged). Lets tests
  // and CI without a GPU run the staged path on the CPU backend.
  bool staged = false;
  // Staged sender: bytes of its pinned staging buffer (rounded up to hold
  // at least one block of every layer). A Send moves its blocks in batches
  // of as many blocks (all layers) as fit: gather, puts, wait until the
  // puts have left the buffer, next batch.
  int64_t sender_staging_bytes = int64_t{64} << 20;
  // Staged receiver: staging slots, each one block of every layer; a
  // described request holds one run of as many slots as it has blocks until
  // Land or Drop (capped at the pool's num_blocks).
  int32_t staging_blocks = kDefaultStagingBlocks;
  // Staged receiver: how long the slots of a dropped request stay unused,
  // since bytes of a transfer the sender gave up on may still arrive (UCX
  // over tcp emulates puts). Slots of a landed request are reused at once.
  absl::Duration staging_quarantine = absl::Seconds(2);
};

// A receiver over `pool` (which must outlive the receiver). Direct mode
// (host pool, options.staged false): maps every layer of the pool. Staged
// mode (GPU pool, or options.staged): allocates and maps
// min(staging_blocks, pool.num_blocks) staging slots with
// `backend->AllocateHostStaging`; Land scatters with `backend`, which must
// own the pool's memory and outlive the receiver. Starts the progress
// thread; the destructor stops it and unmaps. InvalidArgument for an
// invalid pool, a staged pool without a backend (or one on another
// device), or staging_blocks <= 0; UCX errors mapped by DeviceErrorCode
// (common/device_status.h).
absl::StatusOr<std::unique_ptr<KvReceiver>> MakeUcxReceiver(
    const KvPoolView& pool, const UcxOptions& options,
    kernels::Backend* backend = nullptr);

// A sender from `local` (which must outlive the sender), with its own UCX
// context and worker. Endpoints and unpacked rkeys are cached per receiver
// worker address. Send calls are serialized by a mutex (one worker,
// progressed only inside Send), so concurrent callers queue. A Send that
// times out force-closes the endpoint (cancelling what is in flight) and
// returns DEADLINE_EXCEEDED naming the peer and what was outstanding; a dead
// peer gives UNAVAILABLE (or DEADLINE_EXCEEDED when UCX cannot tell it died
// before the timeout). Direct mode registers the pool; staged mode (GPU
// pool, or options.staged) registers a staging buffer from `backend` and
// gathers into it on a copy queue of the backend's (after the send's ready
// mark), so any thread may send while the engine loop computes.
// InvalidArgument as for the receiver.
absl::StatusOr<std::unique_ptr<KvSender>> MakeUcxSender(
    const KvPoolView& local, const UcxOptions& options,
    kernels::Backend* backend = nullptr);

}  // namespace duet::kv_transfer

#endif  // DUET_KV_TRANSFER_UCX_TRANSPORT_H_
