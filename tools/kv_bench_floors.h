// duet-kv-bench's floors: what the hardware moves for the same byte count
// without any KV transport in between, measured in the same run. Every
// figure is bytes moved once per second (GB/s = 1e9 bytes/s), as the
// transport figures are; the median of `reps` timed runs after one warm-up.
#ifndef DUET_TOOLS_KV_BENCH_FLOORS_H_
#define DUET_TOOLS_KV_BENCH_FLOORS_H_

#include <cstdint>

#include "absl/status/statusor.h"

namespace duet::tools::kv_bench {

// memcpy between two host buffers of `bytes`.
absl::StatusOr<double> HostCopyGbps(int64_t bytes, int reps);

// `bytes` pushed through one 127.0.0.1 TCP connection between two threads
// of this process, from a host buffer of that size into another one.
absl::StatusOr<double> TcpLoopbackGbps(int64_t bytes, int reps);

// cudaMemcpyAsync of `bytes` between two cudaMalloc buffers of `device`.
// UNIMPLEMENTED without CUDA in the build.
absl::StatusOr<double> DeviceCopyGbps(int device, int64_t bytes, int reps);

struct PinnedCopy {
  double host_to_device_gbps = 0;
  double device_to_host_gbps = 0;
};
// cudaMemcpy of `bytes` between cudaHostAlloc memory and a cudaMalloc buffer
// of `device`, each way. UNIMPLEMENTED without CUDA in the build.
absl::StatusOr<PinnedCopy> PinnedCopyGbps(int device, int64_t bytes, int reps);

}  // namespace duet::tools::kv_bench

#endif  // DUET_TOOLS_KV_BENCH_FLOORS_H_
