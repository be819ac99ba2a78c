#include "kernels/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cpu/ops.h"

namespace duet::kernels {
namespace {

constexpr DType kF32 = DType::kF32;

absl::Status CheckF32(const TensorView& t, const char* what) {
  if (t.dtype != kF32 || t.device != Device::kCpu || t.data == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": CPU backend needs a non-null fp32 host tensor"));
  }
  return absl::OkStatus();
}

absl::Status CheckMatrix(const TensorView& t, int64_t rows, int64_t cols,
                         const char* what) {
  DUET_RETURN_IF_ERROR(CheckF32(t, what));
  if (t.rank() != 2 || t.dim(0) != rows || t.dim(1) != cols) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected [", rows,
                                                   ", ", cols, "], got ",
                                                   ShapeString(t.shape)));
  }
  return absl::OkStatus();
}

absl::Status CheckCache(const AttentionShape& s, const TensorView& kv_cache) {
  DUET_RETURN_IF_ERROR(CheckF32(kv_cache, "kv_cache"));
  const Shape want = {s.num_blocks, 2, s.num_kv_heads, s.block_size,
                      s.head_dim};
  if (kv_cache.shape != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_cache: expected ", ShapeString(want), ", got ",
                     ShapeString(kv_cache.shape)));
  }
  return absl::OkStatus();
}

// Every CPU op is done when it returns, so a mark is reached when taken.
class CpuMark final : public StreamMark {
 public:
  absl::Status Wait(absl::Time) const override { return absl::OkStatus(); }
};

// Runs the backend's reference copies on the caller's thread: they touch
// only the memory they are given, so the sender thread may run them while
// the loop thread computes the next layer.
class CpuKvCopyQueue final : public KvCopyQueue {
 public:
  explicit CpuKvCopyQueue(Backend* backend) : backend_(backend) {}
  absl::Status After(std::shared_ptr<const StreamMark> mark) override {
    if (mark == nullptr) return absl::InvalidArgumentError("After: null mark");
    return absl::OkStatus();
  }
  absl::Status Gather(const KvBlockPool& pool, std::span<const int32_t> ids,
                      void* host, int64_t host_bytes,
                      absl::Time deadline) override {
    DUET_RETURN_IF_ERROR(CheckDeadline(deadline));
    return backend_->GatherKvBlocks(pool, ids, host, host_bytes);
  }
  absl::Status Copy(const KvBlockPool& src, std::span<const int32_t> src_ids,
                    const KvBlockPool& dst, std::span<const int32_t> dst_ids,
                    absl::Time deadline) override {
    DUET_RETURN_IF_ERROR(CheckDeadline(deadline));
    return backend_->CopyKvBlocks(src, src_ids, dst, dst_ids);
  }

 private:
  static absl::Status CheckDeadline(absl::Time deadline) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError("KV copy given no time");
    }
    return absl::OkStatus();
  }
  Backend* const backend_;
};

class CpuBackend final : public Backend {
 public:
  absl::string_view name() const override { return "cpu"; }
  Device device() const override { return Device::kCpu; }
  DType activation_dtype() const override { return kF32; }

