#include "kv_transfer/ucx_context.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/device_status.h"

namespace duet::kv_transfer::internal {
namespace {

// How long a force close may take before the request is abandoned to UCX.
// A force close does no network round trip, so this only bounds pathological
// cases; it keeps a destructor from hanging forever.
constexpr absl::Duration kCloseGrace = absl::Seconds(1);

// See UcxOptions::tune_tcp_segments.
constexpr char kTcpSegmentSize[] = "64k";

struct UcpConfigDeleter {
  void operator()(ucp_config_t* config) const { ucp_config_release(config); }
};

}  // namespace

UcpMem& UcpMem::operator=(UcpMem&& other) noexcept {
  if (this != &other) {
    Reset();
    context_ = std::exchange(other.context_, nullptr);
    memh_ = std::exchange(other.memh_, nullptr);
  }
  return *this;
}

void UcpMem::Reset() {
  if (memh_ != nullptr) ucp_mem_unmap(context_, memh_);
  memh_ = nullptr;
  context_ = nullptr;
}

UcpWorkerAddress& UcpWorkerAddress::operator=(
    UcpWorkerAddress&& other) noexcept {
  if (this != &other) {
    Reset();
    worker_ = std::exchange(other.worker_, nullptr);
    address_ = std::exchange(other.address_, nullptr);
    length_ = std::exchange(other.length_, 0);
  }
  return *this;
}

void UcpWorkerAddress::Reset() {
  if (address_ != nullptr) ucp_worker_release_address(worker_, address_);
  address_ = nullptr;
  worker_ = nullptr;
  length_ = 0;
}

UcpEndpoint& UcpEndpoint::operator=(UcpEndpoint&& other) noexcept {
  if (this != &other) {
    Close();
    worker_ = std::exchange(other.worker_, nullptr);
    ep_ = std::exchange(other.ep_, nullptr);
  }
  return *this;
}

void UcpEndpoint::Close() {
  if (ep_ == nullptr) return;
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  ucs_status_ptr_t request = ucp_ep_close_nbx(ep_, &param);
  if (UCS_PTR_IS_PTR(request)) {
    const absl::Time deadline = absl::Now() + kCloseGrace;
    while (ucp_request_check_status(request) == UCS_INPROGRESS &&
           absl::Now() < deadline) {
      ucp_worker_progress(worker_);
    }
    // Freeing an unfinished request is allowed: UCX completes it internally.
    ucp_request_free(request);
  }
  ep_ = nullptr;
  worker_ = nullptr;
}

WakeupPipe::~WakeupPipe() {
  for (int& fd : fds_) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
}

absl::Status WakeupPipe::Open() {
  if (pipe2(fds_, O_NONBLOCK | O_CLOEXEC) != 0) {
    return absl::InternalError(
        absl::StrCat("pipe2 for the UCX progress thread: ", strerror(errno)));
  }
  return absl::OkStatus();
}

void WakeupPipe::Signal() {
  const char byte = 1;
  // A full pipe already guarantees a wakeup, so EAGAIN is fine to ignore.
  [[maybe_unused]] ssize_t n = write(fds_[1], &byte, 1);
}

void WakeupPipe::Drain() {
  char buffer[64];
  while (read(fds_[0], buffer, sizeof(buffer)) > 0) {
  }
}

absl::Status UcsError(ucs_status_t status, absl::string_view what) {
  return absl::Status(
      DeviceErrorCode(DeviceLib::kUcx, static_cast<int>(status)),
      absl::StrCat(what, ": UCX error ", static_cast<int>(status), " (",
                   ucs_status_string(status), ")"));
}

absl::StatusOr<UcpContext> CreateContext(const UcxOptions& options) {
  ucp_config_t* raw_config = nullptr;
  DUET_UCX_RETURN_IF_ERROR(ucp_config_read(nullptr, nullptr, &raw_config));
  std::unique_ptr<ucp_config_t, UcpConfigDeleter> config(raw_config);
  if (!options.transports.empty()) {
    DUET_UCX_RETURN_IF_ERROR(
        ucp_config_modify(config.get(), "TLS", options.transports.c_str()));
  }
  if (!options.net_devices.empty() &&
      std::getenv("UCX_NET_DEVICES") == nullptr) {
    DUET_UCX_RETURN_IF_ERROR(ucp_config_modify(config.get(), "NET_DEVICES",
                                               options.net_devices.c_str()));
  }
  if (options.tune_tcp_segments) {
    // ucp_config_modify in UCX 1.13 takes a transport setting by its field
    // name without the transport prefix (UCX_TCP_TX_SEG_SIZE -> TX_SEG_SIZE);
    // only tcp has these fields.
    for (const auto& [env, field] :
         {std::pair{"UCX_TCP_TX_SEG_SIZE", "TX_SEG_SIZE"},
          std::pair{"UCX_TCP_RX_SEG_SIZE", "RX_SEG_SIZE"}}) {
      if (std::getenv(env) != nullptr) continue;  // the operator's choice
      DUET_UCX_RETURN_IF_ERROR(
          ucp_config_modify(config.get(), field, kTcpSegmentSize));
    }
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
  // WAKEUP lets the receiver's progress thread sleep in poll() on the
  // worker's event fd instead of spinning.
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
  params.name = "duet_kv_transfer";
  ucp_context_h context = nullptr;
  DUET_UCX_RETURN_IF_ERROR(ucp_init(&params, config.get(), &context));
  return UcpContext(context);
}

absl::StatusOr<UcpWorker> CreateWorker(ucp_context_h context) {
  ucp_worker_params_t params{};
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  params.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  ucp_worker_h worker = nullptr;
  DUET_UCX_RETURN_IF_ERROR(ucp_worker_create(context, &params, &worker));
  return UcpWorker(worker);
}

absl::StatusOr<UcpWorkerAddress> GetWorkerAddress(ucp_worker_h worker) {
  ucp_address_t* address = nullptr;
  size_t length = 0;
  DUET_UCX_RETURN_IF_ERROR(ucp_worker_get_address(worker, &address, &length));
  return UcpWorkerAddress(worker, address, length);
}

absl::StatusOr<UcpMem> MapMemory(ucp_context_h context, void* address,
                                 size_t length) {
  ucp_mem_map_params_t params{};
  params.field_mask =
      UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = address;
  params.length = length;
  ucp_mem_h memh = nullptr;
  DUET_UCX_RETURN_IF_ERROR(ucp_mem_map(context, &params, &memh));
  return UcpMem(context, memh);
}

absl::StatusOr<std::string> PackRkey(ucp_context_h context, ucp_mem_h memh) {
  void* raw = nullptr;
  size_t size = 0;
  DUET_UCX_RETURN_IF_ERROR(ucp_rkey_pack(context, memh, &raw, &size));
  UcpRkeyBuffer buffer(raw);
  return std::string(static_cast<const char*>(buffer.get()), size);
}

std::string PeerName(absl::string_view worker_address) {
  if (worker_address.empty()) return "<empty worker address>";
  // ucp_worker_address_query takes a non-const pointer; query a copy.
  std::string copy(worker_address);
  ucp_worker_address_attr_t attr{};
  attr.field_mask = UCP_WORKER_ADDRESS_ATTR_FIELD_UID;
  if (ucp_worker_address_query(reinterpret_cast<ucp_address_t*>(copy.data()),
                               &attr) != UCS_OK) {
    return "<bad worker address>";
  }
  return absl::StrFormat("worker 0x%016x", attr.worker_uid);
}

absl::StatusOr<bool> UseStaging(const KvPoolView& pool,
                                const UcxOptions& options,
                                const kernels::Backend* backend,
                                absl::string_view what) {
  if (pool.device == Device::kCpu && !options.staged) return false;
  if (backend == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        what,
        ": a staged pool (GPU memory, or UcxOptions::staged) needs the "
        "backend that owns it"));
  }
  if (backend->device() != pool.device) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the pool is not in the given backend's memory"));
  }
  return true;
}

kernels::KvBlockPool ToBlockPool(const KvPoolView& pool) {
  kernels::KvBlockPool b;
  b.layer_base = pool.layer_base;
  b.num_blocks = pool.num_blocks;
  b.block_bytes = pool.layout.block_bytes();
  b.device = pool.device;
  return b;
}

}  // namespace duet::kv_transfer::internal
