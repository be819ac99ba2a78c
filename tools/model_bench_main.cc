// duet-model-bench: the whole forward pass on the GPU, measured against the
// hardware floors measured in the same run.
//
//   decode step (batch B, context C): forward + greedy draw on the GPU,
//       with CUDA graphs (and without, for comparison), time per step vs
//       floor = (weight bytes + B * C * KV bytes per token) / copy bandwidth
//   prefill of T tokens: time and TFLOP/s vs
//       FLOPs = 2 * linear params * T + causal attention + LM head (1 row)
//       floor = FLOPs / cuBLAS bf16 peak
// Copy bandwidth: device-to-device cudaMemcpy of 1 GiB, counting bytes read
// and written. Peak: cuBLAS bf16 8192^3 GEMM on random data.
//
//   duet-model-bench --model DIR [--batches 1,8,64] [--contexts 512,2048]
//                    [--prefill 512,2048,8192] [--json-out FILE]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/clock.h"
#include "common/flags.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device_info.h"
#include "model/transformer.h"
#include "model/weights.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (required)");
ABSL_FLAG(std::string, batches, "1,8,32,64,128,256", "decode batch sizes");
ABSL_FLAG(std::string, contexts, "512,2048,8192", "decode context lengths");
ABSL_FLAG(std::string, prefill, "512,2048,8192", "prefill prompt lengths");
ABSL_FLAG(std::string, prefill_cached, "0",
          "cached context lengths each --prefill prompt follows (a prefix "
          "cache hit: the prompt is the uncached suffix; 0 = a fresh prompt)");
ABSL_FLAG(int32_t, iters, 20, "timed iterations per point (after 3 warm-up)");
ABSL_FLAG(double, kv_budget_gib, 0, "GPU memory for the KV cache (0 = 80% of free)");
ABSL_FLAG(std::string, json_out, "", "also write the results here");
ABSL_FLAG(int32_t, small_gemm_max_tokens,
          duet::kernels::CudaBackendOptions{}.small_gemm_max_tokens,
          "GEMMs of at most this many tokens on the hand-written kernel "
          "(0: cuBLASLt everywhere, at most 8)");
ABSL_FLAG(int32_t, skinny_gemm_max_tokens,
          duet::kernels::CudaBackendOptions{}.skinny_gemm_max_tokens,
          "GEMMs of more tokens than --small_gemm_max_tokens and at most "
          "this many on the tensor-core weight-streaming kernel (0: none, at "
          "most 32; off by default, see kernels/cuda/cuda_backend.h)");
ABSL_FLAG(int32_t, gemm_autotune_max_tokens,
          duet::kernels::CudaBackendOptions{}.gemm_autotune_max_tokens,
          "cuBLASLt GEMMs of at most this many tokens time the heuristic's "
          "candidates on first use and keep the fastest (0: never)");
ABSL_FLAG(int32_t, skinny_gemm_shape,
          duet::kernels::CudaBackendOptions{}.skinny_gemm_shape,
          "skinny GEMM launch shape (-1: by weight size; 0..10 force one, "
          "kernels/cuda/skinny_gemm.cu)");
ABSL_FLAG(bool, prefill_split_kv,
          duet::kernels::CudaBackendOptions{}.prefill_split_kv,
          "prefill attention splits the keys of few query tiles over CTAs "
          "(a short suffix after a long cached prefix)");
ABSL_FLAG(int32_t, prefill_warp_rows,
          duet::kernels::CudaBackendOptions{}.prefill_warp_rows,
          "query rows per warp of the tensor-core prefill attention (16 or "
          "32)");

ABSL_FLAG(bool, pdl, duet::kernels::CudaBackendOptions{}.programmatic_launch,
          "launch decode-path kernels as programmatic dependents (sm_90+)");

ABSL_FLAG(int32_t, small_gemm_shape,
          duet::kernels::CudaBackendOptions{}.small_gemm_shape,
          "small GEMM launch shape at 1-2 tokens (-1: by weight size; 0..10 force one, "
          "kernels/cuda/small_gemm.cu)");

namespace {

using duet::BlockId;
using duet::kernels::AttentionMode;

int Fail(const std::string& msg) {
  std::fprintf(stderr, "duet-model-bench: %s\n", msg.c_str());
  return 1;
}

// The values >= `min` of a comma-separated list (others are skipped, so
// "--batches 0" runs no decode points).
std::vector<int32_t> ParseList(const std::string& s, int32_t min = 1) {
  std::vector<int32_t> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int32_t v;
    if (absl::SimpleAtoi(p, &v) && v >= min) out.push_back(v);
  }
  return out;
}

