// The collective interface beside Backend: what tensor parallelism needs
// from a group of ranks (DESIGN.md §2, §5). Two implementations:
// - kernels/cpu/cpu_communicator.h: ranks are threads of one process,
//   buffers are host memory, reductions run in a fixed rank order (so a TP
//   run is reproducible and CI runs tensor parallelism without a GPU);
// - kernels/cuda/nccl_communicator.h: one NCCL communicator per rank,
//   operations queued on the rank's CUDA stream.
//
// Semantics shared by both:
// - Operations are issued by every rank in the same order (the collective
//   contract); a buffer is this rank's memory of the backend that owns it.
// - AllReduceSum/Send/Recv are ordered on the rank's stream: the CPU
//   implementation finishes them before returning, NCCL only queues them;
//   Wait() returns once every queued operation of this rank is done.
// - Between GroupStart() and GroupEnd(), Send and Recv do not block each
//   other (a ring exchange inside a group cannot deadlock); GroupEnd issues
//   them together.
// - Nothing waits without a bound: every blocking point has the timeout the
//   communicator was created with (or the one passed), and a rank that
//   times out aborts the whole group: its call returns DEADLINE_EXCEEDED,
//   every other rank's pending and later calls return ABORTED. An aborted
//   communicator stays aborted (create a new one).
#ifndef DUET_KERNELS_COMMUNICATOR_H_
#define DUET_KERNELS_COMMUNICATOR_H_

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/tensor.h"

namespace duet::kernels {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In-place sum of `buf` over the ranks. F32 and BF16 (BF16 sums in fp32
  // and rounds once on the CPU; NCCL's order is its own). Every rank passes
  // the same dtype and element count (INVALID_ARGUMENT otherwise where the
  // implementation can tell).
  virtual absl::Status AllReduceSum(TensorView buf) = 0;

  // Point to point: `buf` to / from `peer` (0 <= peer < size(), peer may be
  // this rank only inside a group). Sizes must match on both sides.
  virtual absl::Status Send(TensorView buf, int peer) = 0;
  virtual absl::Status Recv(TensorView buf, int peer) = 0;

  virtual void GroupStart() = 0;
  virtual absl::Status GroupEnd() = 0;

  // Blocks until every operation this rank issued is complete, at most
  // `timeout` (then the group is aborted: DEADLINE_EXCEEDED).
  virtual absl::Status Wait(absl::Duration timeout) = 0;

  // Aborts the group from any thread: blocked and later calls on every
  // rank return ABORTED. Idempotent.
  virtual void Abort() = 0;
  virtual bool aborted() const = 0;
};

}  // namespace duet::kernels

#endif  // DUET_KERNELS_COMMUNICATOR_H_
