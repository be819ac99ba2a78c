#include "kernels/backend.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace duet::kernels {

absl::Status ValidateStep(const StepInputs& step, const AttentionShape& shape,
                          int32_t vocab_size) {
  if (shape.block_size <= 0 || shape.num_blocks <= 0 || shape.head_dim <= 0 ||
      shape.num_heads <= 0 || shape.num_kv_heads <= 0) {
    return absl::InvalidArgumentError(
        "attention shape needs positive heads, head_dim, block_size and "
        "num_blocks");
  }
  const int32_t num_tokens = step.num_tokens();
  const int32_t num_seqs = step.num_seqs();
  if (num_seqs <= 0 || num_tokens <= 0) {
    return absl::InvalidArgumentError("step has no sequences or no tokens");
  }
  if (static_cast<int32_t>(step.positions.size()) != num_tokens ||
      static_cast<int32_t>(step.slot_mapping.size()) != num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step: positions (", step.positions.size(), ") and slot_mapping (",
        step.slot_mapping.size(), ") must have one entry per token (",
        num_tokens, ")"));
  }
  if (static_cast<int32_t>(step.query_start.size()) != num_seqs + 1 ||
      step.query_start.front() != 0 || step.query_start.back() != num_tokens) {
    return absl::InvalidArgumentError(
        "step: query_start must have num_seqs + 1 entries from 0 to "
        "num_tokens");
  }
  if (step.max_blocks_per_seq <= 0 ||
      static_cast<int64_t>(step.block_tables.size()) !=
          static_cast<int64_t>(num_seqs) * step.max_blocks_per_seq) {
    return absl::InvalidArgumentError(
        "step: block_tables must hold num_seqs * max_blocks_per_seq entries");
  }
  for (int32_t id : step.token_ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", id, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  const int64_t num_slots =
      static_cast<int64_t>(shape.num_blocks) * shape.block_size;
  for (int32_t s = 0; s < num_seqs; ++s) {
    const int32_t q_begin = step.query_start[s];
    const int32_t q_len = step.query_start[s + 1] - q_begin;
    const int32_t seq_len = step.seq_lens[s];
    if (q_len <= 0 || seq_len < q_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "step: sequence ", s, " has ", q_len, " new tokens and seq_len ",
          seq_len));
    }
    if (step.mode == AttentionMode::kDecode && q_len != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "decode step: sequence ", s, " has ", q_len,
          " new tokens (must be 1)"));
    }
    const int32_t blocks_needed =
        (seq_len + shape.block_size - 1) / shape.block_size;
    if (blocks_needed > step.max_blocks_per_seq) {
      return absl::InvalidArgumentError(absl::StrCat(
          "step: sequence ", s, " needs ", blocks_needed,
          " blocks but its block table holds ", step.max_blocks_per_seq));
    }
    const int32_t* table =
        step.block_tables.data() +
        static_cast<int64_t>(s) * step.max_blocks_per_seq;
    for (int32_t b = 0; b < blocks_needed; ++b) {
      if (table[b] < 0 || table[b] >= shape.num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat(
            "step: sequence ", s, " block ", b, " is ", table[b],
            ", outside [0, ", shape.num_blocks, ")"));
      }
    }
    for (int32_t i = 0; i < q_len; ++i) {
      const int32_t t = q_begin + i;
      const int32_t pos = seq_len - q_len + i;
      if (step.positions[t] != pos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "step: token ", t, " has position ", step.positions[t],
            ", expected ", pos));
      }
      const int64_t expected_slot =
          static_cast<int64_t>(table[pos / shape.block_size]) *
              shape.block_size +
          pos % shape.block_size;
      if (step.slot_mapping[t] != expected_slot ||
          step.slot_mapping[t] >= num_slots) {
        return absl::InvalidArgumentError(absl::StrCat(
            "step: token ", t, " maps to slot ", step.slot_mapping[t],
            ", expected ", expected_slot));
      }
    }
  }
  for (int32_t row : step.logits_rows) {
    if (row < 0 || row >= num_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "step: logits row ", row, " outside [0, ", num_tokens, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckAllocShape(const Shape& shape) {
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative dim in ", ShapeString(shape)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Shape> ConcatShape(const std::vector<TensorView>& parts) {
  if (parts.empty()) {
    return absl::InvalidArgumentError("UploadConcat: no parts");
  }
  Shape shape = parts[0].shape;
  if (shape.empty()) {
    return absl::InvalidArgumentError("UploadConcat: scalar part");
  }
  for (const TensorView& part : parts) {
    if (part.device != Device::kCpu ||
        (part.data == nullptr && part.numel() > 0)) {
      return absl::InvalidArgumentError(
          "UploadConcat: parts must be non-null host tensors");
    }
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const Shape& rest = parts[i].shape;
    if (rest.size() != shape.size() ||
        !std::equal(rest.begin() + 1, rest.end(), shape.begin() + 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "UploadConcat: part ", i, " shape ", ShapeString(parts[i].shape),
          " does not match ", ShapeString(parts[0].shape), " beyond dim 0"));
    }
    shape[0] += parts[i].shape[0];
  }
  return shape;
}

absl::Status CheckSampleArgs(const TensorView& logits, Device device,
                             const SampleBatch& batch,
                             std::span<const int32_t> tokens,
                             std::span<const TokenLogprobs> logprobs) {
  const std::span<const SampleSpec> specs = batch.specs;
  if (logits.device != device || logits.dtype != DType::kF32 ||
      logits.rank() != 2 || logits.data == nullptr || logits.dim(1) <= 0) {
    return absl::InvalidArgumentError(
        "sample: logits must be a non-empty [rows, vocab] fp32 tensor on this "
        "backend");
  }
  const int64_t vocab = logits.dim(1);
  if (vocab > (int64_t{1} << 21)) {
    // Keeps every integer mass sum below 2^63 (kernels/sampling.h).
    return absl::InvalidArgumentError(
        absl::StrCat("sample: vocabulary of ", vocab, " exceeds 2^21 tokens"));
  }
  if (static_cast<int64_t>(specs.size()) != logits.dim(0) ||
      static_cast<int64_t>(tokens.size()) != logits.dim(0) ||
      (!logprobs.empty() && logprobs.size() != specs.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: ", logits.dim(0), " logits rows, ", specs.size(),
                     " specs, ", tokens.size(), " token slots and ",
                     logprobs.size(), " logprob slots (0 or rows) must agree"));
  }
  for (size_t r = 0; r < specs.size(); ++r) {
    const SampleSpec& s = specs[r];
    if (!std::isfinite(s.temperature) || s.temperature < 0.0f || s.top_k < 0 ||
        !(s.top_p > 0.0f && s.top_p <= 1.0f) ||
        !(s.min_p >= 0.0f && s.min_p <= 1.0f)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sample: row ", r, " has temperature ", s.temperature, ", top_k ",
          s.top_k, ", top_p ", s.top_p, ", min_p ", s.min_p,
          " (need temperature >= 0, top_k >= 0, top_p in (0, 1], min_p in "
          "[0, 1])"));
    }
    if (!std::isfinite(s.presence_penalty) ||
        !std::isfinite(s.frequency_penalty) ||
        !std::isfinite(s.repetition_penalty) || s.repetition_penalty <= 0.0f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sample: row ", r, " has presence_penalty ", s.presence_penalty,
          ", frequency_penalty ", s.frequency_penalty, ", repetition_penalty ",
          s.repetition_penalty,
          " (need finite penalties, repetition_penalty > 0)"));
    }
    if (s.num_logprobs < -1 || s.num_logprobs > kMaxTopLogprobs ||
        (s.num_logprobs >= 0 && logprobs.empty())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sample: row ", r, " asks for num_logprobs ", s.num_logprobs,
          " (need -1..", kMaxTopLogprobs, ", and logprob slots when >= 0)"));
    }
  }
  if (!batch.seen_offsets.empty()) {
    if (batch.seen_offsets.size() != specs.size() + 1 ||
        batch.seen_offsets.front() != 0 ||
        batch.seen_offsets.back() != static_cast<int64_t>(batch.seen.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sample: seen_offsets must have rows + 1 = ", specs.size() + 1,
          " entries from 0 to ", batch.seen.size(), ", got ",
          batch.seen_offsets.size()));
    }
    for (size_t r = 0; r < specs.size(); ++r) {
      if (batch.seen_offsets[r + 1] < batch.seen_offsets[r]) {
        return absl::InvalidArgumentError(
            absl::StrCat("sample: seen_offsets decrease at row ", r));
      }
    }
    for (const SeenToken& t : batch.seen) {
      if (t.id < 0 || t.id >= vocab || t.output_count < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sample: seen token ", t.id, " (output count ", t.output_count,
            ") outside the vocabulary [0, ", vocab, ")"));
      }
    }
  } else if (!batch.seen.empty()) {
    return absl::InvalidArgumentError("sample: seen tokens without offsets");
  }
  return absl::OkStatus();
}

