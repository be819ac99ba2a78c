#include "serving/convert.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kv_transfer/cuda_ipc.h"
#include "kv_transfer/kv_channel.h"

namespace duet::serving {
namespace {
constexpr size_t kMaxUcxWorkerAddressBytes = 16 << 10;
constexpr size_t kMaxUcxRkeyBytes = 4 << 10;
}  // namespace

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

namespace {

v1::DType ToProtoDType(DType d) {
  switch (d) {
    case DType::kF32:
      return v1::DTYPE_F32;
    case DType::kBF16:
      return v1::DTYPE_BF16;
    case DType::kF16:
      return v1::DTYPE_F16;
  }
  return v1::DTYPE_UNSPECIFIED;
}

}  // namespace

v1::KvLayout ToProto(const kv_transfer::KvLayout& l) {
  v1::KvLayout p;
  p.set_num_layers(l.num_layers);
  p.set_num_kv_heads(l.num_kv_heads);
  p.set_head_dim(l.head_dim);
  p.set_block_size(l.block_size);
  p.set_dtype(ToProtoDType(l.dtype));
  p.set_tp_rank(l.tp_rank);
  p.set_tp_size(l.tp_size);
  return p;
}

absl::StatusOr<kv_transfer::KvLayout> FromProto(const v1::KvLayout& p) {
  kv_transfer::KvLayout l;
  switch (p.dtype()) {
    case v1::DTYPE_F32:
      l.dtype = DType::kF32;
      break;
    case v1::DTYPE_BF16:
      l.dtype = DType::kBF16;
      break;
    case v1::DTYPE_F16:
      l.dtype = DType::kF16;
      break;
    default:
      return absl::InvalidArgumentError("KV layout has no dtype");
  }
  constexpr uint32_t kMax = 1u << 20;
  if (p.num_layers() == 0 || p.num_kv_heads() == 0 || p.head_dim() == 0 ||
      p.block_size() == 0 || p.tp_size() == 0 || p.num_layers() > kMax ||
      p.num_kv_heads() > kMax || p.head_dim() > kMax || p.block_size() > kMax ||
      p.tp_size() > kMax || p.tp_rank() >= p.tp_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV layout out of range: ", p.ShortDebugString()));
  }
  l.num_layers = static_cast<int32_t>(p.num_layers());
  l.num_kv_heads = static_cast<int32_t>(p.num_kv_heads());
  l.head_dim = static_cast<int32_t>(p.head_dim());
  l.block_size = static_cast<int32_t>(p.block_size());
  l.tp_rank = static_cast<int32_t>(p.tp_rank());
  l.tp_size = static_cast<int32_t>(p.tp_size());
  return l;
}

namespace {

// One receiving rank's endpoint fields.
void FillEndpoint(const kv_transfer::KvDescriptor& r, v1::KvRankEndpoint* ep) {
  ep->set_tp_rank(r.layout.tp_rank);
  switch (r.transport) {
    case kv_transfer::Transport::kInProcess:
      break;
    case kv_transfer::Transport::kUcx:
      ep->set_ucx_worker_address(r.ucx_worker_address);
      for (const std::string& rkey : r.ucx_rkeys) ep->add_rkeys(rkey);
      for (uint64_t base : r.remote_layer_base) {
        ep->add_remote_base_addresses(base);
      }
      break;
    case kv_transfer::Transport::kCudaIpc:
      for (const std::string& h : r.cuda_ipc_handles) {
        ep->add_cuda_ipc_handles(h);
      }
      ep->set_host_id(r.host_id);
      ep->set_gpu_uuid(r.gpu_uuid);
      break;
    case kv_transfer::Transport::kNccl:
      ep->set_channel_pool_id(r.endpoint_name);
      ep->set_channel_secret(r.channel_secret);
      break;
  }
}

// Checks and copies one endpoint into `d` (whose shared fields are set).
absl::Status ParseEndpoint(const v1::KvRankEndpoint& ep,
                           kv_transfer::KvDescriptor* d) {
  switch (d->transport) {
    case kv_transfer::Transport::kInProcess:
      return absl::OkStatus();
    case kv_transfer::Transport::kUcx: {
      if (ep.ucx_worker_address().empty() ||
          ep.rkeys_size() != d->layout.num_layers ||
          ep.remote_base_addresses_size() != d->layout.num_layers) {
        return absl::InvalidArgumentError(absl::StrCat(
            "UCX KV descriptor needs a worker address and one rkey and base "
            "address per layer (",
            d->layout.num_layers, "), got ", ep.rkeys_size(), " rkeys and ",
            ep.remote_base_addresses_size(), " bases"));
      }
      // Sizes before UCX sees the blobs: a packed worker address is a few
      // hundred bytes (a few KiB with many RDMA devices), an rkey tens to
      // hundreds; anything far outside is not one (docs/SECURITY.md).
      if (ep.ucx_worker_address().size() > kMaxUcxWorkerAddressBytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("UCX KV descriptor: worker address of ",
                         ep.ucx_worker_address().size(), " bytes (at most ",
                         kMaxUcxWorkerAddressBytes, ")"));
      }
      for (int l = 0; l < ep.rkeys_size(); ++l) {
        if (ep.rkeys(l).empty() || ep.rkeys(l).size() > kMaxUcxRkeyBytes) {
          return absl::InvalidArgumentError(absl::StrCat(
              "UCX KV descriptor: rkey of layer ", l, " is ",
              ep.rkeys(l).size(), " bytes (1 to ", kMaxUcxRkeyBytes, ")"));
        }
      }
      d->ucx_worker_address = ep.ucx_worker_address();
      d->ucx_rkeys.assign(ep.rkeys().begin(), ep.rkeys().end());
      d->remote_layer_base.assign(ep.remote_base_addresses().begin(),
                                  ep.remote_base_addresses().end());
      return absl::OkStatus();
    }
    case kv_transfer::Transport::kCudaIpc:
      d->cuda_ipc_handles.assign(ep.cuda_ipc_handles().begin(),
                                 ep.cuda_ipc_handles().end());
      d->host_id = ep.host_id();
      d->gpu_uuid = ep.gpu_uuid();
      // Sizes here; the host is the sender's to compare with its own.
      return kv_transfer::CheckCudaIpcDescriptor(*d, d->layout, d->host_id);
    case kv_transfer::Transport::kNccl:
      // control_address is never read from the wire: the prefill node sets
      // it to the decode node it asked (prefill_service.cc).
      if (ep.channel_pool_id().empty() || ep.channel_pool_id().size() > 64 ||
          ep.channel_secret().size() != kv_transfer::kKvChannelSecretBytes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "NCCL KV descriptor needs a pool id (1 to 64 bytes) and a ",
            kv_transfer::kKvChannelSecretBytes, "-byte secret"));
      }
      d->endpoint_name = ep.channel_pool_id();
      d->channel_secret = ep.channel_secret();
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unknown KV transport");
}

}  // namespace