#define CHECK_CUDA(x)                                                     \
  do {                                                                    \
    cudaError_t e = (x);                                                  \
    if (e != cudaSuccess) return Fail(std::string(#x) + ": " +            \
                                      cudaGetErrorString(e));             \
  } while (0)

// cuBLAS bf16 GEMM throughput on random data, FLOP/s.
int MeasureGemmPeak(double* flops) {
  constexpr int kN = 8192;
  const size_t elems = size_t{kN} * kN;
  std::vector<__nv_bfloat16> host(elems);
  uint64_t x = 88172645463325252ull;
  for (auto& v : host) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v = __float2bfloat16(static_cast<float>(x % 2001) / 1000.0f - 1.0f);
  }
  __nv_bfloat16 *a, *b, *c;
  CHECK_CUDA(cudaMalloc(reinterpret_cast<void**>(&a), elems * 2));
  CHECK_CUDA(cudaMalloc(reinterpret_cast<void**>(&b), elems * 2));
  CHECK_CUDA(cudaMalloc(reinterpret_cast<void**>(&c), elems * 2));
  CHECK_CUDA(cudaMemcpy(a, host.data(), elems * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(b, host.data(), elems * 2, cudaMemcpyHostToDevice));
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return Fail("cublasCreate");
  const float alpha = 1, beta = 0;
  auto gemm = [&] {
    return cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, kN, kN, kN, &alpha, a,
                        CUDA_R_16BF, kN, b, CUDA_R_16BF, kN, &beta, c,
                        CUDA_R_16BF, kN, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT);
  };
  for (int i = 0; i < 3; ++i) gemm();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  constexpr int kIters = 10;
  cudaEventRecord(start);
  for (int i = 0; i < kIters; ++i) gemm();
  cudaEventRecord(stop);
  CHECK_CUDA(cudaEventSynchronize(stop));
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  *flops = 2.0 * kN * kN * double{kN} * kIters / (ms * 1e-3);
  cublasDestroy(h);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "GPU forward-pass benchmark against measured hardware floors.\n"
      "Usage: duet-model-bench --model DIR");
  duet::ParseFlags(argc, argv);
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) {
    std::fprintf(stderr, "duet-model-bench: --model is required\n");
    return 2;
  }
  auto devices = duet::kernels::cuda::ListDevices();
  if (!devices.ok() || devices->empty()) return Fail("no CUDA device");
  std::printf("device: %s, %d SMs, %.1f GiB\n", (*devices)[0].name.c_str(),
              (*devices)[0].multiprocessors,
              (*devices)[0].total_memory_bytes / double(1 << 30));
  double bandwidth = 0, peak = 0;
  if (auto bw = duet::kernels::cuda::MeasureCopyBandwidth(0); bw.ok()) {
    bandwidth = *bw;
  } else {
    return Fail(bw.status().ToString());
  }
  if (int rc = MeasureGemmPeak(&peak); rc != 0) return rc;
  std::printf("measured copy bandwidth %.0f GB/s (read+write), cuBLAS bf16 "
              "peak %.0f TFLOP/s\n",
              bandwidth / 1e9, peak / 1e12);

  duet::kernels::CudaBackendOptions options;
  options.small_gemm_max_tokens = absl::GetFlag(FLAGS_small_gemm_max_tokens);
  options.prefill_warp_rows = absl::GetFlag(FLAGS_prefill_warp_rows);
  options.prefill_split_kv = absl::GetFlag(FLAGS_prefill_split_kv);
  options.programmatic_launch = absl::GetFlag(FLAGS_pdl);
  options.small_gemm_shape = absl::GetFlag(FLAGS_small_gemm_shape);
  options.skinny_gemm_max_tokens = absl::GetFlag(FLAGS_skinny_gemm_max_tokens);
  options.skinny_gemm_shape = absl::GetFlag(FLAGS_skinny_gemm_shape);
  options.gemm_autotune_max_tokens =
      absl::GetFlag(FLAGS_gemm_autotune_max_tokens);
  auto backend = duet::kernels::MakeCudaBackend(0, options);
  if (!backend.ok()) return Fail(backend.status().ToString());
  duet::Stopwatch load;
  auto model = duet::model::Transformer::Load(dir, std::move(*backend));
  if (!model.ok()) return Fail(model.status().ToString());
  const auto& c = (*model)->config();
  int64_t weight_bytes = 0, linear_params = 0;
  for (const auto& w : duet::model::ExpectedWeights(c)) {
    const int64_t n = duet::NumElements(w.shape);
    if (w.kind != duet::model::WeightKind::kEmbedding || c.tie_word_embeddings) {
      weight_bytes += n * 2;  // the embedding table is only gathered
    }
    if (w.kind == duet::model::WeightKind::kLinear && w.name != "lm_head.weight") {
      linear_params += n;
    }
  }
  std::printf("model %s: %d layers, hidden %d, %d/%d heads, loaded in %.1f s; "
              "weights read per decode step %.2f GB\n",
              dir.c_str(), c.num_layers, c.hidden_size, c.num_heads,
              c.num_kv_heads, load.ElapsedMs() / 1e3, weight_bytes / 1e9);
  const int64_t kv_bytes_per_token =
      int64_t{c.num_layers} * 2 * c.num_kv_heads * c.head_dim * 2;

  constexpr int32_t kBlock = 16;
  size_t free_bytes = 0, total_bytes = 0;
  cudaMemGetInfo(&free_bytes, &total_bytes);
  const double budget = absl::GetFlag(FLAGS_kv_budget_gib) > 0
                            ? absl::GetFlag(FLAGS_kv_budget_gib) * (1 << 30)
                            : 0.8 * static_cast<double>(free_bytes);
  const int64_t block_bytes = kv_bytes_per_token * kBlock;
  const int32_t num_blocks = static_cast<int32_t>(budget / block_bytes);
  auto cache = (*model)->AllocateKvCache(kBlock, num_blocks);
  if (!cache.ok()) return Fail(cache.status().ToString());
  std::printf("KV cache: %d blocks (%.1f GiB)\n", num_blocks,
              num_blocks * double(block_bytes) / (1 << 30));
  const int iters = absl::GetFlag(FLAGS_iters);
  nlohmann::json results = {{"device", (*devices)[0].name},
                            {"copy_bandwidth_gbs", bandwidth / 1e9},
                            {"gemm_peak_tflops", peak / 1e12},
                            {"model", dir},
                            {"decode", nlohmann::json::array()},
                            {"prefill", nlohmann::json::array()}};

  std::printf("\n%-8s %-8s %12s %12s %8s %12s\n", "batch", "context",
              "step_ms", "floor_ms", "ratio", "no_graph_ms");
  for (int32_t ctx : ParseList(absl::GetFlag(FLAGS_contexts))) {
    for (int32_t batch : ParseList(absl::GetFlag(FLAGS_batches))) {
      const int32_t per_seq = duet::model::BlocksForTokens(ctx + 1, kBlock);
      if (int64_t{per_seq} * batch > num_blocks) {
        std::printf("%-8d %-8d %12s  (KV of %.1f GiB does not fit)\n", batch,
                    ctx, "-", double(per_seq) * batch * block_bytes / (1 << 30));
        continue;
      }
      std::vector<std::vector<BlockId>> tables(batch);
      std::vector<int32_t> tokens(batch);
      std::vector<duet::model::SeqChunk> chunks;
      for (int32_t b = 0; b < batch; ++b) {
        for (int32_t i = 0; i < per_seq; ++i) {
          tables[b].push_back(BlockId(b * per_seq + i));
        }
        tokens[b] = 1000 + b;
        chunks.push_back({{&tokens[b], 1}, ctx, tables[b]});
      }
      auto step = duet::model::BuildStep(AttentionMode::kDecode, chunks, kBlock);
      if (!step.ok()) return Fail(step.status().ToString());
      // What a decode node does per step: forward + greedy draw on the GPU,
      // token ids back to the host.
      const std::vector<duet::kernels::SampleSpec> specs(batch);
      auto time_steps = [&](bool graphs, double* ms) -> absl::Status {
        (*model)->set_step_graphs(graphs);
        for (int i = 0; i < 3; ++i) {
          auto r = (*model)->ForwardSample(*step, *cache, kBlock, specs);
          if (!r.ok()) return r.status();
        }
        duet::Stopwatch clock;
        for (int i = 0; i < iters; ++i) {
          auto r = (*model)->ForwardSample(*step, *cache, kBlock, specs);
          if (!r.ok()) return r.status();
        }
        *ms = clock.ElapsedMs() / iters;
        return absl::OkStatus();
      };
      double eager_ms = 0, ms = 0;
      if (absl::Status st = time_steps(false, &eager_ms); !st.ok()) {
        return Fail(st.ToString());
      }
      if (absl::Status st = time_steps(true, &ms); !st.ok()) {
        return Fail(st.ToString());
      }
      const double floor_ms =
          (weight_bytes + double(batch) * ctx * kv_bytes_per_token) /
          bandwidth * 1e3;
      std::printf("%-8d %-8d %12.3f %12.3f %8.2f %12.3f\n", batch, ctx, ms,
                  floor_ms, ms / floor_ms, eager_ms);
      results["decode"].push_back({{"batch", batch}, {"context", ctx},
                                   {"step_ms", ms}, {"floor_ms", floor_ms},
                                   {"ratio", ms / floor_ms},
                                   {"eager_step_ms", eager_ms}});
    }
  }

  // Prefill of t new tokens after `cached` tokens already in the cache (a
  // prefix-cache hit computes only the suffix). Its floor is the larger of
  // the FLOPs at the measured GEMM peak and the bytes it must read (every
  // weight once, the cached KV once) at the copy bandwidth: a short suffix
  // is weight streaming, like decode.
  std::printf("\n%-8s %-8s %12s %10s %12s %12s %8s %8s\n", "prompt",
              "cached", "time_ms", "TFLOP/s", "flop_floor", "byte_floor",
              "of peak", "x floor");
  for (int32_t cached :
       ParseList(absl::GetFlag(FLAGS_prefill_cached), /*min=*/0)) {
    for (int32_t t : ParseList(absl::GetFlag(FLAGS_prefill))) {
      const int32_t total = cached + t;
      const int32_t blocks = duet::model::BlocksForTokens(total, kBlock);
      if (blocks > num_blocks || total > c.max_position_embeddings) continue;
      std::vector<BlockId> table;
      for (int32_t i = 0; i < blocks; ++i) table.push_back(BlockId(i));
      std::vector<int32_t> prompt(total);
      for (int32_t i = 0; i < total; ++i) prompt[i] = (i * 7919) % 100000;
      if (cached > 0) {
        // The cached context's KV, written once as a real prefill would.
        const duet::model::SeqChunk head{
            std::span<const int32_t>(prompt.data(), cached), 0, table};
        auto step = duet::model::BuildStep(AttentionMode::kPrefill,
                                           {&head, 1}, kBlock);
        if (!step.ok()) return Fail(step.status().ToString());
        if (auto r = (*model)->Forward(*step, *cache, kBlock); !r.ok()) {
          return Fail(r.status().ToString());
        }
      }
      const duet::model::SeqChunk chunk{
          std::span<const int32_t>(prompt.data() + cached, t), cached, table};
      auto step = duet::model::BuildStep(AttentionMode::kPrefill, {&chunk, 1},
                                         kBlock);
      if (!step.ok()) return Fail(step.status().ToString());
      for (int i = 0; i < 2; ++i) {
        auto r = (*model)->Forward(*step, *cache, kBlock);
        if (!r.ok()) return Fail(r.status().ToString());
      }
      const int n = std::max(3, iters / 4);
      duet::Stopwatch clock;
      for (int i = 0; i < n; ++i) {
        if (auto r = (*model)->Forward(*step, *cache, kBlock); !r.ok()) {
          return Fail(r.status().ToString());
        }
      }
      const double ms = clock.ElapsedMs() / n;
      // Causal attention: QK^T and PV, each new token over the cached keys
      // and the new ones up to itself.
      const double pairs = double(t) * cached + double(t) * (t + 1) / 2;
      const double attn =
          4.0 * c.num_layers * c.num_heads * c.head_dim * pairs;
      const double flops = 2.0 * linear_params * t + attn +
                           2.0 * c.hidden_size * double{c.vocab_size};
      const double flop_floor = flops / peak * 1e3;
      const double byte_floor =
          (weight_bytes + double(total) * kv_bytes_per_token) / bandwidth * 1e3;
      const double floor_ms = std::max(flop_floor, byte_floor);
      std::printf("%-8d %-8d %12.3f %10.1f %12.3f %12.3f %7.1f%% %8.2f\n", t,
                  cached, ms, flops / (ms * 1e-3) / 1e12, flop_floor,
                  byte_floor, 100.0 * flop_floor / ms, ms / floor_ms);
      results["prefill"].push_back(
          {{"tokens", t}, {"cached", cached}, {"time_ms", ms},
           {"tflops", flops / (ms * 1e-3) / 1e12}, {"floor_ms", flop_floor},
           {"byte_floor_ms", byte_floor},
           {"fraction_of_peak", flop_floor / ms}});
    }
  }
  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) std::ofstream(json_out) << results.dump(2) << "\n";
  return 0;
}
