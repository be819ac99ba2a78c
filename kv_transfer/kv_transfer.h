// Moving KV-cache blocks from a prefill node's pool into a decode node's pool.
//
// One interface, several transports (UCX, in-process; NCCL later). The decode
// side (KvReceiver) exposes its pool and describes it in a KvDescriptor that
// travels to the prefill side inside the Reserve reply; the prefill side
// (KvSender) writes blocks into the described blocks. A Send returns OK only
// once the data is visible in the receiver's memory (UCX: after an endpoint
// flush); when the completion reaches the decode node through the control
// plane (router -> Decode RPC) it calls KvReceiver::Land, after which the
// blocks hold the KV. Direct receivers (the sender writes the pool itself)
// land nothing; staged ones (a GPU pool behind host staging) copy it in.
//
// No gRPC, UCX or CUDA type appears here (pimpl in the .cc files); nodes
// convert KvDescriptor to and from duet.v1.KvTransferDescriptor.
#ifndef DUET_KV_TRANSFER_KV_TRANSFER_H_
#define DUET_KV_TRANSFER_KV_TRANSFER_H_

#include <climits>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/dtype.h"
#include "common/tensor.h"
#include "kernels/backend.h"

namespace duet::kv_transfer {

// The KV layout both sides must agree on (DESIGN.md §2). A mismatch is an
// error, never a silent reinterpretation.
struct KvLayout {
  int32_t num_layers = 0;
  int32_t num_kv_heads = 0;  // whole model
  int32_t head_dim = 0;
  int32_t block_size = 0;
  DType dtype = DType::kF32;
  int32_t tp_rank = 0;
  int32_t tp_size = 1;

