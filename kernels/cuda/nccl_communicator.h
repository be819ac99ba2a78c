// The NCCL Communicator (kernels/communicator.h): one rank per GPU, its
// operations queued on that rank's CUDA stream. Plain C++ header (no NCCL
// or CUDA types), so callers need neither.
//
// Every communicator is non-blocking (ncclConfig_t.blocking = 0): init,
// group ends and collectives return at once, and this class polls
// ncclCommGetAsyncError with a deadline, so a peer that never shows up is
// DEADLINE_EXCEEDED and an ncclCommAbort, never a hang. The communicator
// is finalized and destroyed (or aborted) with its owner.
#ifndef DUET_KERNELS_CUDA_NCCL_COMMUNICATOR_H_
#define DUET_KERNELS_CUDA_NCCL_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/communicator.h"

namespace duet::kernels {

// The size of an NCCL unique id on the wire (ncclUniqueId, 128 bytes).
inline constexpr size_t kNcclUniqueIdBytes = 128;

// A fresh unique id, made by rank 0 and handed to every rank (in the
// process, or over gRPC between processes).
absl::StatusOr<std::string> NewNcclUniqueId();

struct NcclCommunicatorOptions {
  int rank = 0;
  int size = 1;
  std::string unique_id;  // kNcclUniqueIdBytes bytes from NewNcclUniqueId
  int device = 0;         // the CUDA device of this rank
  // cudaStream_t the operations go on (not owned). Null: the communicator
  // makes a non-blocking stream of its own (a KV channel's, which must not
  // queue behind the forward pass) and destroys it last.
  void* stream = nullptr;
  absl::Duration timeout = absl::Seconds(60);  // init and every operation
};

// Joins the group: blocks until every rank has joined (at most `timeout`,
// then DEADLINE_EXCEEDED). INVALID_ARGUMENT for a bad rank/size, a unique
// id of the wrong size.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const NcclCommunicatorOptions& options);

}  // namespace duet::kernels

#endif  // DUET_KERNELS_CUDA_NCCL_COMMUNICATOR_H_
