// Chunked-prefill attention over the paged cache, FlashAttention-2 style on
// bf16 tensor cores (mma.sync m16n8k16, fp32 accumulation).
//
// Tiling: a CTA of 4 warps owns kRows = 64 query rows of one sequence and
// one KV head, where row r is (token tok0 + r / kGroup, head kvh * kGroup +
// r % kGroup): the query heads of a GQA group are rows of the same tile, so
// each K/V tile loaded to shared memory serves the whole group. Each warp
// owns 16 rows and keeps their Q fragments, their output accumulator and
// their online-softmax state in registers. K/V tiles of kKeys = 64 keys are
// gathered through the block table with cp.async into a two-stage ring, so
// the next tile streams in while the current one is multiplied.
//
// Causality: row r may see keys 0 .. prefix + token(r). The CTA stops at the
// last key its last token sees; keys beyond a row's limit are masked to -inf
// in the scores. Rows past the sequence's last token (a partial last tile)
// are computed on zeros and never stored.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/device_status.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_utils.cuh"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/dispatch.h"

namespace duet::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = kWarps * 16;  // query rows per CTA
constexpr int kKeys = 64;           // keys per K/V tile
constexpr int kStages = 2;

// Shared-memory row of one key: head_dim elements plus 16 bytes of padding,
// which makes the 8 row addresses of every ldmatrix phase hit distinct
// banks (row stride = 16 mod 128 bytes).
template <int kHeadDim>
inline constexpr int kSmemStride = kHeadDim + 8;
template <int kHeadDim>
inline constexpr size_t kSmemBytes =
    size_t{kStages} * 2 * kKeys * kSmemStride<kHeadDim> * sizeof(__nv_bfloat16);

template <int kHeadDim, int kGroup>
__global__ void __launch_bounds__(kThreads)
    PrefillAttentionKernel(PagedAttentionParams p) {
  constexpr int kStride = kSmemStride<kHeadDim>;
  constexpr int kTokens = kRows / kGroup;       // tokens per CTA
  constexpr int kQSteps = kHeadDim / 16;        // k-steps of S = Q K^T
  constexpr int kSTiles = kKeys / 8;            // n-tiles of S
  constexpr int kPSteps = kKeys / 16;           // k-steps of O = P V
  constexpr int kOTiles = kHeadDim / 8;         // n-tiles of O
  constexpr int kPiecesPerKey = kHeadDim / 8;   // 16-byte pieces
  static_assert(kSTiles % 2 == 0 && kOTiles % 2 == 0);

  extern __shared__ uint4 smem_raw[];
  auto* smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);

  const int seq = blockIdx.y;
  const int kvh = blockIdx.z;
  const int q_begin = p.query_start[seq];
  const int q_len = p.query_start[seq + 1] - q_begin;
  // Highest tiles first: with causal masking they have the most keys, and
  // starting them early shortens the tail of the launch.
  const int tile = gridDim.x - 1 - blockIdx.x;
  const int tok0 = tile * kTokens;
  if (tok0 >= q_len) return;  // uniform over the CTA
  const int seq_len = p.seq_lens[seq];
  const int prefix = seq_len - q_len;
  const int kv_end = prefix + min(tok0 + kTokens, q_len);  // keys [0, kv_end)
  const int num_tiles = (kv_end + kKeys - 1) / kKeys;

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;  // fragment row group
  const int qd = lane % 4;  // fragment column pair

  // The two rows this thread holds fragments of: r and r + 8 of its warp.
  int row_pos[2];
  const __nv_bfloat16* q_row[2];
  __nv_bfloat16* out_row[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = warp * 16 + g + 8 * i;
    const int tok = tok0 + r / kGroup;
    const int head = kvh * kGroup + r % kGroup;
    const bool valid = tok < q_len;
    const int64_t token = int64_t{q_begin} + (valid ? tok : 0);
    row_pos[i] = valid ? prefix + tok : -1;  // -1 masks every key
    q_row[i] = valid ? p.q + token * p.q_stride + int64_t{head} * kHeadDim
                     : nullptr;
    out_row[i] = valid ? p.out + token * p.out_stride +
                             int64_t{head} * kHeadDim
                       : nullptr;
  }

  // Q fragments for all k-steps, loaded once (rows past the end are zero).
  uint32_t qf[kQSteps][4];