  absl::StatusOr<Tensor> Allocate(DType dtype, const Shape& shape) override {
    DUET_RETURN_IF_ERROR(CheckAllocShape(shape));
    const size_t bytes =
        static_cast<size_t>(NumElements(shape)) * DTypeSize(dtype);
    // 64-byte alignment for vectorized loops; never a zero-byte request.
    void* data = std::aligned_alloc(64, ((bytes + 63) / 64) * 64 + 64);
    if (data == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("host allocation of ", bytes, " bytes failed"));
    }
    return Tensor(TensorView{data, dtype, shape, Device::kCpu},
                  [](void* p) { std::free(p); });
  }

  absl::StatusOr<Tensor> Upload(const void* src, DType src_dtype, DType dtype,
                                const Shape& shape) override {
    if (dtype != kF32) {
      return absl::InvalidArgumentError("CPU backend stores fp32 only");
    }
    if (src == nullptr && NumElements(shape) > 0) {
      return absl::InvalidArgumentError("Upload: null source data");
    }
    DUET_ASSIGN_OR_RETURN(Tensor t, Allocate(dtype, shape));
    ConvertToF32(src_dtype, src, static_cast<size_t>(NumElements(shape)),
                 t.view().as<float>());
    return t;
  }

  absl::StatusOr<Tensor> UploadConcat(const std::vector<TensorView>& parts,
                                      DType dtype) override {
    DUET_ASSIGN_OR_RETURN(const Shape shape, ConcatShape(parts));
    if (dtype != kF32) {
      return absl::InvalidArgumentError("CPU backend stores fp32 only");
    }
    DUET_ASSIGN_OR_RETURN(Tensor t, Allocate(dtype, shape));
    float* dst = t.view().as<float>();
    for (const TensorView& part : parts) {
      const size_t n = static_cast<size_t>(part.numel());
      ConvertToF32(part.dtype, part.data, n, dst);
      dst += n;
    }
    return t;
  }

  absl::Status DownloadF32(const TensorView& src, float* dst) override {
    DUET_RETURN_IF_ERROR(CheckF32(src, "DownloadF32"));
    std::memcpy(dst, src.data, src.nbytes());
    return absl::OkStatus();
  }

  absl::Status BeginStep(const StepInputs& step, const AttentionShape& shape,
                         int32_t vocab_size) override {
    return ValidateStep(step, shape, vocab_size);
  }

  absl::Status Embedding(const StepInputs& step, const TensorView& table,
                         const TensorView& out) override {
    DUET_RETURN_IF_ERROR(CheckF32(table, "embedding table"));
    if (table.rank() != 2) {
      return absl::InvalidArgumentError("embedding table must be 2-D");
    }
    DUET_RETURN_IF_ERROR(
        CheckMatrix(out, step.num_tokens(), table.dim(1), "embedding out"));
    return cpu::Embedding(table.as<float>(), table.dim(0), table.dim(1),
                          step.token_ids.data(), step.num_tokens(),
                          out.as<float>());
  }

  absl::Status RmsNorm(const TensorView& x, const TensorView& weight, float eps,
                       const TensorView& out) override {
    DUET_RETURN_IF_ERROR(CheckF32(x, "rmsnorm x"));
    DUET_RETURN_IF_ERROR(CheckF32(weight, "rmsnorm weight"));
    const int64_t dim = weight.numel();
    if (x.rank() != 2 || x.dim(1) != dim) {
      return absl::InvalidArgumentError("rmsnorm: x must be [rows, dim]");
    }
    DUET_RETURN_IF_ERROR(CheckMatrix(out, x.dim(0), dim, "rmsnorm out"));
    cpu::RmsNorm(x.as<float>(), weight.as<float>(), x.dim(0), dim, dim, eps,
                 out.as<float>());
    return absl::OkStatus();
  }

  absl::Status AddRmsNorm(const TensorView& x, const TensorView& residual,
                          const TensorView& weight, float eps,
                          const TensorView& out) override {
    DUET_RETURN_IF_ERROR(CheckF32(x, "add_rmsnorm x"));
    DUET_RETURN_IF_ERROR(CheckF32(weight, "add_rmsnorm weight"));
    if (x.rank() != 2 || x.dim(1) != weight.numel()) {
      return absl::InvalidArgumentError(
          "add_rmsnorm: x must be [rows, dim] with dim = weight size");
    }
    // Every check before the in-place add: a rejected call changes nothing.
    DUET_RETURN_IF_ERROR(
        CheckMatrix(residual, x.dim(0), x.dim(1), "add_rmsnorm residual"));
    DUET_RETURN_IF_ERROR(
        CheckMatrix(out, x.dim(0), x.dim(1), "add_rmsnorm out"));
    cpu::AddInPlace(residual.as<float>(), x.as<float>(), x.numel());
    return RmsNorm(residual, weight, eps, out);
  }

  absl::Status Linear(const TensorView& x, const TensorView& weight,
                      const TensorView& out) override {
    DUET_RETURN_IF_ERROR(CheckF32(x, "linear x"));
    DUET_RETURN_IF_ERROR(CheckF32(weight, "linear weight"));
    if (x.rank() != 2 || weight.rank() != 2 || x.dim(1) != weight.dim(1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("linear: x ", ShapeString(x.shape),
                       " does not match weight ", ShapeString(weight.shape)));
    }
    DUET_RETURN_IF_ERROR(
        CheckMatrix(out, x.dim(0), weight.dim(0), "linear out"));
    cpu::MatmulNT(x.as<float>(), weight.as<float>(), x.dim(0), x.dim(1),
                  weight.dim(0), out.as<float>());
    return absl::OkStatus();
  }

  absl::Status QkNormRope(const StepInputs& step, const AttentionShape& s,
                          const TensorView& qkv, const TensorView* q_norm,
                          const TensorView* k_norm, float eps,
                          const TensorView& inv_freq) override {
    DUET_RETURN_IF_ERROR(
        CheckMatrix(qkv, step.num_tokens(), s.qkv_width(), "qkv"));
    DUET_RETURN_IF_ERROR(CheckF32(inv_freq, "inv_freq"));
    if (inv_freq.numel() != s.head_dim / 2) {
      return absl::InvalidArgumentError("inv_freq must hold head_dim / 2");
    }
    if ((q_norm == nullptr) != (k_norm == nullptr)) {
      return absl::InvalidArgumentError("q_norm and k_norm: both or neither");
    }
    float* q = qkv.as<float>();
    float* k = q + static_cast<int64_t>(s.num_heads) * s.head_dim;
    const int64_t stride = s.qkv_width();
    const int64_t tokens = step.num_tokens();
    if (q_norm != nullptr) {
      DUET_RETURN_IF_ERROR(CheckF32(*q_norm, "q_norm"));
      DUET_RETURN_IF_ERROR(CheckF32(*k_norm, "k_norm"));
      if (q_norm->numel() != s.head_dim || k_norm->numel() != s.head_dim) {
        return absl::InvalidArgumentError("q_norm/k_norm must hold head_dim");
      }
      // Heads of one token are contiguous, so [T, heads, hd] is rows of hd
      // with a token stride; normalize token by token.
      for (int64_t t = 0; t < tokens; ++t) {
        cpu::RmsNorm(q + t * stride, q_norm->as<float>(), s.num_heads,
                     s.head_dim, s.head_dim, eps, q + t * stride);
        cpu::RmsNorm(k + t * stride, k_norm->as<float>(), s.num_kv_heads,
                     s.head_dim, s.head_dim, eps, k + t * stride);
      }
    }
    cpu::Rope(q, tokens, stride, s.num_heads, s.head_dim, step.positions.data(),
              inv_freq.as<float>());
    cpu::Rope(k, tokens, stride, s.num_kv_heads, s.head_dim,
              step.positions.data(), inv_freq.as<float>());
    return absl::OkStatus();
  }

  absl::Status WriteKvCache(const StepInputs& step, const AttentionShape& s,
                            const TensorView& qkv,
                            const TensorView& kv_cache) override {
    DUET_RETURN_IF_ERROR(
        CheckMatrix(qkv, step.num_tokens(), s.qkv_width(), "qkv"));
    DUET_RETURN_IF_ERROR(CheckCache(s, kv_cache));
    const float* k =
        qkv.as<float>() + static_cast<int64_t>(s.num_heads) * s.head_dim;
    const float* v = k + static_cast<int64_t>(s.num_kv_heads) * s.head_dim;
    cpu::WriteKvCache(
        {kv_cache.as<float>(), s.num_kv_heads, s.head_dim, s.block_size}, k, v,
        s.qkv_width(), step.slot_mapping.data(), step.num_tokens());
    return absl::OkStatus();
  }

  absl::Status Attention(const StepInputs& step, const AttentionShape& s,
                         const TensorView& qkv, const TensorView& kv_cache,
                         float scale, const TensorView& out) override {
    DUET_RETURN_IF_ERROR(
        CheckMatrix(qkv, step.num_tokens(), s.qkv_width(), "qkv"));
    DUET_RETURN_IF_ERROR(CheckCache(s, kv_cache));
    DUET_RETURN_IF_ERROR(CheckMatrix(out, step.num_tokens(),
                                     int64_t{s.num_heads} * s.head_dim,
                                     "attention out"));
    if (s.num_kv_heads <= 0 || s.num_heads % s.num_kv_heads != 0) {
      return absl::InvalidArgumentError(
          "num_heads must be a multiple of num_kv_heads");
    }
    cpu::PagedAttentionParams p;
    p.q = qkv.as<float>();
    p.q_stride = s.qkv_width();
    p.num_heads = s.num_heads;
    p.kv_cache = kv_cache.as<float>();
    p.num_kv_heads = s.num_kv_heads;
    p.head_dim = s.head_dim;
    p.block_size = s.block_size;
    p.query_start = step.query_start.data();
    p.seq_lens = step.seq_lens.data();
    p.block_tables = step.block_tables.data();
    p.max_blocks_per_seq = step.max_blocks_per_seq;
    p.num_seqs = step.num_seqs();
    p.scale = scale;
    p.out = out.as<float>();
    if (step.mode == AttentionMode::kDecode) {
      cpu::PagedDecodeAttention(p);
    } else {
      cpu::PagedPrefillAttention(p);
    }
    return absl::OkStatus();
  }

  absl::Status SiluMul(const TensorView& gate_up,
                       const TensorView& out) override {
    DUET_RETURN_IF_ERROR(CheckF32(gate_up, "silu_mul gate_up"));
    if (gate_up.rank() != 2 || gate_up.dim(1) % 2 != 0) {
      return absl::InvalidArgumentError("silu_mul: gate_up must be [T, 2I]");
    }
    DUET_RETURN_IF_ERROR(
        CheckMatrix(out, gate_up.dim(0), gate_up.dim(1) / 2, "silu_mul out"));
    cpu::SiluMul(gate_up.as<float>(), gate_up.dim(0), gate_up.dim(1) / 2,
                 out.as<float>());
    return absl::OkStatus();
  }

  absl::Status Logits(const StepInputs& step, const TensorView& x,
                      const TensorView& lm_head,
                      const TensorView& logits) override {
    DUET_RETURN_IF_ERROR(CheckF32(x, "logits x"));
    DUET_RETURN_IF_ERROR(CheckF32(lm_head, "lm_head"));
    if (x.rank() != 2 || lm_head.rank() != 2 || x.dim(1) != lm_head.dim(1)) {
      return absl::InvalidArgumentError("logits: x and lm_head disagree");
    }
    const int64_t rows = static_cast<int64_t>(step.logits_rows.size());
    const int64_t hidden = x.dim(1);
    DUET_RETURN_IF_ERROR(
        CheckMatrix(logits, rows, lm_head.dim(0), "logits out"));
    // Only the requested rows go through the (vocab-sized) LM head.
    std::vector<float> gathered(static_cast<size_t>(rows * hidden));
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(gathered.data() + r * hidden,
                  x.as<float>() + step.logits_rows[r] * hidden,
                  hidden * sizeof(float));
    }
    cpu::MatmulNT(gathered.data(), lm_head.as<float>(), rows, hidden,
                  lm_head.dim(0), logits.as<float>());
    return absl::OkStatus();
  }

  absl::Status Sample(const TensorView& logits, const SampleBatch& batch,
                      std::span<int32_t> tokens,
                      std::span<TokenLogprobs> logprobs) override {
    DUET_RETURN_IF_ERROR(
        CheckSampleArgs(logits, Device::kCpu, batch, tokens, logprobs));
    const int64_t vocab = logits.dim(1);
    for (size_t r = 0; r < batch.specs.size(); ++r) {
      std::span<const SeenToken> seen;
      if (!batch.seen_offsets.empty()) {
        seen =
            batch.seen.subspan(static_cast<size_t>(batch.seen_offsets[r]),
                               static_cast<size_t>(batch.seen_offsets[r + 1] -
                                                   batch.seen_offsets[r]));
      }
      tokens[r] = SampleRow(
          {logits.as<float>() + r * vocab, static_cast<size_t>(vocab)},
          batch.specs[r], seen, logprobs.empty() ? nullptr : &logprobs[r]);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<HostBuffer> AllocateHostStaging(int64_t bytes) override {
    if (bytes <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AllocateHostStaging: bytes must be positive, got ", bytes));
    }
    const size_t size = static_cast<size_t>(bytes);
    const size_t rounded = (size + 63) / 64 * 64;
    void* data = std::aligned_alloc(64, rounded);
    if (data == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("host staging allocation of ", bytes, " bytes failed"));
    }
    // Zeroed, as fresh pinned pages are on the CUDA backend: whatever the
    // heap held before must never be landed into a KV pool, and tests get
    // the same bytes on every run.
    std::memset(data, 0, rounded);
    return HostBuffer(data, size, [](void* p) { std::free(p); });
  }

  // The reference: one memcpy per (layer, block).
  absl::Status GatherKvBlocks(const KvBlockPool& pool,
                              std::span<const int32_t> ids, void* host,
                              int64_t host_bytes) override {
    DUET_RETURN_IF_ERROR(CheckKvBlockCopy(pool, Device::kCpu, ids, host,
                                          host_bytes, /*unique_ids=*/false));
    const size_t bb = static_cast<size_t>(pool.block_bytes);
    auto* out = static_cast<char*>(host);
    for (void* base : pool.layer_base) {
      for (int32_t id : ids) {
        std::memcpy(out, static_cast<const char*>(base) + id * bb, bb);
        out += bb;
      }
    }
    return absl::OkStatus();
  }

  absl::Status CopyKvBlocks(const KvBlockPool& src,
                            std::span<const int32_t> src_ids,
                            const KvBlockPool& dst,
                            std::span<const int32_t> dst_ids) override {
    DUET_RETURN_IF_ERROR(
        CheckKvPoolCopy(src, src_ids, dst, dst_ids, Device::kCpu));
    const size_t bb = static_cast<size_t>(src.block_bytes);
    for (size_t l = 0; l < src.layer_base.size(); ++l) {
      for (size_t i = 0; i < src_ids.size(); ++i) {
        std::memcpy(
            static_cast<char*>(dst.layer_base[l]) + dst_ids[i] * bb,
            static_cast<const char*>(src.layer_base[l]) + src_ids[i] * bb, bb);
      }
    }
    return absl::OkStatus();
  }

  absl::Status ScatterKvBlocks(const void* host, int64_t host_bytes,
                               std::span<const int32_t> ids,
                               const KvBlockPool& pool) override {
    DUET_RETURN_IF_ERROR(CheckKvBlockCopy(pool, Device::kCpu, ids, host,
                                          host_bytes, /*unique_ids=*/true));
    const size_t bb = static_cast<size_t>(pool.block_bytes);
    const auto* in = static_cast<const char*>(host);
    for (void* base : pool.layer_base) {
      for (int32_t id : ids) {
        std::memcpy(static_cast<char*>(base) + id * bb, in, bb);
        in += bb;
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::shared_ptr<const StreamMark>> Mark() override {
    return std::make_shared<CpuMark>();
  }
  absl::StatusOr<std::unique_ptr<KvCopyQueue>> CreateKvCopyQueue() override {
    return std::make_unique<CpuKvCopyQueue>(this);
  }

  absl::Status Synchronize() override { return absl::OkStatus(); }
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend() {
  return std::make_unique<CpuBackend>();
}

}  // namespace duet::kernels