v1::KvTransferDescriptor ToProto(const kv_transfer::KvDescriptor& d) {
  v1::KvTransferDescriptor p;
  p.mutable_block_ids()->Add(d.block_ids.begin(), d.block_ids.end());
  p.set_num_blocks(d.num_blocks);
  p.set_first_block(static_cast<uint32_t>(d.first_block));
  *p.mutable_layout() = ToProto(d.layout);
  p.set_transport(ToProto(d.transport));
  if (d.transport == kv_transfer::Transport::kInProcess) {
    p.set_decode_node_address(d.endpoint_name);
  }
  if (d.ranks.empty()) {
    FillEndpoint(d, p.add_ranks());
  } else {
    for (const kv_transfer::KvDescriptor& r : d.ranks) {
      FillEndpoint(r, p.add_ranks());
    }
  }
  return p;
}

absl::StatusOr<kv_transfer::KvDescriptor> FromProto(
    const v1::KvTransferDescriptor& p) {
  kv_transfer::KvDescriptor d;
  DUET_ASSIGN_OR_RETURN(d.layout, FromProto(p.layout()));
  d.block_ids.assign(p.block_ids().begin(), p.block_ids().end());
  d.num_blocks = p.num_blocks();
  if (d.num_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV descriptor addresses ", d.num_blocks, " blocks (must be > 0)"));
  }
  // A request's logical blocks fit the model context; this bound only keeps
  // the sum first_block + index far from overflow.
  if (p.first_block() > (1u << 24)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV descriptor first_block ", p.first_block(), " is out of range"));
  }
  d.first_block = static_cast<int32_t>(p.first_block());
  for (int32_t id : d.block_ids) {
    if (id < 0 || id >= d.num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV descriptor has block id ", id, " outside [0, ",
                       d.num_blocks, ")"));
    }
  }
  switch (p.transport()) {
    case v1::KV_TRANSPORT_IN_PROCESS:
      d.transport = kv_transfer::Transport::kInProcess;
      d.endpoint_name = p.decode_node_address();
      if (d.layout.tp_size != 1) {
        return absl::InvalidArgumentError(
            "in-process KV descriptors name one receiver (TP=1 only)");
      }
      return d;
    case v1::KV_TRANSPORT_UCX:
      d.transport = kv_transfer::Transport::kUcx;
      break;
    case v1::KV_TRANSPORT_CUDA_IPC:
      d.transport = kv_transfer::Transport::kCudaIpc;
      break;
    case v1::KV_TRANSPORT_NCCL:
      d.transport = kv_transfer::Transport::kNccl;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "unsupported KV transport ", v1::KvTransport_Name(p.transport())));
  }
  // One endpoint per receiving rank, in rank order.
  if (p.ranks_size() != d.layout.tp_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV descriptor of tensor-parallel size ", d.layout.tp_size,
                     " has ", p.ranks_size(), " rank endpoints"));
  }
  for (int r = 0; r < p.ranks_size(); ++r) {
    if (p.ranks(r).tp_rank() != static_cast<uint32_t>(r)) {
      return absl::InvalidArgumentError(absl::StrCat("KV descriptor endpoint ",
                                                     r, " says it is rank ",
                                                     p.ranks(r).tp_rank()));
    }
  }
  if (d.layout.tp_size == 1) {
    d.layout.tp_rank = 0;
    DUET_RETURN_IF_ERROR(ParseEndpoint(p.ranks(0), &d));
    return d;
  }
  kv_transfer::KvDescriptor shared = d;
  for (int r = 0; r < p.ranks_size(); ++r) {
    kv_transfer::KvDescriptor one = shared;
    one.layout.tp_rank = r;
    DUET_RETURN_IF_ERROR(ParseEndpoint(p.ranks(r), &one));
    d.ranks.push_back(std::move(one));
  }
  // The top level is rank 0's (what a TP=1 reader would use).
  kv_transfer::KvDescriptor top = d.ranks[0];
  top.layout.tp_rank = 0;
  top.ranks = std::move(d.ranks);
  return top;
}

