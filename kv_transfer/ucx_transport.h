// UCX KV transport: one-sided puts from the prefill node's pool straight into
// the decode node's registered pool (DESIGN.md §1).
//
// The receiver maps its pool, packs one rkey per layer and its worker address
// once, and runs a progress thread (with tcp or shared-memory transports UCX
// emulates RMA in software, so the *target* worker must be progressed). The
// sender issues one put per (layer, run of consecutive blocks), flushes the
// endpoint and returns OK only after the flush completes, i.e. once the bytes
// are visible in the receiver's memory.
//
// Transport selection: UcxOptions::transports, else the UCX_TLS environment
// variable, else UCX's own choice (shared memory / cma within one host, tcp or
// RDMA across hosts). Force tcp across hosts with transports = "tcp" (or
// UCX_TLS=tcp). Host memory only for now: UCX here has no CUDA support, so GPU
// pools get UNIMPLEMENTED until host staging exists.
//
// No UCX header is included here; the UCX types live in the .cc files.
#ifndef DUET_KV_TRANSFER_UCX_TRANSPORT_H_
#define DUET_KV_TRANSFER_UCX_TRANSPORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kv_transfer {

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
};

// A receiver over `pool` (host memory, which must outlive the receiver). Maps
// every layer with ucp_mem_map and starts the progress thread; the destructor
// stops the thread and unmaps. Describe() is thread-safe.
// InvalidArgument for an invalid pool, UNIMPLEMENTED for a GPU pool, UCX
// errors mapped by DeviceErrorCode (common/device_status.h).
absl::StatusOr<std::unique_ptr<KvReceiver>> MakeUcxReceiver(
    const KvPoolView& pool, const UcxOptions& options);

// A sender from `local` (host memory, which must outlive the sender), with its
// own UCX context and worker. Endpoints and unpacked rkeys are cached per
// receiver worker address. Send calls are serialized by a mutex (one worker,
// progressed only inside Send), so concurrent callers queue. A Send that times
// out force-closes the endpoint (cancelling what is in flight) and returns
// DEADLINE_EXCEEDED naming the peer and what was outstanding; a dead peer
// gives UNAVAILABLE (or DEADLINE_EXCEEDED when UCX cannot tell it died before
// the timeout).
absl::StatusOr<std::unique_ptr<KvSender>> MakeUcxSender(
    const KvPoolView& local, const UcxOptions& options);

}  // namespace duet::kv_transfer

#endif  // DUET_KV_TRANSFER_UCX_TRANSPORT_H_
