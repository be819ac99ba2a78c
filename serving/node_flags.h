// The flags every node binary takes, defined once (node_flags.cc) for
// duet-prefill and duet-decode, and the one way a node builds its model
// runner from them: backend choice (--backend, --device), model, KV pool
// (--block-size, --num-kv-blocks, --kv-cache-memory-fraction) and the
// step limits (--max-num-batched-tokens, --max-num-seqs).
#ifndef DUET_SERVING_NODE_FLAGS_H_
#define DUET_SERVING_NODE_FLAGS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/backend_factory.h"
#include "runtime/model_runner.h"
#include "runtime/scheduler.h"
#include "serving/node_main.h"

namespace duet::serving {

struct NodeFlags {
  NodeAddresses addresses;
  runtime::BackendRequest backend;
  runtime::ModelRunnerOptions runner;
  int32_t max_num_seqs = 0;
  int32_t rank = 0;
  // Ranks the model is split over (--tensor-parallel-size).
  int32_t tensor_parallel_size = 1;
  // "auto", "ucx", "cuda-ipc" or "nccl" (--kv-transport; see
  // serving/kv_transports.h).
  std::string kv_transport = "auto";
  // Order of a step's token budget (--scheduling).
  runtime::SchedulingPolicy scheduling = runtime::SchedulingPolicy::kPiggyback;
  // Reuse cached KV of shared prompt prefixes (--enable-prefix-caching).
  bool enable_prefix_caching = true;
};

// Reads and checks the shared flags (after ParseFlags). A 0 for
// --max-num-seqs takes `default_max_num_seqs`; on the CPU backend a 0 for
// --num-kv-blocks takes `default_cpu_blocks`. InvalidArgument naming the
// flag for a bad value.
absl::StatusOr<NodeFlags> ReadNodeFlags(int32_t default_max_num_seqs,
                                        int32_t default_cpu_blocks);

// Makes the backend, loads the model and sizes the KV pool, logging which
// backend it picked and the pool size in blocks and tokens.
absl::StatusOr<std::unique_ptr<runtime::ModelRunner>> MakeNodeRunner(
    const NodeFlags& flags);

}  // namespace duet::serving

#endif  // DUET_SERVING_NODE_FLAGS_H_