absl::Status CheckKvPoolCopy(const KvBlockPool& src,
                             std::span<const int32_t> src_ids,
                             const KvBlockPool& dst,
                             std::span<const int32_t> dst_ids, Device device) {
  if (src.layer_base.size() != dst.layer_base.size() ||
      src.block_bytes != dst.block_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV pool copy: source has ", src.layer_base.size(), " layers of ",
        src.block_bytes, "-byte blocks, destination ", dst.layer_base.size(),
        " of ", dst.block_bytes));
  }
  if (src_ids.size() != dst_ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV pool copy: ", src_ids.size(), " source ids for ",
                     dst_ids.size(), " destination ids"));
  }
  // The host arguments of CheckKvBlockCopy are not used here: a dummy
  // non-null buffer of the packed size passes them.
  const int64_t packed = static_cast<int64_t>(src.layer_base.size()) *
                         static_cast<int64_t>(src_ids.size()) *
                         src.block_bytes;
  const char dummy = 0;
  DUET_RETURN_IF_ERROR(CheckKvBlockCopy(src, device, src_ids, &dummy, packed,
                                        /*unique_ids=*/false));
  return CheckKvBlockCopy(dst, device, dst_ids, &dummy, packed,
                          /*unique_ids=*/true);
}

absl::Status CheckKvBlockCopy(const KvBlockPool& pool, Device device,
                              std::span<const int32_t> ids, const void* host,
                              int64_t host_bytes, bool unique_ids) {
  if (pool.device != device) {
    return absl::InvalidArgumentError(
        "KV block copy: the pool is not in this backend's memory");
  }
  if (pool.layer_base.empty() || pool.num_blocks <= 0 ||
      pool.block_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV block copy: pool needs layers, blocks and block bytes, got ",
        pool.layer_base.size(), " layers, ", pool.num_blocks, " blocks of ",
        pool.block_bytes, " bytes"));
  }
  for (size_t l = 0; l < pool.layer_base.size(); ++l) {
    if (pool.layer_base[l] == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV block copy: layer ", l, " has no base address"));
    }
  }
  std::vector<bool> seen(unique_ids ? static_cast<size_t>(pool.num_blocks) : 0);
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t b = ids[i];
    if (b < 0 || b >= pool.num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV block copy: ids[", i, "] = ", b, " outside [0, ",
                       pool.num_blocks, ")"));
    }
    if (unique_ids) {
      if (seen[static_cast<size_t>(b)]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "KV block copy: block ", b, " listed twice (two writes to one "
            "block)"));
      }
      seen[static_cast<size_t>(b)] = true;
    }
  }
  if (ids.empty()) return absl::OkStatus();
  if (host == nullptr) {
    return absl::InvalidArgumentError("KV block copy: null host buffer");
  }
  // ids.size() <= 2^31 and the product of three positive values that each
  // fit in a pool: divide instead of multiplying to rule out overflow.
  const int64_t per_block =
      static_cast<int64_t>(pool.layer_base.size()) * pool.block_bytes;
  if (host_bytes < 0 ||
      static_cast<int64_t>(ids.size()) > host_bytes / per_block) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV block copy: host buffer of ", host_bytes, " bytes cannot hold ",
        ids.size(), " blocks x ", pool.layer_base.size(), " layers x ",
        pool.block_bytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace duet::kernels
