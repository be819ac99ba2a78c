// Plain C++ fp32 reference of every op the forward pass needs. These are the
// ground truth every other backend is tested against, so they favour the
// obvious loop over speed (except the matrix products, which go to BLAS).
// All tensors are contiguous row-major fp32 unless a stride says otherwise.
#ifndef DUET_KERNELS_CPU_OPS_H_
#define DUET_KERNELS_CPU_OPS_H_

#include <cstdint>

#include "absl/status/status.h"

namespace duet::kernels::cpu {

// out[t, :] = table[ids[t], :]; InvalidArgument if an id is out of range.
absl::Status Embedding(const float* table, int64_t vocab, int64_t hidden,
                       const int32_t* ids, int64_t num_tokens, float* out);

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight. x may alias out.
// Rows are `row_stride` floats apart in x and out (== dim when packed).
void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim,
             int64_t row_stride, float eps, float* out);

// a[i] += b[i].
void AddInPlace(float* a, const float* b, int64_t n);

// y[T, N] = x[T, K] * w[N, K]^T (BLAS sgemm).
void MatmulNT(const float* x, const float* w, int64_t tokens, int64_t k,
              int64_t n, float* y);

// Rotary embedding, rotate-half (GPT-NeoX / Hugging Face Llama) form, in
// place on `num_heads` heads of each token: for i < head_dim/2,
//   x[i]' = x[i] cos(p f_i) - x[i + d/2] sin(p f_i)
//   x[i + d/2]' = x[i + d/2] cos(p f_i) + x[i] sin(p f_i)
// where p = positions[t], f = inv_freq. Heads of token t start at
// x + t * token_stride.
void Rope(float* x, int64_t num_tokens, int64_t token_stride,
          int64_t num_heads, int64_t head_dim, const int32_t* positions,
          const float* inv_freq);

struct PagedKvParams {
  float* kv_cache = nullptr;  // [num_blocks][2][num_kv_heads][block][head_dim]
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = 0;
};

// Copies k/v heads of each token (token t at k + t * token_stride) into
// kv_cache slot slot_mapping[t].
void WriteKvCache(const PagedKvParams& cache, const float* k, const float* v,
                  int64_t token_stride, const int64_t* slot_mapping,
                  int64_t num_tokens);

struct PagedAttentionParams {
  const float* q = nullptr;  // token t, head h at q + t * q_stride + h * hd
  int64_t q_stride = 0;
  int64_t num_heads = 0;
  const float* kv_cache = nullptr;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = 0;
  const int32_t* query_start = nullptr;  // [num_seqs + 1]
  const int32_t* seq_lens = nullptr;     // [num_seqs]
  const int32_t* block_tables = nullptr;  // [num_seqs][max_blocks_per_seq]
  int64_t max_blocks_per_seq = 0;
  int64_t num_seqs = 0;
  float scale = 1.0f;
  float* out = nullptr;  // [num_tokens][num_heads * head_dim]
};

// Causal attention of a chunk of new queries per sequence over that
// sequence's paged cache (cached prefix + the chunk itself, already written).
// Query head h reads KV head h / (num_heads / num_kv_heads) (GQA).
void PagedPrefillAttention(const PagedAttentionParams& p);

// One query per sequence (query_start[s] == s) attending to all seq_lens[s]
// cached tokens.
void PagedDecodeAttention(const PagedAttentionParams& p);

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i].
void SiluMul(const float* gate_up, int64_t tokens, int64_t inter, float* out);

}  // namespace duet::kernels::cpu

#endif  // DUET_KERNELS_CPU_OPS_H_
