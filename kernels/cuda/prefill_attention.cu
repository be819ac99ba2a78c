// Chunked-prefill attention over the paged cache, FlashAttention-2 style on
// bf16 tensor cores (mma.sync m16n8k16, fp32 accumulation).
//
// Tiling: a CTA of 4 warps owns a tile of query rows of one sequence and one
// KV head, where row r is (token tok0 + r / kGroup, head kvh * kGroup +
// r % kGroup): the query heads of a GQA group are rows of the same tile, so
// each K/V tile loaded to shared memory serves the whole group. Each warp
// keeps its rows' output accumulators and online-softmax state in
// registers. K/V tiles are gathered through the block table with cp.async
// into a two-stage ring, so the next tile streams in while the current one
// is multiplied.
//
// Two variants (PagedAttentionParams::prefill_warp_rows):
// - 16 rows per warp (64 per CTA, 64-key tiles): Q fragments live in
//   registers. Every warp ldmatrix-reads the whole K and V tile for its 16
//   rows: 0.5 shared-memory fragment loads (512 bytes each) per MMA, which
//   makes the kernel shared-memory-bandwidth bound (~160 TFLOP/s on H100).
// - 32 rows per warp (128 per CTA): each warp owns two 16-row MMA tiles and
//   feeds every K and V fragment it loads to both, as FlashAttention-2 does
//   with kBlockM = 128 and 4 warps. At 64-key tiles and head_dim 128 that is
//   80 loads per 256 MMAs (0.31 per MMA) instead of 64 per 128. The second
//   tile's accumulators (2 x 16 x 4 fp32 for O) leave no registers for Q,
//   so the Q tile sits in shared memory (loaded once per CTA) and its
//   A fragments are ldmatrix-read once per k-step for all key columns.
//   At head_dim 128 a CTA takes 102 KiB of shared memory and 255 registers
//   per thread: 2 CTAs (8 warps) per SM. Tiles whose keys every row of a
//   warp sees skip the causal mask; tiles none of them sees are skipped by
//   that warp.
//
// Split keys: a short chunk after a long cached prefix (a prefix-cache hit:
// 100 new tokens over 2,000 cached ones) has only a few query tiles per KV
// head, so a CTA per tile would leave most SMs idle while each walks the
// whole context. When the tiles are fewer than the SMs, each tile's keys
// are cut into whole 64-key-tile splits, one CTA each; a CTA writes its
// rows' unnormalized O, running max and sum (fp32) to the workspace, and a
// merge kernel weighs the splits by their maxima (log-sum-exp), as
// flash-decoding does across a context.
//
// Causality: row r may see keys 0 .. prefix + token(r). The CTA stops at the
// last key its last token sees; keys beyond a row's limit are masked to -inf
// in the scores and keys past that end are zero in shared memory. Rows past
// the sequence's last token (a partial last tile) are computed on zeros and
// never stored.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/device_status.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_utils.cuh"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/prefill_split.cuh"

namespace duet::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kStages = 2;
constexpr int kKeys16 = 64;  // keys per K/V tile, 16-row variant
// Keys per K/V tile of the 32-row variant: with 64 the S accumulator (2 x 8
// x 4 fp32) and O (2 x 16 x 4) fit in 255 registers at head_dim 128 without
// spills. 32 keys (236-239 registers) still allow only 2 CTAs per SM, and
// read each Q fragment twice as often per key with twice the barriers.
constexpr int kKeys32 = 64;
static_assert(kKeys16 == prefill_split::kSplitTileKeys &&
              kKeys32 == prefill_split::kSplitTileKeys);

// Minimum CTAs per SM for __launch_bounds__: without a hint, ptxas trades a
// few spilled bytes for occupancy on the small head_dim 16 kernels. 0 gives
// no hint: at head_dim 128 the 32-row kernel then uses 255 registers without
// spills, where a hint of 1 or 2 CTAs made ptxas spill 4 bytes.
template <int kHeadDim>
inline constexpr int kMinCtas = kHeadDim == 16 ? 1 : 0;

