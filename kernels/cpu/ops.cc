#include "kernels/cpu/ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace duet::kernels::cpu {

absl::Status Embedding(const float* table, int64_t vocab, int64_t hidden,
                       const int32_t* ids, int64_t num_tokens, float* out) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    if (ids[t] < 0 || ids[t] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", ids[t], " is outside the vocabulary [0, ", vocab, ")"));
    }
    std::memcpy(out + t * hidden, table + static_cast<int64_t>(ids[t]) * hidden,
                hidden * sizeof(float));
  }
  return absl::OkStatus();
}

void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim,
             int64_t row_stride, float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * row_stride;
    float* yr = out + r * row_stride;
    double sum_sq = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum_sq += double{xr[i]} * xr[i];
    const float inv_rms =
        1.0f / std::sqrt(static_cast<float>(sum_sq / dim) + eps);
    for (int64_t i = 0; i < dim; ++i) yr[i] = weight[i] * (xr[i] * inv_rms);
  }
}

void AddInPlace(float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

void MatmulNT(const float* x, const float* w, int64_t tokens, int64_t k,
              int64_t n, float* y) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(tokens),
              static_cast<int>(n), static_cast<int>(k), 1.0f, x,
              static_cast<int>(k), w, static_cast<int>(k), 0.0f, y,
              static_cast<int>(n));
}

void Rope(float* x, int64_t num_tokens, int64_t token_stride,
          int64_t num_heads, int64_t head_dim, const int32_t* positions,
          const float* inv_freq) {
  const int64_t half = head_dim / 2;
  std::vector<float> cos_v(half), sin_v(half);
  for (int64_t t = 0; t < num_tokens; ++t) {
    // fp32 angle like Hugging Face (position * inv_freq in float32).
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      cos_v[i] = std::cos(angle);
      sin_v[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < num_heads; ++h) {
      float* xh = x + t * token_stride + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = xh[i];
        const float b = xh[i + half];
        xh[i] = a * cos_v[i] - b * sin_v[i];
        xh[i + half] = b * cos_v[i] + a * sin_v[i];
      }
    }
  }
}

void WriteKvCache(const PagedKvParams& c, const float* k, const float* v,
                  int64_t token_stride, const int64_t* slot_mapping,
                  int64_t num_tokens) {
  const int64_t head_stride = c.block_size * c.head_dim;
  const int64_t kv_stride = c.num_kv_heads * head_stride;
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t block = slot_mapping[t] / c.block_size;
    const int64_t offset = slot_mapping[t] % c.block_size;
    float* base = c.kv_cache + block * 2 * kv_stride + offset * c.head_dim;
    for (int64_t h = 0; h < c.num_kv_heads; ++h) {
      std::memcpy(base + h * head_stride, k + t * token_stride + h * c.head_dim,
                  c.head_dim * sizeof(float));
      std::memcpy(base + kv_stride + h * head_stride,
                  v + t * token_stride + h * c.head_dim,
                  c.head_dim * sizeof(float));
    }
  }
}

namespace {

// One query head attending to cache positions [0, context_len) of one
// sequence: numerically safe softmax (max subtracted), fp32 throughout with
// double accumulation of the normalizer.
void AttendOneQuery(const PagedAttentionParams& p, const float* q,
                    const int32_t* block_table, int64_t context_len,
                    int64_t kv_head, float* out, std::vector<float>& scores) {
  const int64_t hd = p.head_dim;
  const int64_t head_stride = p.block_size * hd;
  const int64_t kv_stride = p.num_kv_heads * head_stride;
  scores.resize(context_len);
  float max_score = -INFINITY;
  for (int64_t j = 0; j < context_len; ++j) {
    const float* kj = p.kv_cache + block_table[j / p.block_size] * 2 * kv_stride +
                      kv_head * head_stride + (j % p.block_size) * hd;
    float dot = 0.0f;
    for (int64_t i = 0; i < hd; ++i) dot += q[i] * kj[i];
    scores[j] = dot * p.scale;
    max_score = std::max(max_score, scores[j]);
  }
  double denom = 0.0;
  for (int64_t j = 0; j < context_len; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    denom += scores[j];
  }
  std::fill(out, out + hd, 0.0f);
  const float inv = static_cast<float>(1.0 / denom);
  for (int64_t j = 0; j < context_len; ++j) {
    const float* vj = p.kv_cache + block_table[j / p.block_size] * 2 * kv_stride +
                      kv_stride + kv_head * head_stride +
                      (j % p.block_size) * hd;
    const float w = scores[j] * inv;
    for (int64_t i = 0; i < hd; ++i) out[i] += w * vj[i];
  }
}

}  // namespace

void PagedPrefillAttention(const PagedAttentionParams& p) {
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t out_stride = p.num_heads * p.head_dim;
  std::vector<float> scores;
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const int64_t q_begin = p.query_start[s];
    const int64_t q_len = p.query_start[s + 1] - q_begin;
    const int64_t prefix = p.seq_lens[s] - q_len;
    const int32_t* table = p.block_tables + s * p.max_blocks_per_seq;
    for (int64_t i = 0; i < q_len; ++i) {
      const int64_t t = q_begin + i;
      for (int64_t h = 0; h < p.num_heads; ++h) {
        AttendOneQuery(p, p.q + t * p.q_stride + h * p.head_dim, table,
                       prefix + i + 1, h / group,
                       p.out + t * out_stride + h * p.head_dim, scores);
      }
    }
  }
}

void PagedDecodeAttention(const PagedAttentionParams& p) {
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t out_stride = p.num_heads * p.head_dim;
  std::vector<float> scores;
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const int32_t* table = p.block_tables + s * p.max_blocks_per_seq;
    for (int64_t h = 0; h < p.num_heads; ++h) {
      AttendOneQuery(p, p.q + s * p.q_stride + h * p.head_dim, table,
                     p.seq_lens[s], h / group,
                     p.out + s * out_stride + h * p.head_dim, scores);
    }
  }
}

void SiluMul(const float* gate_up, int64_t tokens, int64_t inter, float* out) {
  for (int64_t t = 0; t < tokens; ++t) {
    const float* g = gate_up + t * 2 * inter;
    const float* u = g + inter;
    float* o = out + t * inter;
    for (int64_t i = 0; i < inter; ++i) {
      o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  }
}

}  // namespace duet::kernels::cpu
