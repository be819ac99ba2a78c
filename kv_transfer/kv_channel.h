// The channel transport (`--kv-transport nccl`): KV moves GPU to GPU over a
// two-rank kernels::Communicator per (prefill rank, decode rank) pair, NCCL
// between processes (DESIGN.md §4), the CPU communicator in tests, so CI
// runs the whole protocol without a GPU.
//
// A communicator only moves bytes; which bytes and where they go travels
// beside it on the decode node's control plane (gRPC in the nodes, direct
// calls in tests), through two calls:
// - Open(sender rank): the receiver makes a communicator id, starts joining
//   as rank 1 in the background and grants {channel id, communicator id,
//   largest message}; the sender joins as rank 0. Cached per (receiver,
//   sender rank, receiver rank) on the sender, until an error.
// - Push(header): one message of a request's KV. The sender packs the
//   blocks (every layer of the range, [layer][i][block]) into its send
//   buffer with one copy (KvCopyQueue::Copy into a packed view), issues
//   Push and Send together; the receiver checks the header, posts the Recv
//   into its receive buffer, scatters it into the reservation's blocks and
//   answers once they hold the bytes. So Send returns OK only when the KV
//   is in the decode pool (a direct receiver: Land moves nothing).
//
// What the receiver trusts: nothing from the header but logical block
// indices. Destination blocks are the ones Describe was given for the key;
// the header names the request only by the per-request secret Describe put
// in the descriptor (UNAUTHENTICATED when no request has it), follow the
// channel's sequence (pushes on a channel are serialized, so NCCL's in-order
// matching holds), and name a size equal to its blocks x layers. A refused push
// aborts the channel, which fails the sender's pending Send at once (never a
// hang).
#ifndef DUET_KV_TRANSFER_KV_CHANNEL_H_
#define DUET_KV_TRANSFER_KV_CHANNEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/backend.h"
#include "kernels/communicator.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kv_transfer {

// Makes the two-rank communicators of channels: rank 0 the sender, rank 1
// the receiver. Thread-safe.
class CommunicatorFactory {
 public:
  virtual ~CommunicatorFactory() = default;
  // A fresh id for one channel (the receiver makes it).
  virtual absl::StatusOr<std::string> NewId() = 0;
  // Joins the channel `id` as `rank` (0 or 1); blocks until the other rank
  // joined, at most `timeout`. Operations on the result are bounded by
  // `timeout` too.
  virtual absl::StatusOr<std::unique_ptr<kernels::Communicator>> Join(
      const std::string& id, int rank, absl::Duration timeout) = 0;
};

// NCCL between processes on `device` (each communicator on a stream of its
// own). UNIMPLEMENTED in a build without NCCL.
absl::StatusOr<std::shared_ptr<CommunicatorFactory>>
MakeNcclCommunicatorFactory(int device);

// What a receiver grants a sender for one channel.
struct KvChannelGrant {
  uint64_t channel_id = 0;
  std::string communicator_id;
  // The largest message the receiver takes (its receive buffer).
  int64_t max_message_bytes = 0;
};

// One message of one request's KV: `logical_blocks` (indices into the
// request's Describe ids) x layers [layer_begin, layer_end), packed
// [layer][i][block_bytes], `bytes` in all.
struct KvChannelPush {
  uint64_t channel_id = 0;
  uint64_t seq = 0;  // 0, 1, 2, ... per channel
  // The request's channel_secret from its descriptor: it names the request
  // (the sender knows no request id) and proves the sender was handed it.
  std::string secret;
  std::vector<int32_t> logical_blocks;
  int32_t layer_begin = 0;
  int32_t layer_end = 0;
  int64_t bytes = 0;
};

// Longest secret / most blocks a push header may carry (checked at the
// RPC edge before anything else reads them).
inline constexpr size_t kKvChannelSecretBytes = 16;
inline constexpr int kMaxBlocksPerPush = 1 << 20;

// The receiving side's control face: what the node's gRPC service calls.
class KvChannelServer {
 public:
  virtual ~KvChannelServer() = default;
  // A new channel for sender rank `sender_rank` (for the message only; each
  // Open is its own channel). RESOURCE_EXHAUSTED when the receiver already
  // keeps its maximum of channels, none of them idle.
  virtual absl::StatusOr<KvChannelGrant> Open(int32_t sender_rank) = 0;
  // Receives one message (see the file comment); returns once its blocks
  // hold the bytes, or the error. FAILED_PRECONDITION for an unknown or
  // closed channel (the sender opens a new one), UNAUTHENTICATED for a
  // secret no described request has (never described, released, expired),
  // INVALID_ARGUMENT for a header that does not fit the reservation.
  virtual absl::Status Push(const KvChannelPush& push, absl::Time deadline) = 0;
};

// The sending side's way to reach a receiver's KvChannelServer: the
// receiver is `dest` (its control_address and endpoint_name, and
// layout.tp_rank for the rank).
class KvChannelClient {
 public:
  virtual ~KvChannelClient() = default;
  virtual absl::StatusOr<KvChannelGrant> Open(const KvDescriptor& dest,
                                              int32_t sender_rank,
                                              absl::Time deadline) = 0;
  virtual absl::Status Push(const KvDescriptor& dest, const KvChannelPush& push,
                            absl::Time deadline) = 0;
};

struct KvChannelOptions {
  // Send / receive buffer, device memory of the pool's backend: messages
  // are cut to fit it. 64 MiB keeps NCCL near its large-message rate
  // (281 GB/s at 16 MiB on NVLink, DESIGN.md §4) at a small footprint.
  int64_t buffer_bytes = int64_t{64} << 20;
  // Joining a channel, and each message, is bounded by this (or the send's
  // deadline, whichever comes first).
  absl::Duration join_timeout = absl::Seconds(30);
  // Receiver: most channels kept at once; the least recently used idle
  // one is closed to make room.
  int max_channels = 64;
};

// The receiver of one rank's pool, both faces. `backend` owns the pool
// and must outlive the receiver.
class KvChannelReceiver : public KvReceiver, public KvChannelServer {};

absl::StatusOr<std::unique_ptr<KvChannelReceiver>> MakeKvChannelReceiver(
    const KvPoolView& pool, kernels::Backend* backend,
    std::shared_ptr<CommunicatorFactory> factory,
    const KvChannelOptions& options = {});

// The sender of one rank's pool (`sender_rank` of its node). Whole blocks
// only: SendSlice (heterogeneous TP) answers FAILED_PRECONDITION, and the
// router uses UCX for nodes of different TP sizes.
absl::StatusOr<std::unique_ptr<KvSender>> MakeKvChannelSender(
    const KvPoolView& pool, kernels::Backend* backend, int32_t sender_rank,
    std::shared_ptr<CommunicatorFactory> factory,
    std::shared_ptr<KvChannelClient> client,
    const KvChannelOptions& options = {});

}  // namespace duet::kv_transfer

#endif  // DUET_KV_TRANSFER_KV_CHANNEL_H_
