// Internal to kernels/cuda: paged attention over the KV cache
// [num_blocks][2][num_kv_heads][block_size][head_dim] (DESIGN.md §2).
//
// Two families, each dispatching head_dim (16, 64, 128) and the GQA group
// size (1, 2, 4, 8) to compile-time constants in its launcher:
// - prefill (prefill_attention.cu): FlashAttention-2 style, bf16 tensor cores
//   (mma.sync m16n8k16), online softmax, causal, varlen. A CTA owns a tile
//   of 128 (token, head) rows (64 with prefill_warp_rows = 16) of one
//   sequence and one KV head, so the query heads of a GQA group share every
//   K/V tile they load; when those tiles are too few to fill the GPU, each
//   also owns one split of the keys and a merge kernel combines the splits.
// - decode (decode_attention.cu): flash-decoding on tensor cores. A CTA owns
//   one query token and one KV head with all query heads of its group as
//   the rows of one MMA tile (each K/V row is read once for the group) over
//   one split of the context; its warps stream their own key tiles and are
//   merged at the end; when the context was split, the last CTA of each
//   (token, KV head) to finish merges the splits.
#ifndef DUET_KERNELS_CUDA_ATTENTION_H_
#define DUET_KERNELS_CUDA_ATTENTION_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace duet::kernels::cuda {

struct PagedAttentionParams {
  // Query of token t, head h at q + t * q_stride + h * head_dim (the Q part
  // of the packed QKV activation).
  const __nv_bfloat16* q = nullptr;
  int64_t q_stride = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 0;
  const __nv_bfloat16* kv_cache = nullptr;
  int64_t num_tokens = 0;
  int num_seqs = 0;
  const int32_t* query_start = nullptr;   // [num_seqs + 1], device
  const int32_t* seq_lens = nullptr;      // [num_seqs], device
  const int32_t* block_tables = nullptr;  // [num_seqs][max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  const int32_t* positions = nullptr;  // [num_tokens], device
  // Sequence of each token; null means token t is sequence t (decode).
  const int32_t* token_seq = nullptr;
  int max_query_len = 0;  // host-side maxima, for the grid
  int max_seq_len = 0;
  float scale = 1.0f;
  __nv_bfloat16* out = nullptr;  // [num_tokens][num_heads * head_dim]
  int64_t out_stride = 0;
  int num_sms = 132;  // to size the decode split
  // Prefill only: query rows per warp, 16 or 32 (CudaBackendOptions).
  int prefill_warp_rows = 32;
  // Prefill only: split the keys of a (query tile, KV head) over several
  // CTAs when the tiles alone leave most SMs idle (a short chunk after a
  // long cached prefix); needs PrefillAttentionWorkspaceBytes of
  // `workspace`. Set by LaunchPrefillAttention from the plan: splits and
  // keys per split (a multiple of the key tile).
  bool prefill_split_kv = false;
  int prefill_splits = 1;
  int prefill_split_keys = 0;
  // Prefill only, read by the host's split plan and never on the device:
  // host copy of query_start (may be null: the plan then assumes every
  // sequence has max_query_len tokens).
  const int32_t* host_query_start = nullptr;
  // Decode split scratch (DecodeAttentionWorkspaceBytes); may be null when
  // that is 0.
  void* workspace = nullptr;
  // Decode split arrival counters, one per (token, KV head): zero before
  // the launch and left zero after it (the last split resets its counter).
  // Needed when the context is split; capacity in counters.
  unsigned int* split_counters = nullptr;
  int64_t split_counter_capacity = 0;
};

// Chunked prefill: each sequence's new tokens attend to its cached prefix
// and causally to each other. With p.prefill_split_kv and a workspace of
// PrefillAttentionWorkspaceBytes(p), few query tiles over long contexts
// split their keys over several CTAs and a second kernel merges them.
absl::Status LaunchPrefillAttention(const PagedAttentionParams& p,
                                    cudaStream_t stream);
// Scratch LaunchPrefillAttention needs for `p` (0 when it does not split).
size_t PrefillAttentionWorkspaceBytes(const PagedAttentionParams& p);

// One query per token t over its first positions[t] + 1 cache entries of
// sequence token_seq[t]. Used for decode steps (token_seq null), and as the
// simple reference path for prefill (slow: every query reads its whole
// context).
// pdl: launch as a programmatic dependent (kernels/cuda/pdl.h).
absl::Status LaunchDecodeAttention(const PagedAttentionParams& p,
                                   cudaStream_t stream, bool pdl = false);
// Scratch LaunchDecodeAttention needs for `p` (0 when no query's context is
// split).
size_t DecodeAttentionWorkspaceBytes(const PagedAttentionParams& p);

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_ATTENTION_H_