#pragma unroll
  for (int kk = 0; kk < kQSteps; ++kk) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {  // columns 2q.. and 2q+8..
      const int col = kk * 16 + half * 8 + qd * 2;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        qf[kk][half * 2 + i] =
            q_row[i] != nullptr
                ? *reinterpret_cast<const uint32_t*>(q_row[i] + col)
                : 0u;
      }
    }
  }

  const int32_t* table =
      p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const int64_t head_stride = int64_t{p.block_size} * kHeadDim;
  const int64_t kv_stride = p.num_kv_heads * head_stride;
  const __nv_bfloat16* cache_head = p.kv_cache + kvh * head_stride;

  // Gathers keys [it * kKeys, +kKeys) of K and V into `stage`; keys past
  // kv_end are zero so that 0-probability columns never multiply garbage.
  auto load_tile = [&](int it, int stage) {
    __nv_bfloat16* ks = smem + stage * 2 * kKeys * kStride;
    __nv_bfloat16* vs = ks + kKeys * kStride;
    for (int c = threadIdx.x; c < kKeys * kPiecesPerKey; c += kThreads) {
      const int key = c / kPiecesPerKey;
      const int piece = c % kPiecesPerKey;
      const int pos = it * kKeys + key;
      __nv_bfloat16* kd = ks + key * kStride + piece * 8;
      __nv_bfloat16* vd = vs + key * kStride + piece * 8;
      if (pos < kv_end) {
        const int64_t block = table[pos / p.block_size];
        const __nv_bfloat16* src = cache_head + block * 2 * kv_stride +
                                   int64_t{pos % p.block_size} * kHeadDim +
                                   piece * 8;
        CpAsync16(kd, src);
        CpAsync16(vd, src + kv_stride);
      } else {
        *reinterpret_cast<uint4*>(kd) = make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(vd) = make_uint4(0, 0, 0, 0);
      }
    }
  };

  float o[kOTiles][4];
#pragma unroll
  for (int n = 0; n < kOTiles; ++n) {
#pragma unroll
    for (int i = 0; i < 4; ++i) o[n][i] = 0.0f;
  }
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};  // this thread's columns only
  const float scale_log2 = p.scale * kLog2e;

  load_tile(0, 0);
  CpAsyncCommit();
  for (int it = 0; it < num_tiles; ++it) {
    if (it + 1 < num_tiles) {
      load_tile(it + 1, (it + 1) % kStages);
      CpAsyncCommit();
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    const __nv_bfloat16* ks = smem + (it % kStages) * 2 * kKeys * kStride;
    const __nv_bfloat16* vs = ks + kKeys * kStride;

    // S = Q K^T for this warp's 16 rows x kKeys keys.
    float s[kSTiles][4];
#pragma unroll
    for (int j = 0; j < kSTiles; ++j) {
#pragma unroll
      for (int i = 0; i < 4; ++i) s[j][i] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kSTiles; j += 2) {
#pragma unroll
      for (int kk = 0; kk < kQSteps; ++kk) {
        // Matrices: keys of tile j / j+1 (lane bit 4) x columns kk*16 or
        // kk*16+8 (lane bit 3): b0/b1 of tile j, then of tile j+1.
        const int key = (j + (lane >> 4)) * 8 + (lane & 7);
        const int col = kk * 16 + ((lane >> 3) & 1) * 8;
        uint32_t b[4];
        LdMatrixX4(b, ks + key * kStride + col);
        MmaBf16(s[j], qf[kk], b[0], b[1]);
        MmaBf16(s[j + 1], qf[kk], b[2], b[3]);
      }
    }

    // Scale into the log2 domain and apply the causal mask.
    const int key0 = it * kKeys;
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kSTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + j * 8 + qd * 2 + (e & 1);
        const int i = e >> 1;
        s[j][e] = key <= row_pos[i] ? s[j][e] * scale_log2 : -INFINITY;
        tile_max[i] = fmaxf(tile_max[i], s[j][e]);
      }
    }
    float alpha[2];
    float base[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      // The 4 lanes of a row group hold its 64 columns between them.
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 1));
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 2));
      const float new_max = fmaxf(row_max[i], tile_max[i]);
      // A row with nothing visible yet (all -inf) uses base 0 so that
      // exp2(-inf - base) is 0 rather than NaN.
      base[i] = new_max == -INFINITY ? 0.0f : new_max;
      alpha[i] = exp2f(row_max[i] - base[i]);
      row_max[i] = new_max;
      row_sum[i] *= alpha[i];
    }
