#include "tools/kv_bench_receiver.h"

#include <cstdio>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/status.h"
#include "kv_transfer/cuda_ipc.h"
#include "kv_transfer/ucx_transport.h"
#include "tools/kv_bench_wire.h"

namespace duet::tools::kv_bench {
namespace {

enum class Op : uint64_t { kOpen = 1, kDescribe = 2, kLand = 3, kDrop = 4 };

absl::Status Malformed() {
  return absl::InvalidArgumentError("kv-bench: malformed request or reply");
}

}  // namespace

absl::StatusOr<std::unique_ptr<ReceiverSide>> ReceiverSide::Create(
    const ReceiverConfig& config) {
  std::unique_ptr<ReceiverSide> side(new ReceiverSide(config));
  DUET_ASSIGN_OR_RETURN(side->backend_,
                        MakeBenchBackend(config.backend, config.device));
  DUET_ASSIGN_OR_RETURN(side->pool_,
                        BenchPool::Create(side->backend_.get(), config.layout,
                                          config.num_blocks));
  return side;
}

ReceiverSide::~ReceiverSide() {
  receiver_.reset();  // before the pool it maps
}

absl::Status ReceiverSide::Open(BenchTransport transport) {
  receiver_.reset();
  described_.clear();
  const kv_transfer::KvPoolView& pool = pool_->view();
  absl::StatusOr<std::unique_ptr<kv_transfer::KvReceiver>> r;
  switch (transport) {
    case BenchTransport::kCudaIpc:
      r = kv_transfer::MakeCudaIpcReceiver(pool, config_.device);
      break;
    case BenchTransport::kUcx:
    case BenchTransport::kUcxStaged: {
      kv_transfer::UcxOptions options;
      options.transports = config_.ucx_tls;
      options.staged = transport == BenchTransport::kUcxStaged;
      r = kv_transfer::MakeUcxReceiver(pool, options, backend_.get());
      break;
    }
    case BenchTransport::kInProcess:
      r = kv_transfer::MakeInProcessReceiver(registry_, kInProcessName, pool);
      break;
  }
  if (!r.ok()) return r.status();
  receiver_ = std::move(*r);
  return absl::OkStatus();
}

std::string ReceiverSide::Handle(absl::string_view request) {
  WireReader in(request);
  WireWriter out;
  uint64_t op = 0, arg = 0;
  if (!in.U64(op)) return out.Status(Malformed()).Take();
  if (static_cast<Op>(op) == Op::kOpen) {
    if (!in.U64(arg) || !in.done() || arg > 3) {
      return out.Status(Malformed()).Take();
    }
    return out.Status(Open(static_cast<BenchTransport>(arg))).Take();
  }
  uint64_t key = 0;
  if (!in.U64(key)) return out.Status(Malformed()).Take();
  if (receiver_ == nullptr) {
    return out.Status(absl::FailedPreconditionError("no transport open"))
        .Take();
  }
  switch (static_cast<Op>(op)) {
    case Op::kDescribe: {
      int32_t n = 0;
      if (!in.I32(n) || !in.done() || n <= 0 || n > pool_->view().num_blocks) {
        return out.Status(Malformed()).Take();
      }
      std::vector<int32_t> ids(static_cast<size_t>(n));
      for (int32_t i = 0; i < n; ++i) ids[i] = i;
      absl::StatusOr<kv_transfer::KvDescriptor> d =
          receiver_->Describe(key, ids);
      if (!d.ok()) return out.Status(d.status()).Take();
      described_[key] = n;
      return out.Status(absl::OkStatus()).Str(SerializeDescriptor(*d)).Take();
    }
    case Op::kLand: {
      uint64_t checksum = 0;
      if (!in.U64(checksum) || !in.done())
        return out.Status(Malformed()).Take();
      Stopwatch clock;
      absl::Status s = receiver_->Land(key);
      // A staged receiver's scatter is queued on the backend's stream.
      if (s.ok()) s = backend_->Synchronize();
      const double land_ms = clock.ElapsedMs();
      uint64_t sum = 0;
      auto it = described_.find(key);
      if (s.ok() && checksum != 0) {
        if (it == described_.end()) {
          s = absl::NotFoundError("landed key was not described here");
        } else if (absl::StatusOr<uint64_t> c = pool_->Checksum(it->second);
                   c.ok()) {
          sum = *c;
        } else {
          s = c.status();
        }
      }
      if (it != described_.end()) described_.erase(it);
      return out.Status(s).F64(land_ms).U64(sum).Take();
    }
    case Op::kDrop:
      if (!in.done()) return out.Status(Malformed()).Take();
      receiver_->Drop(key);
      described_.erase(key);
      return out.Status(absl::OkStatus()).Take();
    default:
      return out.Status(Malformed()).Take();
  }
}

int ServeReceiver(const ReceiverConfig& config, int fd) {
  Channel channel(fd);
  absl::StatusOr<std::unique_ptr<ReceiverSide>> side =
      ReceiverSide::Create(config);
  if (!channel.Send(WireWriter().Status(side.status()).bytes()).ok()) {
    return 1;
  }
  if (!side.ok()) return 1;
  while (true) {
    absl::StatusOr<std::string> request = channel.Receive();
    if (request.status().code() == absl::StatusCode::kOutOfRange) return 0;
    if (!request.ok()) {
      std::fprintf(stderr, "duet-kv-bench receiver: %s\n",
                   request.status().ToString().c_str());
      return 1;
    }
    if (!channel.Send((*side)->Handle(*request)).ok()) return 1;
  }
}

namespace {

absl::string_view Bytes(const absl::StatusOr<std::string>& reply) {
  return reply.ok() ? absl::string_view(*reply) : absl::string_view();
}

// The reply's leading status, and the reader positioned after it.
absl::Status ReplyStatus(const absl::StatusOr<std::string>& reply,
                         WireReader& in) {
  if (!reply.ok()) return reply.status();
  absl::Status s;
  if (!in.Status(s)) return Malformed();
  return s;
}

}  // namespace

absl::Status ReceiverClient::Open(BenchTransport transport) {
  absl::StatusOr<std::string> reply =
      call_(WireWriter()
                .U64(static_cast<uint64_t>(Op::kOpen))
                .U64(static_cast<uint64_t>(transport))
                .Take());
  WireReader in(Bytes(reply));
  return ReplyStatus(reply, in);
}

absl::StatusOr<kv_transfer::KvDescriptor> ReceiverClient::Describe(uint64_t key,
                                                                   int32_t n) {
  absl::StatusOr<std::string> reply =
      call_(WireWriter()
                .U64(static_cast<uint64_t>(Op::kDescribe))
                .U64(key)
                .I64(n)
                .Take());
  WireReader in(Bytes(reply));
  DUET_RETURN_IF_ERROR(ReplyStatus(reply, in));
  std::string d;
  if (!in.Str(d) || !in.done()) return Malformed();
  return ParseDescriptor(d);
}

absl::StatusOr<ReceiverClient::Landed> ReceiverClient::Land(uint64_t key,
                                                            bool checksum) {
  absl::StatusOr<std::string> reply =
      call_(WireWriter()
                .U64(static_cast<uint64_t>(Op::kLand))
                .U64(key)
                .U64(checksum ? 1 : 0)
                .Take());
  WireReader in(Bytes(reply));
  DUET_RETURN_IF_ERROR(ReplyStatus(reply, in));
  Landed landed;
  if (!in.F64(landed.land_ms) || !in.U64(landed.checksum) || !in.done()) {
    return Malformed();
  }
  return landed;
}

absl::Status ReceiverClient::Drop(uint64_t key) {
  absl::StatusOr<std::string> reply =
      call_(WireWriter().U64(static_cast<uint64_t>(Op::kDrop)).U64(key).Take());
  WireReader in(Bytes(reply));
  return ReplyStatus(reply, in);
}

}  // namespace duet::tools::kv_bench