v1::KvTransport ToProto(kv_transfer::Transport transport) {
  switch (transport) {
    case kv_transfer::Transport::kInProcess:
      return v1::KV_TRANSPORT_IN_PROCESS;
    case kv_transfer::Transport::kUcx:
      return v1::KV_TRANSPORT_UCX;
    case kv_transfer::Transport::kCudaIpc:
      return v1::KV_TRANSPORT_CUDA_IPC;
    case kv_transfer::Transport::kNccl:
      return v1::KV_TRANSPORT_NCCL;
  }
  return v1::KV_TRANSPORT_UNSPECIFIED;
}

absl::StatusOr<std::optional<kv_transfer::Transport>> FromProto(
    v1::KvTransport transport) {
  switch (transport) {
    case v1::KV_TRANSPORT_UNSPECIFIED:
      return std::optional<kv_transfer::Transport>();
    case v1::KV_TRANSPORT_IN_PROCESS:
      return kv_transfer::Transport::kInProcess;
    case v1::KV_TRANSPORT_UCX:
      return kv_transfer::Transport::kUcx;
    case v1::KV_TRANSPORT_CUDA_IPC:
      return kv_transfer::Transport::kCudaIpc;
    case v1::KV_TRANSPORT_NCCL:
      return kv_transfer::Transport::kNccl;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "unsupported KV transport ", v1::KvTransport_Name(transport)));
  }
}

absl::StatusOr<model::SamplingParams> FromProto(const v1::SamplingParams& p) {
  model::SamplingParams s;
  s.temperature = p.temperature();
  s.top_k = p.top_k();
  s.top_p = p.top_p() == 0.0f ? 1.0f : p.top_p();
  if (!p.has_seed()) {
    return absl::InvalidArgumentError(
        "sampling.seed must be set by the router before reaching a node");
  }
  s.seed = p.seed();
  s.max_tokens = p.max_tokens();
  s.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  s.ignore_eos = p.ignore_eos();
  s.presence_penalty = p.presence_penalty();
  s.frequency_penalty = p.frequency_penalty();
  s.repetition_penalty =
      p.repetition_penalty() == 0.0f ? 1.0f : p.repetition_penalty();
  s.min_p = p.min_p();
  s.logprobs = p.logprobs();
  s.top_logprobs = p.top_logprobs();
  // The checks that need no vocabulary; same messages as the engine's.
  model::SamplingParams ranges = s;
  ranges.stop_token_ids.clear();
  ranges.max_tokens = 1;
  ranges.temperature = 0.0f;
  ranges.top_k = 0;
  ranges.top_p = 1.0f;
  if (absl::Status st = model::ValidateSamplingParams(ranges, 0); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.", st.message()));
  }
  return s;
}

v1::TokenLogprobs ToProto(const kernels::TokenLogprobs& l) {
  v1::TokenLogprobs p;
  p.set_logprob(l.logprob);
  const int n = std::clamp(l.num_top, 0, kernels::kMaxTopLogprobs);
  p.mutable_top_token_ids()->Add(l.top_ids, l.top_ids + n);
  p.mutable_top_logprobs()->Add(l.top_logprobs, l.top_logprobs + n);
  return p;
}

absl::StatusOr<kernels::TokenLogprobs> FromProto(const v1::TokenLogprobs& p) {
  if (p.top_token_ids_size() != p.top_logprobs_size() ||
      p.top_token_ids_size() > kernels::kMaxTopLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token logprobs: ", p.top_token_ids_size(), " top ids and ",
        p.top_logprobs_size(), " top logprobs (equal, at most ",
        kernels::kMaxTopLogprobs, ")"));
  }
  kernels::TokenLogprobs l;
  l.logprob = p.logprob();
  l.num_top = p.top_token_ids_size();
  std::copy(p.top_token_ids().begin(), p.top_token_ids().end(), l.top_ids);
  std::copy(p.top_logprobs().begin(), p.top_logprobs().end(), l.top_logprobs);
  return l;
}

}  // namespace duet::serving