// Shared-memory row of one key (or query row): head_dim elements plus 16
// bytes of padding, which makes the 8 row addresses of every ldmatrix phase
// hit distinct banks (row stride = 16 mod 128 bytes).
template <int kHeadDim>
inline constexpr int kSmemStride = kHeadDim + 8;

// Shared memory of a variant: the optional Q tile, then the K/V ring.
template <int kHeadDim, int kQRows, int kKeys>
inline constexpr size_t kSmemBytes =
    (size_t{kQRows} + size_t{kStages} * 2 * kKeys) * kSmemStride<kHeadDim> *
    sizeof(__nv_bfloat16);

// Gathers K/V tiles of one (sequence, KV head) through the block table.
template <int kHeadDim>
struct KvGather {
  __device__ KvGather(const PagedAttentionParams& p, int seq, int kvh,
                      int kv_end_)
      : table(p.block_tables +
              static_cast<int64_t>(seq) * p.max_blocks_per_seq),
        cache_head(p.kv_cache + kvh * int64_t{p.block_size} * kHeadDim),
        kv_stride(int64_t{p.num_kv_heads} * p.block_size * kHeadDim),
        div(p.block_size),
        kv_end(kv_end_) {}

  // Keys [first, first + kKeys) of K to ks and of V to ks + kKeys rows
  // (cp.async, not committed); keys past kv_end are zero so that
  // 0-probability columns never multiply garbage.
  template <int kKeys>
  __device__ __forceinline__ void Load(int first, __nv_bfloat16* ks) const {
    constexpr int kStride = kSmemStride<kHeadDim>;
    constexpr int kPieces = kHeadDim / 8;  // 16-byte pieces per key
    __nv_bfloat16* vs = ks + kKeys * kStride;
    for (int c = threadIdx.x; c < kKeys * kPieces; c += kThreads) {
      const int key = c / kPieces;
      const int piece = c % kPieces;
      const int pos = first + key;
      __nv_bfloat16* kd = ks + key * kStride + piece * 8;
      __nv_bfloat16* vd = vs + key * kStride + piece * 8;
      const __nv_bfloat16* src =
          pos < kv_end ? cache_head + int64_t{table[div.Block(pos)]} * 2 *
                                          kv_stride +
                             int64_t{div.Offset(pos)} * kHeadDim + piece * 8
                       : nullptr;
      LoadKvPiece(kd, vd, src, kv_stride);
    }
  }

  const int32_t* table;
  const __nv_bfloat16* cache_head;  // K of block 0 for this KV head
  int64_t kv_stride;                // K -> V within a block
  BlockDivider div;
  int kv_end;
};

// One online-softmax step for a 16-row MMA tile: scales the scores s of
// keys key0 .. key0 + 8 * kSTiles - 1 into the log2 domain, masks keys past
// each row's position (kMask), updates the running max and this thread's
// partial row sums, rescales o, and leaves the probabilities in s.
template <bool kMask, int kSTiles, int kOTiles>
__device__ __forceinline__ void SoftmaxStep(float (&s)[kSTiles][4],
                                            const int (&row_pos)[2], int key0,
                                            int qd, float scale_log2,
                                            float (&row_max)[2],
                                            float (&row_sum)[2],
                                            float (&o)[kOTiles][4]) {
  float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int j = 0; j < kSTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = e >> 1;
      if constexpr (kMask) {
        const int key = key0 + j * 8 + qd * 2 + (e & 1);
        s[j][e] = key <= row_pos[i] ? s[j][e] * scale_log2 : -INFINITY;
      } else {
        s[j][e] *= scale_log2;
      }
      tile_max[i] = fmaxf(tile_max[i], s[j][e]);
    }
  }
  float alpha[2];
  float base[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    // The 4 lanes of a row group hold the tile's columns between them.
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
}