  // Bytes of one block of one layer on one rank: K and V of the rank's heads.
  int64_t block_bytes() const;
  friend bool operator==(const KvLayout&, const KvLayout&) = default;
};
std::string KvLayoutString(const KvLayout& layout);
// InvalidArgument naming both layouts when they differ.
absl::Status CheckSameLayout(const KvLayout& expected, const KvLayout& got);

// A node's KV pool as memory: per layer, `num_blocks` contiguous blocks of
// layout.block_bytes() bytes starting at layer_base[l].
struct KvPoolView {
  KvLayout layout;
  int32_t num_blocks = 0;
  std::vector<void*> layer_base;  // [num_layers]
  Device device = Device::kCpu;
};

enum class Transport { kInProcess, kUcx, kCudaIpc, kNccl };
// "in-process", "ucx", "cuda-ipc", "nccl" (the --kv-transport names).
const char* TransportName(Transport transport);

// Where a request's KV goes: the destination blocks and how to reach them.
struct KvDescriptor {
  Transport transport = Transport::kInProcess;
  KvLayout layout;
  // Destination block of logical block first_block + i. The blocks before
  // first_block the receiver already holds (its prefix cache, shared with
  // other requests): senders never write them, and callers index copies
  // from first_block (BlockCopy::logical_block 0 is logical block
  // first_block of the request).
  std::vector<int32_t> block_ids;
  int32_t first_block = 0;
  // How many destination blocks the descriptor addresses per layer: every
  // id in block_ids is below it (the receiver's pool size, or the staging
  // slots of this request on a staged receiver). Senders reject a
  // descriptor with an id outside [0, num_blocks) before any byte moves,
  // so a forged or corrupted descriptor cannot write past what the
  // receiver exposed.
  int32_t num_blocks = 0;
  // kInProcess: the receiver's registry name. kNccl: the receiving
  // pool's instance id (channels are cached per instance, so a restarted
  // decode node gets new ones). kUcx: unused.
  std::string endpoint_name;
  // kNccl: the secret a push of this request must present (random per
  // Describe, so only who was handed the descriptor can write its blocks).
  std::string channel_secret;
  // kNccl: where the sender reaches the receiver's control plane (the
  // decode node's gRPC address). Never taken from the wire: the prefill
  // node sets it to the address it asked for the descriptor.
  std::string control_address;
  // kUcx: the receiver's packed worker address, one packed rkey and one base
  // address per layer.
  std::string ucx_worker_address;
  std::vector<std::string> ucx_rkeys;
  std::vector<uint64_t> remote_layer_base;
  // kCudaIpc: one cudaIpcMemHandle_t (64 bytes) per layer's pool, the
  // receiving host's boot id (a sender on another host must not open the
  // handles) and the receiving GPU's UUID (16 bytes).
  std::vector<std::string> cuda_ipc_handles;
  std::string host_id;
  std::string gpu_uuid;
  // A receiver of tensor-parallel size M > 1: one descriptor per receiving
  // rank r (layout.tp_rank = r, its own endpoint fields; transport, block
  // ids and num_blocks as above, which every rank shares). Empty when the
  // receiver has one rank: this descriptor is that rank's.
  std::vector<KvDescriptor> ranks;
};

// The descriptor of receiving rank `rank` (`d` itself for one rank).
const KvDescriptor& DescriptorForRank(const KvDescriptor& d, int32_t rank);

struct TransferSlice;  // transfer_plan.h

// One block to copy: logical block index i of the request, from the sender's
// physical block `src` into descriptor.block_ids[i].
struct BlockCopy {
  int32_t src_block = 0;
  int32_t logical_block = 0;
};

// The decode side. A request's KV goes through three calls keyed by the
// caller's request id: Describe (at reservation), then Land (the sender
// reported completion) or Drop (the reservation ended without it).
// Describe, Land and Drop are thread-safe.
class KvReceiver {
 public:
  virtual ~KvReceiver() = default;
  // Describes where a sender writes the KV of request `key` whose logical
  // block i goes to pool block block_ids[i]. A staged receiver also takes
  // staging space for those blocks (RESOURCE_EXHAUSTED when it has none
  // free), held until Land or Drop. InvalidArgument for an id outside the
  // pool or listed twice; AlreadyExists for a key already described.
  virtual absl::StatusOr<KvDescriptor> Describe(
      uint64_t key, std::span<const int32_t> block_ids) = 0;
  // As Describe, over `transport` (the one the router chose for this
  // request's prefill node). A receiver of one transport describes over its
  // own only: InvalidArgument naming both for another.
  virtual absl::StatusOr<KvDescriptor> DescribeFor(
      Transport transport, uint64_t key, std::span<const int32_t> block_ids);
  // The sender reported completion (control plane): makes the KV received
  // for `key` visible in the pool blocks given to Describe (a staged
  // receiver scatters it in from staging with the backend), then frees the
  // staging space. Must be called on the thread that owns the backend's
  // stream (the engine loop). NotFound for an unknown key.
  virtual absl::Status Land(uint64_t key) = 0;
  // Forgets `key` without landing (reservation released or expired).
  // Staging space is reused only after a quarantine (UCX over tcp emulates
  // puts: bytes of an abandoned transfer may still land, see
  // docs/ARCHITECTURE.md "quarantine"). Unknown keys are ignored.
  virtual void Drop(uint64_t key) = 0;
  // Forgets `key` whose transfer is known to be complete (the sender
  // reported it) but whose KV is not needed after all (the request ended at
  // its first token, or was cancelled before its first step): what it held
  // is free at once, with no quarantine, since nothing more can arrive.
  // Unknown keys are ignored.
  virtual void Discard(uint64_t key) { Drop(key); }
  // The most blocks one Describe can ever take (a staged receiver's staging
  // slots): a request needing more can never be received here, however
  // long it waits.
  virtual int32_t max_blocks_per_request() const { return INT32_MAX; }
};

// Which layers a send moves: [begin, end), end clamped to the layout's
// layer count (the default: every layer).
struct LayerRange {
  int32_t begin = 0;
  int32_t end = INT32_MAX;
};

class KvSender {
 public:
  virtual ~KvSender() = default;
  // Copies every layer of `copies` into `dest`; the KV is in the local pool
  // already. As SendLayers.
  absl::Status Send(const KvDescriptor& dest, std::span<const BlockCopy> copies,
                    absl::Duration timeout) {
    return SendLayers(dest, copies, LayerRange{}, nullptr, timeout);
  }
  // Copies layers `layers` of `copies` into `dest`, starting once `ready`
  // (a mark of the local pool's backend; null: the KV is there already) is
  // reached. Returns OK once the bytes are visible at the receiver;
  // DEADLINE_EXCEEDED after `timeout` (waiting for `ready` included);
  // UNAVAILABLE when the receiver cannot be reached; InvalidArgument on a
  // layout mismatch, an empty or out-of-range layer range, or a block index
  // outside either pool / the descriptor. Thread-safe; device copies run
  // on the sender's own copy queue (kernels::KvCopyQueue), never on the
  // backend's stream, so a caller thread other than the engine loop's may
  // send while the loop computes.
  virtual absl::Status SendLayers(
      const KvDescriptor& dest, std::span<const BlockCopy> copies,
      LayerRange layers, std::shared_ptr<const kernels::StreamMark> ready,
      absl::Duration timeout) = 0;
  // As SendLayers, for heterogeneous tensor parallelism: moves only
  // `slice` of each block (the heads this rank shares with dest's rank,
  // one K and one V run; see transfer_plan.h) from the local pool of one
  // TP size into `dest`, one rank of another. INVALID_ARGUMENT unless
  // the slice is the one MakeTransferPlan gives for the two ranks.
  // Transports that move whole blocks only answer FAILED_PRECONDITION.
  virtual absl::Status SendSlice(
      const KvDescriptor& dest, std::span<const BlockCopy> copies,
      LayerRange layers, const TransferSlice& slice,
      std::shared_ptr<const kernels::StreamMark> ready, absl::Duration timeout);
};

}  // namespace duet::kv_transfer

#endif  // DUET_KV_TRANSFER_KV_TRANSFER_H_
