// RAII owners for UCX handles and the set-up steps both UCX sides share.
// Internal to kv_transfer/: this is the only header that includes UCX, and
// only ucx_*.cc include it, so UCX types never reach the public headers.
#ifndef DUET_KV_TRANSFER_UCX_CONTEXT_H_
#define DUET_KV_TRANSFER_UCX_CONTEXT_H_

#include <ucp/api/ucp.h>
#include <ucs/type/status.h>

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "kernels/backend.h"
#include "kv_transfer/ucx_transport.h"

namespace duet::kv_transfer::internal {

struct UcpContextDeleter {
  void operator()(ucp_context_h context) const { ucp_cleanup(context); }
};
using UcpContext = std::unique_ptr<ucp_context, UcpContextDeleter>;

struct UcpWorkerDeleter {
  void operator()(ucp_worker_h worker) const { ucp_worker_destroy(worker); }
};
using UcpWorker = std::unique_ptr<ucp_worker, UcpWorkerDeleter>;

struct UcpRkeyDeleter {
  void operator()(ucp_rkey_h rkey) const { ucp_rkey_destroy(rkey); }
};
using UcpRkey = std::unique_ptr<ucp_rkey, UcpRkeyDeleter>;

// Buffer returned by ucp_rkey_pack.
struct UcpRkeyBufferDeleter {
  void operator()(void* buffer) const { ucp_rkey_buffer_release(buffer); }
};
using UcpRkeyBuffer = std::unique_ptr<void, UcpRkeyBufferDeleter>;

// A registered memory region; unmapping needs the context, so it is stored.
class UcpMem {
 public:
  UcpMem() = default;
  UcpMem(ucp_context_h context, ucp_mem_h memh)
      : context_(context), memh_(memh) {}
  UcpMem(UcpMem&& other) noexcept { *this = std::move(other); }
  UcpMem& operator=(UcpMem&& other) noexcept;
  UcpMem(const UcpMem&) = delete;
  UcpMem& operator=(const UcpMem&) = delete;
  ~UcpMem() { Reset(); }

  ucp_mem_h get() const { return memh_; }
  void Reset();

 private:
  ucp_context_h context_ = nullptr;
  ucp_mem_h memh_ = nullptr;
};

// The worker's packed address; releasing it needs the worker.
class UcpWorkerAddress {
 public:
  UcpWorkerAddress() = default;
  UcpWorkerAddress(ucp_worker_h worker, ucp_address_t* address, size_t length)
      : worker_(worker), address_(address), length_(length) {}
  UcpWorkerAddress(UcpWorkerAddress&& other) noexcept {
    *this = std::move(other);
  }
  UcpWorkerAddress& operator=(UcpWorkerAddress&& other) noexcept;
  UcpWorkerAddress(const UcpWorkerAddress&) = delete;
  UcpWorkerAddress& operator=(const UcpWorkerAddress&) = delete;
  ~UcpWorkerAddress() { Reset(); }

  std::string bytes() const {
    return std::string(reinterpret_cast<const char*>(address_), length_);
  }
  void Reset();

 private:
  ucp_worker_h worker_ = nullptr;
  ucp_address_t* address_ = nullptr;
  size_t length_ = 0;
};

// An endpoint. Closing needs the worker to be progressed, and the endpoint
// must not outlive it: owners declare it after (destroy it before) the
// worker. Destruction force-closes: a graceful close waits for the peer,
// which may be the dead peer that made us close in the first place.
class UcpEndpoint {
 public:
  UcpEndpoint() = default;
  UcpEndpoint(ucp_worker_h worker, ucp_ep_h ep) : worker_(worker), ep_(ep) {}
  UcpEndpoint(UcpEndpoint&& other) noexcept { *this = std::move(other); }
  UcpEndpoint& operator=(UcpEndpoint&& other) noexcept;
  UcpEndpoint(const UcpEndpoint&) = delete;
  UcpEndpoint& operator=(const UcpEndpoint&) = delete;
  ~UcpEndpoint() { Close(); }

  ucp_ep_h get() const { return ep_; }
  // Force-closes (outstanding requests complete with UCS_ERR_CANCELED) and
  // progresses the worker until the close finishes, at most ~1 s.
  void Close();

 private:
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
};

// An eventfd-style wakeup pair used to interrupt a poll() from another
// thread (pipe-based to stay portable; both ends close on destruction).
class WakeupPipe {
 public:
  WakeupPipe() = default;
  WakeupPipe(const WakeupPipe&) = delete;
  WakeupPipe& operator=(const WakeupPipe&) = delete;
  ~WakeupPipe();
  absl::Status Open();
  int read_fd() const { return fds_[0]; }
  void Signal();
  void Drain();

 private:
  int fds_[2] = {-1, -1};
};

// UCS status -> absl::Status with the mapping of common/device_status.h;
// `what` says which call failed and on which peer.
absl::Status UcsError(ucs_status_t status, absl::string_view what);

// A context with RMA and WAKEUP, transports from options (see UcxOptions).
absl::StatusOr<UcpContext> CreateContext(const UcxOptions& options);
// A worker for use by one thread at a time (UCS_THREAD_MODE_SERIALIZED):
// each side either holds a mutex or owns a thread around every use.
absl::StatusOr<UcpWorker> CreateWorker(ucp_context_h context);
absl::StatusOr<UcpWorkerAddress> GetWorkerAddress(ucp_worker_h worker);
// Registers existing host memory [address, address + length).
absl::StatusOr<UcpMem> MapMemory(ucp_context_h context, void* address,
                                 size_t length);
// ucp_rkey_pack output as bytes, for KvDescriptor::ucx_rkeys.
absl::StatusOr<std::string> PackRkey(ucp_context_h context, ucp_mem_h memh);

// Whether a side over `pool` runs staged (a GPU pool, or options.staged),
// after checking that a staged side has a backend on the pool's device.
// `what` names the side in the message.
absl::StatusOr<bool> UseStaging(const KvPoolView& pool,
                                const UcxOptions& options,
                                const kernels::Backend* backend,
                                absl::string_view what);
// `pool` in the shape the backend's gather / scatter take.
kernels::KvBlockPool ToBlockPool(const KvPoolView& pool);

// "worker 0x<uid>" for a packed worker address (or "<bad worker address>"),
// used in error messages since the address itself is binary.
std::string PeerName(absl::string_view worker_address);

}  // namespace duet::kv_transfer::internal

#endif  // DUET_KV_TRANSFER_UCX_CONTEXT_H_