#pragma unroll
    for (int j = 0; j < kSTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e >> 1;
        s[j][e] = exp2f(s[j][e] - base[i]);
        row_sum[i] += s[j][e];
      }
    }
#pragma unroll
    for (int n = 0; n < kOTiles; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }

    // O += P V. The S accumulator layout of two adjacent n-tiles is exactly
    // the A-fragment layout of one 16-key k-step, so P never leaves
    // registers.
#pragma unroll
    for (int kc = 0; kc < kPSteps; ++kc) {
      const uint32_t a[4] = {PackBf16x2(s[2 * kc][0], s[2 * kc][1]),
                             PackBf16x2(s[2 * kc][2], s[2 * kc][3]),
                             PackBf16x2(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                             PackBf16x2(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
      for (int n = 0; n < kOTiles; n += 2) {
        // Transposed: keys kc*16 + (lane & 15) x columns of tile n / n+1.
        const int key = kc * 16 + (lane & 15);
        const int col = (n + (lane >> 4)) * 8;
        uint32_t b[4];
        LdMatrixX4Trans(b, vs + key * kStride + col);
        MmaBf16(o[n], a, b[0], b[1]);
        MmaBf16(o[n + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // this stage is refilled two iterations from now
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 1);
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (out_row[i] == nullptr) continue;
    const float inv = 1.0f / row_sum[i];  // > 0: key 0 is always visible
#pragma unroll
    for (int n = 0; n < kOTiles; ++n) {
      *reinterpret_cast<uint32_t*>(out_row[i] + n * 8 + qd * 2) =
          PackBf16x2(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
    }
  }
}

}  // namespace

absl::Status LaunchPrefillAttention(const PagedAttentionParams& p,
                                    cudaStream_t stream) {
  if (p.num_tokens == 0) return absl::OkStatus();
  if (p.num_seqs > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefill attention: ", p.num_seqs, " sequences in one step (max 65535)"));
  }
  return DispatchHeadDim(p.head_dim, "prefill attention", [&](auto hd) {
    constexpr int kHd = decltype(hd)::value;
    return DispatchGroupSize(
        p.num_heads, p.num_kv_heads, "prefill attention", [&](auto group) {
          constexpr int kGroup = decltype(group)::value;
          constexpr int kTokens = kRows / kGroup;
          constexpr size_t kSmem = kSmemBytes<kHd>;
          auto* kernel = &PrefillAttentionKernel<kHd, kGroup>;
          if (kSmem > 48 * 1024) {
            // Above 48 KiB a kernel must opt in to dynamic shared memory.
            DUET_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
                kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                static_cast<int>(kSmem)));
          }
          const dim3 grid(
              static_cast<unsigned>(CeilDiv(p.max_query_len, kTokens)),
              static_cast<unsigned>(p.num_seqs),
              static_cast<unsigned>(p.num_kv_heads));
          kernel<<<grid, kThreads, kSmem, stream>>>(p);
          DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
          return absl::OkStatus();
        });
  });
}

}  // namespace duet::kernels::cuda