// The P A-fragment of 16-key k-step kc: the S accumulator layout of two
// adjacent n-tiles is exactly the A-fragment layout of one k-step, so P
// never leaves registers.
template <int kSTiles>
__device__ __forceinline__ void PackP(const float (&s)[kSTiles][4], int kc,
                                      uint32_t (&a)[4]) {
  a[0] = PackBf16x2(s[2 * kc][0], s[2 * kc][1]);
  a[1] = PackBf16x2(s[2 * kc][2], s[2 * kc][3]);
  a[2] = PackBf16x2(s[2 * kc + 1][0], s[2 * kc + 1][1]);
  a[3] = PackBf16x2(s[2 * kc + 1][2], s[2 * kc + 1][3]);
}

// Normalizes a 16-row tile's O by the row sums (completed across the 4
// lanes of each row group) and stores the rows that exist (non-null).
template <int kOTiles>
__device__ __forceinline__ void StoreRows(const float (&o)[kOTiles][4],
                                          float (&row_sum)[2],
                                          __nv_bfloat16* const (&out_row)[2],
                                          int qd) {
  SumRowQuads(row_sum);
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

// What a CTA of either kernel covers: query tokens [tok0, tok0 + kTokens)
// of sequence seq (tile order reversed: with causal masking the highest
// tiles have the most keys, and starting them early shortens the tail of
// the launch), which see keys [0, kv_end), of which it takes [key_begin,
// key_end): all of them, or its split's (blockIdx.x = tile * splits +
// split). tok0 >= q_len: nothing to do.
struct CtaSpan {
  __device__ CtaSpan(const PagedAttentionParams& p, int seq, int tokens,
                     int splits)
      : split(static_cast<int>(blockIdx.x) % splits),
        q_begin(p.query_start[seq]),
        q_len(p.query_start[seq + 1] - q_begin),
        tok0((static_cast<int>(gridDim.x) / splits - 1 -
              static_cast<int>(blockIdx.x) / splits) *
             tokens),
        prefix(p.seq_lens[seq] - q_len),
        kv_end(prefix + min(tok0 + tokens, q_len)),
        key_begin(splits > 1 ? split * p.prefill_split_keys : 0),
        key_end(splits > 1 ? min(kv_end, key_begin + p.prefill_split_keys)
                           : kv_end) {}
  // Key tiles [tile_begin, tile_end) of `keys` keys cover [key_begin,
  // key_end); empty for a split past the tile's causal end.
  __device__ int tile_begin(int keys) const { return key_begin / keys; }
  __device__ int tile_end(int keys) const {
    return (key_end + keys - 1) / keys;
  }
  int split;
  int q_begin;
  int q_len;
  int tok0;
  int prefix;
  int kv_end;
  int key_begin;
  int key_end;
};

// 16 rows per warp (prefill_warp_rows = 16): Q fragments in registers.
// kSplit: the launch splits keys (the partial store); a separate
// instantiation so that the unsplit kernel keeps its registers unspilled.
template <int kHeadDim, int kGroup, bool kSplit>
__global__ void __launch_bounds__(kThreads, kMinCtas<kHeadDim>)
    PrefillAttentionKernel(PagedAttentionParams p) {
  constexpr int kKeys = kKeys16;
  constexpr int kRows = kWarps * 16;            // query rows per CTA
  constexpr int kStride = kSmemStride<kHeadDim>;
  constexpr int kTokens = kRows / kGroup;       // tokens per CTA
  constexpr int kQSteps = kHeadDim / 16;        // k-steps of S = Q K^T
  constexpr int kSTiles = kKeys / 8;            // n-tiles of S
  constexpr int kPSteps = kKeys / 16;           // k-steps of O = P V
  constexpr int kOTiles = kHeadDim / 8;         // n-tiles of O
  static_assert(kSTiles % 2 == 0 && kOTiles % 2 == 0);

  extern __shared__ uint4 smem_raw[];
  auto* smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);

  const int seq = blockIdx.y;
  const int kvh = blockIdx.z;
  const CtaSpan span(p, seq, kTokens, kSplit ? p.prefill_splits : 1);
  if (span.tok0 >= span.q_len) return;  // uniform over the CTA
  const int q_begin = span.q_begin;
  const int q_len = span.q_len;
  const int tok0 = span.tok0;
  const int prefix = span.prefix;
  // Key tiles [it_begin, it_end): the whole context or this split's.
  const int it_begin = span.tile_begin(kKeys);
  const int it_end = span.tile_end(kKeys);
  if (kSplit && it_begin >= it_end) {
    prefill_split::StoreEmptySplit<kRows, kGroup, kThreads>(
        p, span.split, span.q_begin, span.q_len, span.tok0, kvh);
    return;
  }

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;  // fragment row group
  const int qd = lane % 4;  // fragment column pair

  // The two rows this thread holds fragments of: r and r + 8 of its warp.
  int row_pos[2];
  const __nv_bfloat16* q_row[2];
  __nv_bfloat16* out_row[2];
  int64_t row[2];  // token * num_heads + head; -1 past the end
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
    row[i] = valid ? token * p.num_heads + head : -1;
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

  const KvGather<kHeadDim> gather(p, seq, kvh, span.key_end);
  float o[kOTiles][4];
#pragma unroll
  for (int n = 0; n < kOTiles; ++n) {
#pragma unroll
    for (int i = 0; i < 4; ++i) o[n][i] = 0.0f;
  }
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};  // this thread's columns only
  const float scale_log2 = p.scale * kLog2e;

  gather.template Load<kKeys>(
      it_begin * kKeys, smem + (it_begin % kStages) * 2 * kKeys * kStride);
  CpAsyncCommit();
  // Tile `it` lives in stage it % kStages (a split starts mid-ring).
  for (int it = it_begin; it < it_end; ++it) {
    if (it + 1 < it_end) {
      gather.template Load<kKeys>(
          (it + 1) * kKeys, smem + ((it + 1) % kStages) * 2 * kKeys * kStride);
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

    SoftmaxStep<true>(s, row_pos, it * kKeys, qd, scale_log2, row_max,
                      row_sum, o);

    // O += P V.
#pragma unroll
    for (int kc = 0; kc < kPSteps; ++kc) {
      uint32_t a[4];
      PackP(s, kc, a);
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

  if constexpr (kSplit) {
    prefill_split::StorePartialRows(p, o, row_max, row_sum, row, qd);
  } else {
    StoreRows(o, row_sum, out_row, qd);
  }
}

// 32 rows per warp (prefill_warp_rows = 32): two 16-row MMA tiles per warp
// (rows warp * 32 + 16 * t + 0..15 for t = 0, 1) share every K and V
// fragment; the Q tile is in shared memory ahead of the K/V ring.
template <int kHeadDim, int kGroup, int kKeys, bool kSplit>
__global__ void __launch_bounds__(kThreads, kMinCtas<kHeadDim>)
    PrefillAttentionKernel2Tiles(PagedAttentionParams p) {
  constexpr int kWarpRows = 32;
  constexpr int kRows = kWarps * kWarpRows;     // query rows per CTA
  constexpr int kStride = kSmemStride<kHeadDim>;
  constexpr int kTokens = kRows / kGroup;       // tokens per CTA
  constexpr int kQSteps = kHeadDim / 16;        // k-steps of S = Q K^T
  constexpr int kSTiles = kKeys / 8;            // n-tiles of S
  constexpr int kPSteps = kKeys / 16;           // k-steps of O = P V
  constexpr int kOTiles = kHeadDim / 8;         // n-tiles of O
  constexpr int kPieces = kHeadDim / 8;         // 16-byte pieces per Q row
  static_assert(kSTiles % 2 == 0 && kOTiles % 2 == 0);

  extern __shared__ uint4 smem_raw[];
  auto* qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [kRows][kStride]
  __nv_bfloat16* ring = qs + kRows * kStride;

  const int seq = blockIdx.y;
  const int kvh = blockIdx.z;
  const CtaSpan span(p, seq, kTokens, kSplit ? p.prefill_splits : 1);
  if (span.tok0 >= span.q_len) return;  // uniform over the CTA
  const int q_begin = span.q_begin;
  const int q_len = span.q_len;
  const int tok0 = span.tok0;
  const int prefix = span.prefix;
  // Key tiles [it_begin, it_end): the whole context or this split's.
  const int it_begin = span.tile_begin(kKeys);
  const int it_end = span.tile_end(kKeys);
  if (kSplit && it_begin >= it_end) {
    prefill_split::StoreEmptySplit<kRows, kGroup, kThreads>(
        p, span.split, span.q_begin, span.q_len, span.tok0, kvh);
    return;
  }

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;  // fragment row group
  const int qd = lane % 4;  // fragment column pair

  // The Q tile, rows past the sequence's end zero; in the same cp.async
  // group as K/V tile 0.
  for (int c = threadIdx.x; c < kRows * kPieces; c += kThreads) {
    const int r = c / kPieces;
    const int piece = c % kPieces;
    const int tok = tok0 + r / kGroup;
    __nv_bfloat16* dst = qs + r * kStride + piece * 8;
    if (tok < q_len) {
      CpAsync16(dst, p.q + (int64_t{q_begin} + tok) * p.q_stride +
                         int64_t{kvh * kGroup + r % kGroup} * kHeadDim +
                         piece * 8);
    } else {
      *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
  }
  const KvGather<kHeadDim> gather(p, seq, kvh, span.key_end);
  gather.template Load<kKeys>(
      it_begin * kKeys, ring + (it_begin % kStages) * 2 * kKeys * kStride);
  CpAsyncCommit();

  // Positions of this thread's rows: tile t, row g + 8 * i (-1 past the
  // end masks every key). The warp's rows see at least keys
  // [0, first_pos] and none past last_pos.
  const int warp_row0 = warp * kWarpRows;
  const int first_tok = tok0 + warp_row0 / kGroup;
  const bool warp_active = first_tok < q_len;  // else no row is stored
  const int first_pos = prefix + first_tok;
  const int last_pos =
      prefix + min(tok0 + (warp_row0 + kWarpRows - 1) / kGroup, q_len - 1);
  int row_pos[2][2];
#pragma unroll
  for (int t = 0; t < 2; ++t) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int tok = tok0 + (warp_row0 + 16 * t + g + 8 * i) / kGroup;
      row_pos[t][i] = tok < q_len ? prefix + tok : -1;
    }
  }
  // A-fragment ldmatrix address of k-step 0, row tile 0: lanes 0-15 give
  // rows 0-15 at columns 0-7 (a0, a1), lanes 16-31 rows 0-15 at 8-15 (a2,
  // a3).
  const __nv_bfloat16* q_frag =
      qs + (warp_row0 + (lane & 15)) * kStride + (lane >> 4) * 8;

  float o[2][kOTiles][4];
#pragma unroll
  for (int t = 0; t < 2; ++t) {
#pragma unroll
    for (int n = 0; n < kOTiles; ++n) {
#pragma unroll
      for (int i = 0; i < 4; ++i) o[t][n][i] = 0.0f;
    }
  }
  float row_max[2][2] = {{-INFINITY, -INFINITY}, {-INFINITY, -INFINITY}};
  float row_sum[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};  // own columns only
  const float scale_log2 = p.scale * kLog2e;

  // Tile `it` lives in stage it % kStages (a split starts mid-ring).
  for (int it = it_begin; it < it_end; ++it) {
    if (it + 1 < it_end) {
      gather.template Load<kKeys>(
          (it + 1) * kKeys, ring + ((it + 1) % kStages) * 2 * kKeys * kStride);
      CpAsyncCommit();
      CpAsyncWait<1>();  // Q and tiles up to `it` have landed
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    const __nv_bfloat16* ks = ring + (it % kStages) * 2 * kKeys * kStride;
    const __nv_bfloat16* vs = ks + kKeys * kStride;
    const int key0 = it * kKeys;

    // Warp-uniform: past last_pos every key of the tile is masked for
    // every row of this warp.
    if (warp_active && key0 <= last_pos) {
      // S = Q K^T for both row tiles: Q fragments once per k-step, each K
      // fragment into two MMAs per row tile.
      float s[2][kSTiles][4];
#pragma unroll
      for (int t = 0; t < 2; ++t) {
#pragma unroll
        for (int j = 0; j < kSTiles; ++j) {
#pragma unroll
          for (int i = 0; i < 4; ++i) s[t][j][i] = 0.0f;
        }
      }
#pragma unroll
      for (int kk = 0; kk < kQSteps; ++kk) {
        uint32_t a[2][4];
        LdMatrixX4(a[0], q_frag + kk * 16);
        LdMatrixX4(a[1], q_frag + 16 * kStride + kk * 16);
#pragma unroll
        for (int j = 0; j < kSTiles; j += 2) {
          // Matrices: keys of tile j / j+1 (lane bit 4) x columns kk*16 or
          // kk*16+8 (lane bit 3): b0/b1 of tile j, then of tile j+1.
          const int key = (j + (lane >> 4)) * 8 + (lane & 7);
          const int col = kk * 16 + ((lane >> 3) & 1) * 8;
          uint32_t b[4];
          LdMatrixX4(b, ks + key * kStride + col);
#pragma unroll
          for (int t = 0; t < 2; ++t) {
            MmaBf16(s[t][j], a[t], b[0], b[1]);
            MmaBf16(s[t][j + 1], a[t], b[2], b[3]);
          }
        }
      }

      // Only tiles reaching past first_pos (the diagonal) need the mask.
      if (key0 + kKeys - 1 <= first_pos) {
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          SoftmaxStep<false>(s[t], row_pos[t], key0, qd, scale_log2,
                             row_max[t], row_sum[t], o[t]);
        }
      } else {
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          SoftmaxStep<true>(s[t], row_pos[t], key0, qd, scale_log2,
                            row_max[t], row_sum[t], o[t]);
        }
      }

      // O += P V, each V fragment into both row tiles.
#pragma unroll
      for (int kc = 0; kc < kPSteps; ++kc) {
        uint32_t a[2][4];
        PackP(s[0], kc, a[0]);
        PackP(s[1], kc, a[1]);
#pragma unroll
        for (int n = 0; n < kOTiles; n += 2) {
          // Transposed: keys kc*16 + (lane & 15) x columns of tile n / n+1.
          const int key = kc * 16 + (lane & 15);
          const int col = (n + (lane >> 4)) * 8;
          uint32_t b[4];
          LdMatrixX4Trans(b, vs + key * kStride + col);
#pragma unroll
          for (int t = 0; t < 2; ++t) {
            MmaBf16(o[t][n], a[t], b[0], b[1]);
            MmaBf16(o[t][n + 1], a[t], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // this stage is refilled two iterations from now
  }

#pragma unroll
  for (int t = 0; t < 2; ++t) {
    __nv_bfloat16* out_row[2];
    int64_t row[2];  // token * num_heads + head; -1 past the end
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = warp_row0 + 16 * t + g + 8 * i;
      const int tok = tok0 + r / kGroup;
      const int head = kvh * kGroup + r % kGroup;
      out_row[i] = tok < q_len
                       ? p.out + (int64_t{q_begin} + tok) * p.out_stride +
                             int64_t{head} * kHeadDim
                       : nullptr;
      row[i] = tok < q_len ? (int64_t{q_begin} + tok) * p.num_heads + head
                           : -1;
    }
    if constexpr (kSplit) {
      prefill_split::StorePartialRows(p, o[t], row_max[t], row_sum[t], row,
                                      qd);
    } else {
      StoreRows(o[t], row_sum[t], out_row, qd);
    }
  }
}

// Launches `kernel` over CTAs of kRows rows (kRows / kGroup tokens).
template <int kRows, int kGroup, size_t kSmem>
absl::Status LaunchVariant(void (*kernel)(PagedAttentionParams),
                           const PagedAttentionParams& p, cudaStream_t stream) {
  constexpr int kTokens = kRows / kGroup;
  if (kSmem > 48 * 1024) {
    // Above 48 KiB a kernel must opt in to dynamic shared memory.
    DUET_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(kSmem)));
  }
  // Several CTAs of ~70-100 KiB per SM need the largest shared-memory
  // carveout (the driver may otherwise size it for one CTA).
  DUET_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
      cudaSharedmemCarveoutMaxShared));
  const dim3 grid(
      static_cast<unsigned>(CeilDiv(p.max_query_len, kTokens) *
                            p.prefill_splits),
      static_cast<unsigned>(p.num_seqs), static_cast<unsigned>(p.num_kv_heads));
  kernel<<<grid, kThreads, kSmem, stream>>>(p);
  DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace

size_t PrefillAttentionWorkspaceBytes(const PagedAttentionParams& p) {
  const prefill_split::PrefillSplitPlan plan = prefill_split::PlanPrefillSplit(
      p, kWarps * (p.prefill_warp_rows == 16 ? 16 : 32));
  if (plan.splits < 2) return 0;
  return size_t{static_cast<size_t>(plan.splits)} *
         static_cast<size_t>(p.num_tokens) *
         static_cast<size_t>(p.num_heads) *
         (static_cast<size_t>(p.head_dim) + 2) * sizeof(float);
}

absl::Status LaunchPrefillAttention(const PagedAttentionParams& params,
                                    cudaStream_t stream) {
  PagedAttentionParams p = params;
  const prefill_split::PrefillSplitPlan plan = prefill_split::PlanPrefillSplit(
      p, kWarps * (p.prefill_warp_rows == 16 ? 16 : 32));
  p.prefill_splits = plan.splits;
  p.prefill_split_keys = plan.split_keys;
  if (plan.splits > 1 && p.workspace == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefill attention: splitting the keys ", plan.splits,
        " ways needs PrefillAttentionWorkspaceBytes of workspace"));
  }
  if (p.prefill_warp_rows != 16 && p.prefill_warp_rows != 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill attention: ", p.prefill_warp_rows,
                     " rows per warp (must be 16 or 32)"));
  }
  if (p.num_tokens == 0) return absl::OkStatus();
  if (p.num_seqs > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefill attention: ", p.num_seqs, " sequences in one step (max 65535)"));
  }
  return DispatchHeadDim(p.head_dim, "prefill attention", [&](auto hd) {
    constexpr int kHd = decltype(hd)::value;
    absl::Status launched = DispatchGroupSize(
        p.num_heads, p.num_kv_heads, "prefill attention", [&](auto group) {
          constexpr int kGroup = decltype(group)::value;
          const bool split = p.prefill_splits > 1;
          if (p.prefill_warp_rows == 16) {
            return LaunchVariant<kWarps * 16, kGroup,
                                 kSmemBytes<kHd, 0, kKeys16>>(
                split ? &PrefillAttentionKernel<kHd, kGroup, true>
                      : &PrefillAttentionKernel<kHd, kGroup, false>,
                p, stream);
          }
          return LaunchVariant<kWarps * 32, kGroup,
                               kSmemBytes<kHd, kWarps * 32, kKeys32>>(
              split ? &PrefillAttentionKernel2Tiles<kHd, kGroup, kKeys32, true>
                    : &PrefillAttentionKernel2Tiles<kHd, kGroup, kKeys32, false>,
              p, stream);
        });
    if (!launched.ok() || p.prefill_splits < 2) return launched;
    const int64_t rows = p.num_tokens * p.num_heads;
    prefill_split::MergePrefillSplitsKernel<kHd, kWarps>
        <<<static_cast<unsigned>(CeilDiv(rows, kWarps)), kThreads, 0,
           stream>>>(p);
    DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
    return absl::OkStatus();
  });
}

}  // namespace duet::kernels::cuda
