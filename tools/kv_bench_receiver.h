// duet-kv-bench's decode side: a KV pool and one transport's receiver over
// it, driven by requests from the sender (the prefill side): open a
// transport, describe a request's blocks, land it (optionally checksumming
// the landed blocks), drop it. Normally in a child process forked before
// any CUDA or UCX call (CUDA IPC cannot open a handle in the process that
// exported it); for the in-process transport in the sender's own process.
#ifndef DUET_TOOLS_KV_BENCH_RECEIVER_H_
#define DUET_TOOLS_KV_BENCH_RECEIVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/backend.h"
#include "kv_transfer/in_process.h"
#include "kv_transfer/kv_transfer.h"
#include "tools/kv_bench_common.h"

namespace duet::tools::kv_bench {

// The in-process receiver's registry name.
inline constexpr char kInProcessName[] = "duet-kv-bench";

struct ReceiverConfig {
  std::string backend;  // "cpu" or "cuda"
  int device = 0;
  kv_transfer::KvLayout layout;
  int32_t num_blocks = 0;  // the pool; a request takes blocks [0, n)
  std::string ucx_tls;     // UcxOptions::transports
};

class ReceiverSide {
 public:
  static absl::StatusOr<std::unique_ptr<ReceiverSide>> Create(
      const ReceiverConfig& config);
  ~ReceiverSide();

  // Executes one request (ReceiverClient's encoding) and returns the reply.
  std::string Handle(absl::string_view request);
  // Where the in-process receiver registers (senders of this process).
  kv_transfer::InProcessRegistry& registry() { return registry_; }

 private:
  explicit ReceiverSide(const ReceiverConfig& config) : config_(config) {}
  absl::Status Open(BenchTransport transport);

  const ReceiverConfig config_;
  kv_transfer::InProcessRegistry registry_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<BenchPool> pool_;
  std::unique_ptr<kv_transfer::KvReceiver> receiver_;
  // Blocks of each described key (for the checksum after Land).
  absl::flat_hash_map<uint64_t, int32_t> described_;
};

// The receiver process: creates the side, sends its creation status as the
// first message on `fd`, then answers requests until the sender closes the
// channel. The process exit code.
int ServeReceiver(const ReceiverConfig& config, int fd);

// The sender's handle on a receiver side, through `call` (a request in, the
// reply out: a Channel to another process, or ReceiverSide::Handle).
class ReceiverClient {
 public:
  using Call = std::function<absl::StatusOr<std::string>(std::string)>;
  explicit ReceiverClient(Call call) : call_(std::move(call)) {}

  // Replaces the side's receiver by one of `transport` over its pool.
  absl::Status Open(BenchTransport transport);
  // Describes request `key` into pool blocks [0, n).
  absl::StatusOr<kv_transfer::KvDescriptor> Describe(uint64_t key, int32_t n);
  struct Landed {
    double land_ms = 0;     // Land, and the backend synchronized after it
    uint64_t checksum = 0;  // of the landed blocks, when asked for
  };
  absl::StatusOr<Landed> Land(uint64_t key, bool checksum);
  absl::Status Drop(uint64_t key);

 private:
  Call call_;
};

}  // namespace duet::tools::kv_bench

#endif  // DUET_TOOLS_KV_BENCH_RECEIVER_H_
