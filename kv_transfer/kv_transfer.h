// Moving KV-cache blocks from a prefill node's pool into a decode node's pool.
//
// One interface, several transports (UCX, in-process; NCCL later). The decode
// side (KvReceiver) exposes its pool and describes it in a KvDescriptor that
// travels to the prefill side inside the Reserve reply; the prefill side
// (KvSender) writes blocks straight into the described blocks. A Send returns
// OK only once the data is visible in the receiver's memory (UCX: after an
// endpoint flush), so the decode node may use the blocks as soon as the
// completion reaches it through the control plane (router -> Decode RPC).
//
// No gRPC, UCX or CUDA type appears here (pimpl in the .cc files); nodes
// convert KvDescriptor to and from duet.v1.KvTransferDescriptor.
#ifndef DUET_KV_TRANSFER_KV_TRANSFER_H_
#define DUET_KV_TRANSFER_KV_TRANSFER_H_

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

enum class Transport { kInProcess, kUcx };

// Where a request's KV goes: the destination blocks and how to reach them.
struct KvDescriptor {
  Transport transport = Transport::kInProcess;
  KvLayout layout;
  std::vector<int32_t> block_ids;  // destination block per logical block
  // kInProcess: the receiver's registry name. kUcx: unused.
  std::string endpoint_name;
  // kUcx: the receiver's packed worker address, one packed rkey and one base
  // address per layer.
  std::string ucx_worker_address;
  std::vector<std::string> ucx_rkeys;
  std::vector<uint64_t> remote_layer_base;
};

// One block to copy: logical block index i of the request, from the sender's
// physical block `src` into descriptor.block_ids[i].
struct BlockCopy {
  int32_t src_block = 0;
  int32_t logical_block = 0;
};

class KvReceiver {
 public:
  virtual ~KvReceiver() = default;
  // Fills the transport fields of a descriptor for `block_ids` of this pool.
  virtual absl::StatusOr<KvDescriptor> Describe(
      std::span<const int32_t> block_ids) = 0;
};

class KvSender {
 public:
  virtual ~KvSender() = default;
  // Copies `copies` (every layer) into `dest`. Returns OK once the bytes are
  // visible at the receiver; DEADLINE_EXCEEDED after `timeout`; UNAVAILABLE
  // when the receiver cannot be reached; InvalidArgument on a layout mismatch
  // or a block index outside either pool / the descriptor.
  virtual absl::Status Send(const KvDescriptor& dest,
                            std::span<const BlockCopy> copies,
                            absl::Duration timeout) = 0;
};

}  // namespace duet::kv_transfer

#endif  // DUET_KV_TRANSFER_KV_TRANSFER_H_
