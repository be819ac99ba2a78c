// Which KV transports a node serves (--kv-transport) and the transport
// objects for them, shared by duet-prefill and duet-decode.
//
// auto: a GPU node offers CUDA IPC and UCX, a CPU node UCX; both register
// their transports and their host's identity, and the router picks per
// (prefill, decode) pair: CUDA IPC when both offer it on the same host,
// else NCCL when both offer it, else UCX (router/README.md). An explicit
// ucx, cuda-ipc or nccl offers that one (nccl: GPU to GPU across GPUs and
// hosts; not part of auto, since it needs NCCL's network set up).
#ifndef DUET_SERVING_KV_TRANSPORTS_H_
#define DUET_SERVING_KV_TRANSPORTS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "duet/v1/registry.pb.h"
#include "kv_transfer/kv_channel.h"
#include "kv_transfer/kv_transfer.h"
#include "kv_transfer/ucx_transport.h"
#include "runtime/model_runner.h"

namespace duet::serving {

// The transports for `flag` on `runner`'s pool, preferred first.
// InvalidArgument for cuda-ipc on a host pool.
absl::StatusOr<std::vector<kv_transfer::Transport>> ResolveKvTransports(
    const std::string& flag, const runtime::ModelRunner& runner);

// With NCCL among `transports`, `channel_servers` gets each rank's control
// face (what the decode node's OpenKvChannel / PushKv handlers call); the
// receiver owns them.
absl::StatusOr<std::unique_ptr<kv_transfer::KvReceiver>> MakeNodeKvReceiver(
    const std::vector<kv_transfer::Transport>& transports,
    runtime::ModelRunner& runner, const kv_transfer::UcxOptions& ucx,
    std::vector<kv_transfer::KvChannelServer*>* channel_servers = nullptr);

// With NCCL among `transports`, `channel_client` reaches the decode nodes'
// control plane (required then).
absl::StatusOr<std::unique_ptr<kv_transfer::KvSender>> MakeNodeKvSender(
    const std::vector<kv_transfer::Transport>& transports,
    runtime::ModelRunner& runner, const kv_transfer::UcxOptions& ucx,
    std::shared_ptr<kv_transfer::KvChannelClient> channel_client = nullptr);

// The network interface UCX should use for a node listening on `listen`
// (host:port): "lo" for 127.0.0.1, the interface holding the address for a
// numeric one, "" (any) for 0.0.0.0, :: or a host name. InvalidArgument
// when no local interface has the address.
absl::StatusOr<std::string> UcxNetDeviceFor(const std::string& listen);

// Lists the transports and this host's identity in a registration.
void AddKvTransports(const std::vector<kv_transfer::Transport>& transports,
                     v1::RegisterRequest* reg);

// "CUDA IPC or UCX (host-staged)" for the ready line.
std::string KvTransportsDescription(
    const std::vector<kv_transfer::Transport>& transports,
    const runtime::ModelRunner& runner, const kv_transfer::UcxOptions& ucx);

}  // namespace duet::serving

#endif  // DUET_SERVING_KV_TRANSPORTS_H_
