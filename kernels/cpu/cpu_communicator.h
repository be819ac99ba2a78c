// A Communicator whose ranks are threads of one process (kernels/
// communicator.h): tensor parallelism on the CPU backend, so CI runs TP=2
// and TP=4 without a GPU. Written by hand because no Debian package offers
// in-process collectives over plain host buffers with the reproducible
// reduction order the TP-vs-TP=1 tests need (MPI and gloo are
// process-level and order reductions their own way).
//
// An all-reduce is one rendezvous: the last rank to arrive sums every
// rank's buffer in rank order 0..N-1 (BF16 in fp32, rounded once) and
// writes the sum into all of them while the others wait, so the result is
// bit-identical on every rank and from run to run.
#ifndef DUET_KERNELS_CPU_CPU_COMMUNICATOR_H_
#define DUET_KERNELS_CPU_CPU_COMMUNICATOR_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/communicator.h"

namespace duet::kernels {

// `size` communicators of one group, rank i at index i; each is used by one
// thread. `timeout` bounds every blocking point (a rank that waits longer
// for its peers aborts the group). INVALID_ARGUMENT for size < 1 or a
// non-positive timeout.
absl::StatusOr<std::vector<std::unique_ptr<Communicator>>>
CreateCpuCommunicators(int size, absl::Duration timeout);

}  // namespace duet::kernels

#endif  // DUET_KERNELS_CPU_CPU_COMMUNICATOR_H_
