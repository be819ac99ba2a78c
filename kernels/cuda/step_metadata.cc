#include "kernels/cuda/step_metadata.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/device_status.h"

namespace duet::kernels::cuda {
namespace {

constexpr size_t kAlign = 16;

// Where each array lives inside the packed buffer.
struct Layout {
  size_t token_ids, positions, slot_mapping, query_start, seq_lens,
      block_tables, logits_rows, token_seq, total;
};

Layout MakeLayout(const StepInputs& s) {
  Layout l{};
  PackedLayout packed;
  l.token_ids = packed.Take(s.token_ids.size() * sizeof(int32_t));
  l.positions = packed.Take(s.positions.size() * sizeof(int32_t));
  l.slot_mapping = packed.Take(s.slot_mapping.size() * sizeof(int64_t));
  l.query_start = packed.Take(s.query_start.size() * sizeof(int32_t));
  l.seq_lens = packed.Take(s.seq_lens.size() * sizeof(int32_t));
  l.block_tables = packed.Take(s.block_tables.size() * sizeof(int32_t));
  l.logits_rows = packed.Take(s.logits_rows.size() * sizeof(int32_t));
  l.token_seq = packed.Take(s.token_ids.size() * sizeof(int32_t));
  l.total = std::max<size_t>(packed.size(), kAlign);
  return l;
}

template <typename T>
void Put(char* base, size_t offset, const std::vector<T>& v) {
  if (!v.empty()) std::memcpy(base + offset, v.data(), v.size() * sizeof(T));
}

bool SameShape(const AttentionShape& a, const AttentionShape& b) {
  return a.num_heads == b.num_heads && a.num_kv_heads == b.num_kv_heads &&
         a.head_dim == b.head_dim && a.block_size == b.block_size &&
         a.num_blocks == b.num_blocks;
}

}  // namespace

absl::Status StepMetadata::Init() { return copied_.Create(); }

absl::Status StepMetadata::Upload(
    const StepInputs& step, const AttentionShape& shape, cudaStream_t stream,
    const std::shared_ptr<CachingAllocator>& allocator) {
  valid_ = false;
  const Layout layout = MakeLayout(step);
  if (copy_pending_) {
    // The pinned buffer may still be read by the previous step's copy.
    DUET_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(copied_.get()));
    copy_pending_ = false;
  }
  if (layout.total > pinned_.size()) {
    absl::Status s = pinned_.Reserve(layout.total + layout.total / 2);
    if (!s.ok()) return s;
  }
  // The old device buffer (if replaced) is returned to the allocator; work
  // already queued on the stream that reads it runs before anything that
  // reuses it.
  absl::Status s = buffer_.Reserve(allocator, layout.total);
  if (!s.ok()) return s;

  char* host = static_cast<char*>(pinned_.data());
  Put(host, layout.token_ids, step.token_ids);
  Put(host, layout.positions, step.positions);
  Put(host, layout.slot_mapping, step.slot_mapping);
  Put(host, layout.query_start, step.query_start);
  Put(host, layout.seq_lens, step.seq_lens);
  Put(host, layout.block_tables, step.block_tables);
  Put(host, layout.logits_rows, step.logits_rows);
  auto* token_seq = reinterpret_cast<int32_t*>(host + layout.token_seq);
  int32_t max_q = 0;
  int32_t max_len = 0;
  for (int32_t sq = 0; sq < step.num_seqs(); ++sq) {
    const int32_t b = step.query_start[sq];
    const int32_t e = step.query_start[sq + 1];
    std::fill(token_seq + b, token_seq + e, sq);
    max_q = std::max(max_q, e - b);
    max_len = std::max(max_len, step.seq_lens[sq]);
  }
  DUET_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(buffer_.data(), host, layout.total,
                                            cudaMemcpyHostToDevice, stream));
  DUET_CUDA_RETURN_IF_ERROR(cudaEventRecord(copied_.get(), stream));
  copy_pending_ = true;

  const char* dev = static_cast<const char*>(buffer_.data());
  DeviceStep& v = view_;
  v.mode = step.mode;
  v.shape = shape;
  v.num_tokens = step.num_tokens();
  v.num_seqs = step.num_seqs();
  v.max_blocks_per_seq = step.max_blocks_per_seq;
  v.num_logits_rows = static_cast<int32_t>(step.logits_rows.size());
  v.max_query_len = max_q;
  v.max_seq_len = max_len;
  v.logits_rows_identity = v.num_logits_rows == v.num_tokens;
  for (int32_t r = 0; r < v.num_logits_rows && v.logits_rows_identity; ++r) {
    v.logits_rows_identity = step.logits_rows[r] == r;
  }
  v.token_ids = reinterpret_cast<const int32_t*>(dev + layout.token_ids);
  v.positions = reinterpret_cast<const int32_t*>(dev + layout.positions);
  v.slot_mapping = reinterpret_cast<const int64_t*>(dev + layout.slot_mapping);
  v.query_start = reinterpret_cast<const int32_t*>(dev + layout.query_start);
  v.seq_lens = reinterpret_cast<const int32_t*>(dev + layout.seq_lens);
  v.block_tables = reinterpret_cast<const int32_t*>(dev + layout.block_tables);
  v.logits_rows = reinterpret_cast<const int32_t*>(dev + layout.logits_rows);
  v.token_seq = reinterpret_cast<const int32_t*>(dev + layout.token_seq);
  valid_ = true;
  return absl::OkStatus();
}

absl::Status StepMetadata::Check(const StepInputs& step, const char* op) const {
  if (!valid_) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, ": no step: call BeginStep (successfully) first"));
  }
  if (step.num_tokens() != view_.num_tokens ||
      step.num_seqs() != view_.num_seqs || step.mode != view_.mode ||
      static_cast<int32_t>(step.logits_rows.size()) != view_.num_logits_rows ||
      step.max_blocks_per_seq != view_.max_blocks_per_seq) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, ": the step differs from the one given to BeginStep (",
                     step.num_tokens(), " vs ", view_.num_tokens, " tokens, ",
                     step.num_seqs(), " vs ", view_.num_seqs, " sequences)"));
  }
  return absl::OkStatus();
}

absl::Status StepMetadata::Check(const StepInputs& step,
                                 const AttentionShape& shape,
                                 const char* op) const {
  absl::Status s = Check(step, op);
  if (!s.ok()) return s;
  if (!SameShape(shape, view_.shape)) {
    return absl::FailedPreconditionError(absl::StrCat(
        op, ": attention shape differs from the one given to BeginStep"));
  }
  return absl::OkStatus();
}

}  // namespace duet::kernels::cuda
