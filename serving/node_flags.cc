#include "serving/node_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "security/tls.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (required)");
ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "host:port to serve on (port 0 picks a free port)");
ABSL_FLAG(std::string, advertise, "",
          "host:port other processes use to reach this node (default: the "
          "bound listen address)");
ABSL_FLAG(std::string, router, "", "router host:port (required)");
ABSL_FLAG(int32_t, metrics_port, 0,
          "serve Prometheus metrics (GET /metrics) and GET /health over HTTP "
          "on this port of --listen's host; 0 = off");
ABSL_FLAG(std::string, backend, "auto",
          "cpu, cuda, or auto (cuda when a GPU is visible, else cpu)");
ABSL_FLAG(int32_t, device, 0,
          "CUDA device index for the cuda backend (the first of the "
          "tensor-parallel ranks)");
ABSL_FLAG(int32_t, tensor_parallel_size, 1,
          "ranks the model is split over (Megatron; must divide the heads): "
          "CUDA devices --device onwards, or threads on the CPU backend. "
          "Prefill and decode nodes may use different sizes");
ABSL_FLAG(int32_t, block_size, 16, "tokens per KV block");
ABSL_FLAG(int32_t, num_kv_blocks, 0,
          "KV cache blocks of this node; 0 = on a GPU, what "
          "--kv-cache-memory-fraction leaves after weights and activations; "
          "on the CPU, 1024 (prefill) / 4096 (decode)");
ABSL_FLAG(double, kv_cache_memory_fraction, 0.9,
          "share of the GPU's memory this node may use in all (weights, "
          "activations, KV pool) when --num-kv-blocks is 0; lower it when "
          "several nodes share one GPU");
ABSL_FLAG(int32_t, max_num_batched_tokens, 2048,
          "tokens per forward step (the chunked-prefill budget)");
ABSL_FLAG(int32_t, max_num_seqs, 0,
          "requests per forward step; 0 = 256 (prefill) / 64 (decode)");
ABSL_FLAG(int32_t, rank, 0, "rank shown in log lines");
ABSL_FLAG(std::string, scheduling, "piggyback",
          "what a step's token budget goes to first: piggyback (one token of "
          "every running decode, then prefill chunks fill the rest: SARATHI / "
          "vLLM chunked prefill) or prefill-first (prefill steps pause the "
          "decodes until no prompt is left to prefill; vLLM v0's order)");
ABSL_FLAG(bool, enable_prefix_caching, true,
          "keep computed KV blocks addressed by their tokens and reuse them "
          "for prompts that share a prefix (only the uncached rest is "
          "computed); idle cached blocks are evicted least recently used "
          "first when the pool needs room. --noenable-prefix-caching turns "
          "it off");
ABSL_FLAG(std::string, kv_transport, "auto",
          "how KV moves from prefill to decode nodes: auto (CUDA IPC between "
          "GPU nodes on one host, UCX otherwise; the router picks per pair), "
          "ucx (anywhere; GPU pools staged through pinned host memory) or "
          "cuda-ipc (both nodes on one host with the cuda backend: copies "
          "straight into the decode node's GPU pool) or nccl (cuda backend, "
          "GPU to GPU across GPUs and hosts: packed NCCL messages; both "
          "nodes of the same tensor-parallel size)");

namespace duet::serving {

absl::StatusOr<NodeFlags> ReadNodeFlags(int32_t default_max_num_seqs,
                                        int32_t default_cpu_blocks) {
  NodeFlags f;
  f.addresses = {absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_router),
                 absl::GetFlag(FLAGS_listen), absl::GetFlag(FLAGS_advertise)};
  f.addresses.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  DUET_RETURN_IF_ERROR(ValidateNodeAddresses(f.addresses));
  DUET_ASSIGN_OR_RETURN(f.addresses.tls,
                        security::ReadTlsFlags(security::Party::kRole));
  f.backend.kind = absl::GetFlag(FLAGS_backend);
  f.backend.device = absl::GetFlag(FLAGS_device);
  if (f.backend.kind != "auto" && f.backend.kind != "cpu" &&
      f.backend.kind != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--backend must be auto, cpu or cuda, got '", f.backend.kind, "'"));
  }
  if (f.backend.device < 0) {
    return absl::InvalidArgumentError("--device must be >= 0");
  }
  f.runner.block_size = absl::GetFlag(FLAGS_block_size);
  f.runner.num_kv_blocks = absl::GetFlag(FLAGS_num_kv_blocks);
  f.runner.kv_cache_memory_fraction =
      absl::GetFlag(FLAGS_kv_cache_memory_fraction);
  f.runner.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  f.runner.cpu_default_blocks = default_cpu_blocks;
  f.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  if (f.max_num_seqs == 0) f.max_num_seqs = default_max_num_seqs;
  f.rank = absl::GetFlag(FLAGS_rank);
  f.tensor_parallel_size = absl::GetFlag(FLAGS_tensor_parallel_size);
  if (f.tensor_parallel_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tensor-parallel-size must be >= 1, got ", f.tensor_parallel_size));
  }
  auto scheduling =
      runtime::ParseSchedulingPolicy(absl::GetFlag(FLAGS_scheduling));
  if (!scheduling.ok()) return scheduling.status();
  f.scheduling = *scheduling;
  f.enable_prefix_caching = absl::GetFlag(FLAGS_enable_prefix_caching);
  f.kv_transport = absl::GetFlag(FLAGS_kv_transport);
  if (f.kv_transport != "auto" && f.kv_transport != "ucx" &&
      f.kv_transport != "cuda-ipc" && f.kv_transport != "nccl") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv-transport must be auto, ucx, cuda-ipc or nccl, got '",
        f.kv_transport, "'"));
  }
  if (f.runner.block_size <= 0 || f.runner.max_num_batched_tokens <= 0 ||
      f.max_num_seqs <= 0) {
    return absl::InvalidArgumentError(
        "--block-size, --max-num-batched-tokens and --max-num-seqs must be "
        "> 0");
  }
  if (f.runner.num_kv_blocks < 0) {
    return absl::InvalidArgumentError("--num-kv-blocks must be >= 0");
  }
  if (!(f.runner.kv_cache_memory_fraction > 0 &&
        f.runner.kv_cache_memory_fraction <= 1)) {
    return absl::InvalidArgumentError(
        "--kv-cache-memory-fraction must be in (0, 1]");
  }
  return f;
}

absl::StatusOr<std::unique_ptr<runtime::ModelRunner>> MakeNodeRunner(
    const NodeFlags& flags) {
  DUET_ASSIGN_OR_RETURN(
      std::vector<runtime::BackendChoice> backends,
      runtime::MakeBackends(flags.backend, flags.tensor_parallel_size));
  for (const auto& b : backends) DUET_LOG(INFO) << b.description;
  DUET_ASSIGN_OR_RETURN(
      std::unique_ptr<runtime::ModelRunner> runner,
      runtime::ModelRunner::Create(std::move(backends), flags.addresses.model,
                                   flags.runner));
  if (runner->tensor_parallel_size() > 1) {
    DUET_LOG(INFO) << "tensor-parallel size " << runner->tensor_parallel_size();
  }
  DUET_LOG(INFO) << "KV pool: " << runner->PoolSummary();
  return runner;
}

}  // namespace duet::serving
