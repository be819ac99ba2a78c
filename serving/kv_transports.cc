#include "serving/kv_transports.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kv_transfer/cuda_ipc.h"
#include "kv_transfer/multi_transport.h"
#include "kv_transfer/tensor_parallel.h"
#include "serving/convert.h"

namespace duet::serving {

using kv_transfer::Transport;

absl::StatusOr<std::vector<Transport>> ResolveKvTransports(
    const std::string& flag, const runtime::ModelRunner& runner) {
  const bool gpu = runner.device() >= 0;
  if (flag == "ucx") return std::vector<Transport>{Transport::kUcx};
  if (flag == "cuda-ipc") {
    if (!gpu) {
      return absl::InvalidArgumentError(
          "--kv-transport cuda-ipc needs the cuda backend (a GPU KV pool)");
    }
    return std::vector<Transport>{Transport::kCudaIpc};
  }
  if (flag == "nccl") {
    if (!gpu) {
      return absl::InvalidArgumentError(
          "--kv-transport nccl needs the cuda backend (a GPU KV pool)");
    }
    return std::vector<Transport>{Transport::kNccl};
  }
  if (flag == "auto") {
    if (gpu)
      return std::vector<Transport>{Transport::kCudaIpc, Transport::kUcx};
    return std::vector<Transport>{Transport::kUcx};
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--kv-transport must be auto, ucx, cuda-ipc or nccl, got '", flag, "'"));
}

namespace {

absl::StatusOr<std::unique_ptr<kv_transfer::KvReceiver>> MakeRankReceiver(
    Transport t, runtime::ModelRunner& runner, int32_t rank,
    const kv_transfer::UcxOptions& ucx,
    std::vector<kv_transfer::KvChannelServer*>* channel_servers) {
  switch (t) {
    case Transport::kCudaIpc:
      return kv_transfer::MakeCudaIpcReceiver(runner.pool_view(rank),
                                              runner.rank_device(rank));
    case Transport::kNccl: {
      DUET_ASSIGN_OR_RETURN(
          auto factory,
          kv_transfer::MakeNcclCommunicatorFactory(runner.rank_device(rank)));
      DUET_ASSIGN_OR_RETURN(auto r, kv_transfer::MakeKvChannelReceiver(
                                        runner.pool_view(rank),
                                        &runner.rank_backend(rank), factory));
      if (channel_servers != nullptr) channel_servers->push_back(r.get());
      return std::unique_ptr<kv_transfer::KvReceiver>(std::move(r));
    }
    default:
      return kv_transfer::MakeUcxReceiver(runner.pool_view(rank), ucx,
                                          &runner.rank_backend(rank));
  }
}

absl::StatusOr<std::unique_ptr<kv_transfer::KvSender>> MakeRankSender(
    Transport t, runtime::ModelRunner& runner, int32_t rank,
    const kv_transfer::UcxOptions& ucx,
    const std::shared_ptr<kv_transfer::KvChannelClient>& channel_client) {
  switch (t) {
    case Transport::kCudaIpc:
      return kv_transfer::MakeCudaIpcSender(runner.pool_view(rank),
                                            &runner.rank_backend(rank),
                                            runner.rank_device(rank));
    case Transport::kNccl: {
      DUET_ASSIGN_OR_RETURN(
          auto factory,
          kv_transfer::MakeNcclCommunicatorFactory(runner.rank_device(rank)));
      return kv_transfer::MakeKvChannelSender(runner.pool_view(rank),
                                              &runner.rank_backend(rank), rank,
                                              factory, channel_client);
    }
    default:
      return kv_transfer::MakeUcxSender(runner.pool_view(rank), ucx,
                                        &runner.rank_backend(rank));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<kv_transfer::KvReceiver>> MakeNodeKvReceiver(
    const std::vector<Transport>& transports, runtime::ModelRunner& runner,
    const kv_transfer::UcxOptions& ucx,
    std::vector<kv_transfer::KvChannelServer*>* channel_servers) {
  // One receiver per rank's pool (each over every transport), one
  // descriptor for all of them.
  std::vector<std::unique_ptr<kv_transfer::KvReceiver>> ranks;
  for (int32_t rank = 0; rank < runner.tensor_parallel_size(); ++rank) {
    std::vector<std::pair<Transport, std::unique_ptr<kv_transfer::KvReceiver>>>
        parts;
    for (Transport t : transports) {
      absl::StatusOr<std::unique_ptr<kv_transfer::KvReceiver>> r =
          MakeRankReceiver(t, runner, rank, ucx, channel_servers);
      if (!r.ok()) return r.status();
      parts.emplace_back(t, std::move(*r));
    }
    if (parts.size() == 1) {
      ranks.push_back(std::move(parts.front().second));
    } else {
      DUET_ASSIGN_OR_RETURN(auto multi,
                            kv_transfer::MakeMultiReceiver(std::move(parts)));
      ranks.push_back(std::move(multi));
    }
  }
  return kv_transfer::MakeTensorParallelReceiver(std::move(ranks));
}

absl::StatusOr<std::unique_ptr<kv_transfer::KvSender>> MakeNodeKvSender(
    const std::vector<Transport>& transports, runtime::ModelRunner& runner,
    const kv_transfer::UcxOptions& ucx,
    std::shared_ptr<kv_transfer::KvChannelClient> channel_client) {
  // One sender per rank's pool; the tensor-parallel wrapper routes each
  // rank's heads to the receiving rank that holds them, whatever the
  // decode node's TP size.
  std::vector<std::unique_ptr<kv_transfer::KvSender>> ranks;
  for (int32_t rank = 0; rank < runner.tensor_parallel_size(); ++rank) {
    std::vector<std::pair<Transport, std::unique_ptr<kv_transfer::KvSender>>>
        parts;
    for (Transport t : transports) {
      absl::StatusOr<std::unique_ptr<kv_transfer::KvSender>> s =
          MakeRankSender(t, runner, rank, ucx, channel_client);
      if (!s.ok()) return s.status();
      parts.emplace_back(t, std::move(*s));
    }
    if (parts.size() == 1) {
      ranks.push_back(std::move(parts.front().second));
    } else {
      DUET_ASSIGN_OR_RETURN(auto multi,
                            kv_transfer::MakeMultiSender(std::move(parts)));
      ranks.push_back(std::move(multi));
    }
  }
  return kv_transfer::MakeTensorParallelSender(std::move(ranks),
                                               runner.layout());
}

absl::StatusOr<std::string> UcxNetDeviceFor(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  in_addr v4{};
  in6_addr v6{};
  const bool is_v4 = inet_pton(AF_INET, host.c_str(), &v4) == 1;
  const bool is_v6 = !is_v4 && inet_pton(AF_INET6, host.c_str(), &v6) == 1;
  if (!is_v4 && !is_v6) return std::string();  // a name: no restriction
  if ((is_v4 && v4.s_addr == htonl(INADDR_ANY)) ||
      (is_v6 && IN6_IS_ADDR_UNSPECIFIED(&v6))) {
    return std::string();
  }
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return absl::InternalError("getifaddrs failed listing network interfaces");
  }
  std::string found;
  for (ifaddrs* i = list; i != nullptr && found.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    if (is_v4 && i->ifa_addr->sa_family == AF_INET &&
        reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr ==
            v4.s_addr) {
      found = i->ifa_name;
    }
    if (is_v6 && i->ifa_addr->sa_family == AF_INET6 &&
        std::memcmp(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr,
                    &v6, sizeof(v6)) == 0) {
      found = i->ifa_name;
    }
  }
  freeifaddrs(list);
  if (found.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen ", listen,
                     ": no local network interface has address ", host));
  }
  return found;
}

void AddKvTransports(const std::vector<Transport>& transports,
                     v1::RegisterRequest* reg) {
  for (Transport t : transports) reg->add_kv_transports(ToProto(t));
  reg->set_host_id(kv_transfer::LocalHostId());
}

std::string KvTransportsDescription(const std::vector<Transport>& transports,
                                    const runtime::ModelRunner& runner,
                                    const kv_transfer::UcxOptions& ucx) {
  std::string out;
  for (Transport t : transports) {
    absl::StrAppend(&out, out.empty() ? "" : " or ",
                    t == Transport::kCudaIpc             ? "CUDA IPC"
                    : t == Transport::kNccl              ? "NCCL"
                    : runner.device() >= 0 || ucx.staged ? "UCX (host-staged)"
                                                         : "UCX");
  }
  return out;
}

}  // namespace duet::serving
