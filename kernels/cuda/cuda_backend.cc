// CudaBackend: argument checks (every malformed call is InvalidArgument or
// FailedPrecondition before anything is queued), then the launchers of
// kernels/cuda. The CUDA work itself lives in the *_kernels.cu files, the
// GEMMs in gemm.cc, memory in allocator.cc, copies in host_transfer.cc,
// kv_block_transfer.cc and step_metadata.cc.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/device_status.h"
#include "common/status.h"
#include "kernels/cuda/allocator.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/elementwise_kernels.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/host_transfer.h"
#include "kernels/cuda/kv_block_transfer.h"
#include "kernels/cuda/kv_cache_kernels.h"
#include "kernels/cuda/kv_copy_queue.h"
#include "kernels/cuda/norm_kernels.h"
#include "kernels/cuda/rope_kernels.h"
#include "kernels/cuda/sampler.h"
#include "kernels/cuda/skinny_gemm.h"
#include "kernels/cuda/small_gemm.h"
#include "kernels/cuda/step_metadata.h"

namespace duet::kernels {
namespace {

using cuda::CachingAllocator;
using cuda::DeviceBuffer;
using cuda::ScopedDevice;

constexpr DType kBF16 = DType::kBF16;
constexpr DType kF32 = DType::kF32;

absl::Status CheckDevice(const TensorView& t, DType dtype, const char* what) {
  if (t.device != Device::kCuda || (t.data == nullptr && t.numel() > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": CUDA backend needs a non-null CUDA tensor"));
  }
  if (t.dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected dtype ",
                                                   DTypeName(dtype), ", got ",
                                                   DTypeName(t.dtype)));
  }
  return absl::OkStatus();
}

absl::Status CheckMatrix(const TensorView& t, DType dtype, int64_t rows,
                         int64_t cols, const char* what) {
  DUET_RETURN_IF_ERROR(CheckDevice(t, dtype, what));
  if (t.rank() != 2 || t.dim(0) != rows || t.dim(1) != cols) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected [", rows,
                                                   ", ", cols, "], got ",
                                                   ShapeString(t.shape)));
  }
  return absl::OkStatus();
}

absl::Status CheckVector(const TensorView& t, DType dtype, int64_t n,
                         const char* what) {
  DUET_RETURN_IF_ERROR(CheckDevice(t, dtype, what));
  if (t.numel() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": expected ", n, " elements, got ", ShapeString(t.shape)));
  }
  return absl::OkStatus();
}

absl::Status CheckCache(const AttentionShape& s, const TensorView& kv_cache) {
  DUET_RETURN_IF_ERROR(CheckDevice(kv_cache, kBF16, "kv_cache"));
  const Shape want = {s.num_blocks, 2, s.num_kv_heads, s.block_size,
                      s.head_dim};
  if (kv_cache.shape != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_cache: expected ", ShapeString(want), ", got ",
                     ShapeString(kv_cache.shape)));
  }
  return absl::OkStatus();
}

template <typename T>
T* Ptr(const TensorView& t) {
  return static_cast<T*>(t.data);
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const CudaBackendOptions& options)
      : device_(device),
        options_(options),
        allocator_(std::make_shared<CachingAllocator>(device)),
        sampler_(allocator_) {}

  ~CudaBackend() override {
    ScopedDevice guard(device_);
    // Pinned staging buffers are freed below; no copy may still read them.
    if (stream_.get() != nullptr) (void)cudaStreamSynchronize(stream_.get());
  }

  absl::Status Init() {
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    DUET_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(
        &num_sms_, cudaDevAttrMultiProcessorCount, device_));
    DUET_RETURN_IF_ERROR(stream_.Create());
    DUET_RETURN_IF_ERROR(
        gemm_.Init(allocator_, options_.gemm_autotune_max_tokens));
    DUET_RETURN_IF_ERROR(metadata_.Init());
    DUET_RETURN_IF_ERROR(transfer_.Init(allocator_));
    DUET_RETURN_IF_ERROR(kv_blocks_.Init(allocator_));
    // Decode splits only when tokens x KV heads CTAs leave SMs idle, so a
    // few thousand counters cover every split launch.
    DUET_ASSIGN_OR_RETURN(split_counters_,
                          DeviceBuffer::Make(allocator_, kSplitCounters * 4));
    DUET_CUDA_RETURN_IF_ERROR(
        cudaMemset(split_counters_.data(), 0, split_counters_.size()));
    return absl::OkStatus();
  }

  absl::string_view name() const override { return "cuda"; }
  Device device() const override { return Device::kCuda; }
  DType activation_dtype() const override { return kBF16; }

  absl::StatusOr<Tensor> Allocate(DType dtype, const Shape& shape) override {
    DUET_RETURN_IF_ERROR(CheckAllocShape(shape));
    const size_t bytes =
        static_cast<size_t>(NumElements(shape)) * DTypeSize(dtype);
    DUET_ASSIGN_OR_RETURN(void* data, allocator_->Allocate(bytes));
    // The deleter keeps the allocator alive: a KV cache or weights may be
    // released after the backend itself.
    std::shared_ptr<CachingAllocator> allocator = allocator_;
    return Tensor(TensorView{data, dtype, shape, Device::kCuda},
                  [allocator](void* p) { allocator->Free(p); });
  }

  absl::StatusOr<Tensor> Upload(const void* src, DType src_dtype, DType dtype,
                                const Shape& shape) override {
    if (src == nullptr && NumElements(shape) > 0) {
      return absl::InvalidArgumentError("Upload: null source data");
    }
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    DUET_ASSIGN_OR_RETURN(Tensor t, Allocate(dtype, shape));
    DUET_RETURN_IF_ERROR(transfer_.Upload(
        src, src_dtype, static_cast<size_t>(NumElements(shape)), t.view().data,
        dtype, stream()));
    return t;
  }

  absl::StatusOr<Tensor> UploadConcat(const std::vector<TensorView>& parts,
                                      DType dtype) override {
    DUET_ASSIGN_OR_RETURN(const Shape shape, ConcatShape(parts));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    DUET_ASSIGN_OR_RETURN(Tensor t, Allocate(dtype, shape));
    // Row-major concatenation along dim 0 is plain back-to-back placement.
    char* dst = Ptr<char>(t.view());
    for (const TensorView& part : parts) {
      const size_t n = static_cast<size_t>(part.numel());
      DUET_RETURN_IF_ERROR(
          transfer_.Upload(part.data, part.dtype, n, dst, dtype, stream()));
      dst += n * DTypeSize(dtype);
    }
    return t;
  }

  absl::Status DownloadF32(const TensorView& src, float* dst) override {
    if (src.device != Device::kCuda ||
        (src.data == nullptr && src.numel() > 0)) {
      return absl::InvalidArgumentError(
          "DownloadF32: needs a non-null CUDA tensor");
    }
    if (dst == nullptr && src.numel() > 0) {
      return absl::InvalidArgumentError("DownloadF32: null destination");
    }
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    return transfer_.DownloadF32(
        src.data, src.dtype, static_cast<size_t>(src.numel()), dst, stream());
  }

  absl::Status BeginStep(const StepInputs& step, const AttentionShape& shape,
                         int32_t vocab_size) override {
    metadata_.Invalidate();
    current_ = &metadata_;
    DUET_RETURN_IF_ERROR(ValidateStep(step, shape, vocab_size));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    return metadata_.Upload(step, shape, stream(), allocator_);
  }

  absl::Status Embedding(const StepInputs& step, const TensorView& table,
                         const TensorView& out) override {
    DUET_RETURN_IF_ERROR(meta().Check(step, "embedding"));
    DUET_RETURN_IF_ERROR(CheckDevice(table, kBF16, "embedding table"));
    if (table.rank() != 2) {
      return absl::InvalidArgumentError("embedding table must be 2-D");
    }
    DUET_RETURN_IF_ERROR(CheckMatrix(out, kBF16, step.num_tokens(),
                                     table.dim(1), "embedding out"));
    // BeginStep checked ids against the vocabulary it was given; the table
    // may be smaller, and an id past it would read out of bounds.
    for (int32_t id : step.token_ids) {
      if (id < 0 || id >= table.dim(0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                         table.dim(0), ")"));
      }
    }
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    return cuda::LaunchGatherRows(
        {table.data, meta().device().token_ids, step.num_tokens(),
         table.dim(1) * static_cast<int64_t>(sizeof(__nv_bfloat16)), out.data},
        stream(), options_.programmatic_launch);
  }

  absl::Status RmsNorm(const TensorView& x, const TensorView& weight, float eps,
                       const TensorView& out) override {
    DUET_RETURN_IF_ERROR(CheckDevice(x, kBF16, "rmsnorm x"));
    DUET_RETURN_IF_ERROR(CheckDevice(weight, kBF16, "rmsnorm weight"));
    const int64_t dim = weight.numel();
    if (x.rank() != 2 || x.dim(1) != dim) {
      return absl::InvalidArgumentError("rmsnorm: x must be [rows, dim]");
    }
    DUET_RETURN_IF_ERROR(CheckMatrix(out, kBF16, x.dim(0), dim, "rmsnorm out"));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    cuda::RmsNormParams p;
    p.x = Ptr<const __nv_bfloat16>(x);
    p.weight = Ptr<const __nv_bfloat16>(weight);
    p.out = Ptr<__nv_bfloat16>(out);
    p.rows = x.dim(0);
    p.dim = dim;
    p.eps = eps;
    return cuda::LaunchRmsNorm(p, stream(), options_.programmatic_launch);
  }

  absl::Status AddRmsNorm(const TensorView& x, const TensorView& residual,
                          const TensorView& weight, float eps,
                          const TensorView& out) override {
    DUET_RETURN_IF_ERROR(CheckDevice(x, kBF16, "add_rmsnorm x"));
    DUET_RETURN_IF_ERROR(CheckDevice(weight, kBF16, "add_rmsnorm weight"));
    if (x.rank() != 2 || x.dim(1) != weight.numel()) {
      return absl::InvalidArgumentError(
          "add_rmsnorm: x must be [rows, dim] with dim = weight size");
    }
    DUET_RETURN_IF_ERROR(CheckMatrix(residual, kBF16, x.dim(0), x.dim(1),
                                     "add_rmsnorm residual"));
    DUET_RETURN_IF_ERROR(
        CheckMatrix(out, kBF16, x.dim(0), x.dim(1), "add_rmsnorm out"));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    cuda::RmsNormParams p;
    p.x = Ptr<const __nv_bfloat16>(x);
    p.residual = Ptr<__nv_bfloat16>(residual);
    p.weight = Ptr<const __nv_bfloat16>(weight);
    p.out = Ptr<__nv_bfloat16>(out);
    p.rows = x.dim(0);
    p.dim = x.dim(1);
    p.eps = eps;
    return cuda::LaunchRmsNorm(p, stream(), options_.programmatic_launch);
  }

  absl::Status Linear(const TensorView& x, const TensorView& weight,
                      const TensorView& out) override {
    DUET_RETURN_IF_ERROR(CheckDevice(x, kBF16, "linear x"));
    DUET_RETURN_IF_ERROR(CheckDevice(weight, kBF16, "linear weight"));
    if (x.rank() != 2 || weight.rank() != 2 || x.dim(1) != weight.dim(1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("linear: x ", ShapeString(x.shape),
                       " does not match weight ", ShapeString(weight.shape)));
    }
    DUET_RETURN_IF_ERROR(
        CheckMatrix(out, kBF16, x.dim(0), weight.dim(0), "linear out"));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    return Gemm(x, weight, out, CUDA_R_16BF);
  }

  absl::Status LinearSiluMul(const TensorView& x, const TensorView& weight,
                             const TensorView& scratch,
                             const TensorView& out) override {
    DUET_RETURN_IF_ERROR(CheckDevice(x, kBF16, "linear_silu_mul x"));
    DUET_RETURN_IF_ERROR(CheckDevice(weight, kBF16, "linear_silu_mul weight"));
    if (x.rank() != 2 || weight.rank() != 2 || x.dim(1) != weight.dim(1) ||
        weight.dim(0) % 2 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "linear_silu_mul: x ", ShapeString(x.shape),
          " does not match a [2I, K] weight ", ShapeString(weight.shape)));
    }
    DUET_RETURN_IF_ERROR(CheckMatrix(out, kBF16, x.dim(0), weight.dim(0) / 2,
                                     "linear_silu_mul out"));
    DUET_RETURN_IF_ERROR(CheckMatrix(scratch, kBF16, x.dim(0), weight.dim(0),
                                     "linear_silu_mul scratch"));
    {
      ScopedDevice guard(device_);
      DUET_CUDA_RETURN_IF_ERROR(guard.status());
      if (std::optional<absl::Status> st =
              StreamingGemm(x, weight, out, /*silu_mul=*/true)) {
        return *st;
      }
    }
    return Backend::LinearSiluMul(x, weight, scratch, out);
  }

  absl::Status QkNormRope(const StepInputs& step, const AttentionShape& s,
                          const TensorView& qkv, const TensorView* q_norm,
                          const TensorView* k_norm, float eps,
                          const TensorView& inv_freq) override {
    return QkNormRopeMaybeWriteKv(step, s, qkv, q_norm, k_norm, eps, inv_freq,
                                  nullptr);
  }

  absl::Status QkNormRopeWriteKv(const StepInputs& step,
                                 const AttentionShape& s, const TensorView& qkv,
                                 const TensorView* q_norm,
                                 const TensorView* k_norm, float eps,
                                 const TensorView& inv_freq,
                                 const TensorView& kv_cache) override {
    return QkNormRopeMaybeWriteKv(step, s, qkv, q_norm, k_norm, eps, inv_freq,
                                  &kv_cache);
  }

  absl::Status WriteKvCache(const StepInputs& step, const AttentionShape& s,
                            const TensorView& qkv,
                            const TensorView& kv_cache) override {
    DUET_RETURN_IF_ERROR(meta().Check(step, s, "write_kv_cache"));
    DUET_RETURN_IF_ERROR(
        CheckMatrix(qkv, kBF16, step.num_tokens(), s.qkv_width(), "qkv"));
    DUET_RETURN_IF_ERROR(CheckCache(s, kv_cache));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    cuda::WriteKvCacheParams p;
    p.qkv = Ptr<const __nv_bfloat16>(qkv);
    p.num_tokens = step.num_tokens();
    p.num_heads = s.num_heads;
    p.num_kv_heads = s.num_kv_heads;
    p.head_dim = s.head_dim;
    p.block_size = s.block_size;
    p.slot_mapping = meta().device().slot_mapping;
    p.kv_cache = Ptr<__nv_bfloat16>(kv_cache);
    return cuda::LaunchWriteKvCache(p, stream());
  }

  absl::Status Attention(const StepInputs& step, const AttentionShape& s,
                         const TensorView& qkv, const TensorView& kv_cache,
                         float scale, const TensorView& out) override {
    DUET_RETURN_IF_ERROR(meta().Check(step, s, "attention"));
    DUET_RETURN_IF_ERROR(
        CheckMatrix(qkv, kBF16, step.num_tokens(), s.qkv_width(), "qkv"));
    DUET_RETURN_IF_ERROR(CheckCache(s, kv_cache));
    DUET_RETURN_IF_ERROR(CheckMatrix(out, kBF16, step.num_tokens(),
                                     int64_t{s.num_heads} * s.head_dim,
                                     "attention out"));
    if (s.num_kv_heads <= 0 || s.num_heads % s.num_kv_heads != 0) {
      return absl::InvalidArgumentError(
          "num_heads must be a multiple of num_kv_heads");
    }
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    const cuda::DeviceStep& d = meta().device();
    cuda::PagedAttentionParams p;
    p.q = Ptr<const __nv_bfloat16>(qkv);
    p.q_stride = s.qkv_width();
    p.num_heads = s.num_heads;
    p.num_kv_heads = s.num_kv_heads;
    p.head_dim = s.head_dim;
    p.block_size = s.block_size;
    p.kv_cache = Ptr<const __nv_bfloat16>(kv_cache);
    p.num_tokens = d.num_tokens;
    p.num_seqs = d.num_seqs;
    p.query_start = d.query_start;
    p.seq_lens = d.seq_lens;
    p.block_tables = d.block_tables;
    p.max_blocks_per_seq = d.max_blocks_per_seq;
    p.positions = d.positions;
    p.max_query_len = d.max_query_len;
    // Prefill grids use the real maximum; the decode split grid is sized for
    // the block-table capacity (a bound that stays valid when a CUDA graph
    // replays the launch for longer contexts).
    p.max_seq_len = step.mode == AttentionMode::kDecode
                        ? d.max_blocks_per_seq * s.block_size
                        : d.max_seq_len;
    p.scale = scale;
    p.out = Ptr<__nv_bfloat16>(out);
    p.out_stride = int64_t{s.num_heads} * s.head_dim;
    p.num_sms = num_sms_;
    p.prefill_warp_rows = options_.prefill_warp_rows;
    p.prefill_split_kv = options_.prefill_split_kv;
    p.host_query_start = step.query_start.data();
    const bool tiled =
        step.mode == AttentionMode::kPrefill && options_.tensor_core_prefill;
    // Decode, or prefill through the per-query path: token t reads its own
    // sequence's first positions[t] + 1 keys.
    if (!tiled) {
      p.token_seq = step.mode == AttentionMode::kDecode ? nullptr : d.token_seq;
    }
    DeviceBuffer workspace;
    const size_t ws = tiled ? cuda::PrefillAttentionWorkspaceBytes(p)
                            : cuda::DecodeAttentionWorkspaceBytes(p);
    if (ws > 0) {
      // Returned to the cache when this call ends; the kernels that use it
      // are ordered before any later user on the same stream.
      DUET_ASSIGN_OR_RETURN(workspace, DeviceBuffer::Make(allocator_, ws));
      p.workspace = workspace.data();
    }
    if (tiled) return cuda::LaunchPrefillAttention(p, stream());
    p.split_counters = split_counters_.as<unsigned int>();
    p.split_counter_capacity = kSplitCounters;
    return cuda::LaunchDecodeAttention(p, stream(),
                                       options_.programmatic_launch);
  }

  absl::Status SiluMul(const TensorView& gate_up,
                       const TensorView& out) override {
    DUET_RETURN_IF_ERROR(CheckDevice(gate_up, kBF16, "silu_mul gate_up"));
    if (gate_up.rank() != 2 || gate_up.dim(1) % 2 != 0) {
      return absl::InvalidArgumentError("silu_mul: gate_up must be [T, 2I]");
    }
    DUET_RETURN_IF_ERROR(CheckMatrix(out, kBF16, gate_up.dim(0),
                                     gate_up.dim(1) / 2, "silu_mul out"));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    return cuda::LaunchSiluMul(
        {Ptr<const __nv_bfloat16>(gate_up), Ptr<__nv_bfloat16>(out),
         gate_up.dim(0), gate_up.dim(1) / 2},
        stream(), options_.programmatic_launch);
  }

  absl::Status Logits(const StepInputs& step, const TensorView& x,
                      const TensorView& lm_head,
                      const TensorView& logits) override {
    DUET_RETURN_IF_ERROR(meta().Check(step, "logits"));
    DUET_RETURN_IF_ERROR(CheckDevice(x, kBF16, "logits x"));
    DUET_RETURN_IF_ERROR(CheckDevice(lm_head, kBF16, "lm_head"));
    if (x.rank() != 2 || lm_head.rank() != 2 || x.dim(1) != lm_head.dim(1) ||
        x.dim(0) != step.num_tokens()) {
      return absl::InvalidArgumentError(
          "logits: x must be [num_tokens, hidden] matching lm_head");
    }
    const int64_t rows = static_cast<int64_t>(step.logits_rows.size());
    const int64_t hidden = x.dim(1);
    DUET_RETURN_IF_ERROR(
        CheckMatrix(logits, kF32, rows, lm_head.dim(0), "logits out"));
    if (rows == 0) return absl::OkStatus();
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    const cuda::DeviceStep& d = meta().device();
    if (d.logits_rows_identity) return Gemm(x, lm_head, logits, CUDA_R_32F);
    // Only the requested rows go through the (vocabulary-sized) LM head.
    const Shape gathered_shape = {rows, hidden};
    DUET_ASSIGN_OR_RETURN(Tensor gathered, Allocate(kBF16, gathered_shape));
    DUET_RETURN_IF_ERROR(cuda::LaunchGatherRows(
        {x.data, d.logits_rows, rows,
         hidden * static_cast<int64_t>(sizeof(__nv_bfloat16)),
         gathered.view().data},
        stream(), options_.programmatic_launch));
    return Gemm(gathered.view(), lm_head, logits, CUDA_R_32F);
  }

  absl::Status Sample(const TensorView& logits, const SampleBatch& batch,
                      std::span<int32_t> tokens,
                      std::span<TokenLogprobs> logprobs) override {
    DUET_RETURN_IF_ERROR(
        CheckSampleArgs(logits, Device::kCuda, batch, tokens, logprobs));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    return sampler_.Run(logits, batch, tokens, logprobs, stream());
  }

  absl::StatusOr<HostBuffer> AllocateHostStaging(int64_t bytes) override {
    if (bytes <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AllocateHostStaging: bytes must be positive, got ", bytes));
    }
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    void* data = nullptr;
    // Portable: pinned for every device's context, so a tensor-parallel
    // rank on another GPU can stage through the same buffer.
    DUET_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&data, static_cast<size_t>(bytes),
                                            cudaHostAllocPortable));
    return HostBuffer(data, static_cast<size_t>(bytes),
                      [](void* p) { (void)cudaFreeHost(p); });
  }

  absl::Status GatherKvBlocks(const KvBlockPool& pool,
                              std::span<const int32_t> ids, void* host,
                              int64_t host_bytes) override {
    DUET_RETURN_IF_ERROR(CheckKvBlockCopy(pool, Device::kCuda, ids, host,
                                          host_bytes, /*unique_ids=*/false));
    DUET_RETURN_IF_ERROR(cuda::KvBlockTransfer::CheckAlignment(pool));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    return kv_blocks_.Gather(pool, ids, host, stream());
  }

  absl::Status ScatterKvBlocks(const void* host, int64_t host_bytes,
                               std::span<const int32_t> ids,
                               const KvBlockPool& pool) override {
    DUET_RETURN_IF_ERROR(CheckKvBlockCopy(pool, Device::kCuda, ids, host,
                                          host_bytes, /*unique_ids=*/true));
    DUET_RETURN_IF_ERROR(cuda::KvBlockTransfer::CheckAlignment(pool));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    return kv_blocks_.Scatter(host, ids, pool, stream());
  }

  absl::Status CopyKvBlocks(const KvBlockPool& src,
                            std::span<const int32_t> src_ids,
                            const KvBlockPool& dst,
                            std::span<const int32_t> dst_ids) override {
    DUET_RETURN_IF_ERROR(
        CheckKvPoolCopy(src, src_ids, dst, dst_ids, Device::kCuda));
    DUET_RETURN_IF_ERROR(cuda::KvBlockTransfer::CheckAlignment(src));
    DUET_RETURN_IF_ERROR(cuda::KvBlockTransfer::CheckAlignment(dst));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    return kv_blocks_.CopyBetweenPools(src, src_ids, dst, dst_ids, stream());
  }

  absl::StatusOr<std::shared_ptr<const StreamMark>> Mark() override {
    return cuda::RecordMark(device_, stream());
  }

  absl::StatusOr<std::unique_ptr<KvCopyQueue>> CreateKvCopyQueue() override {
    return cuda::MakeKvCopyQueue(device_, allocator_);
  }

  int64_t DeviceBytesReserved() const override {
    const cuda::AllocatorStats st = allocator_->stats();
    return static_cast<int64_t>(st.bytes_in_use + st.bytes_cached);
  }

  absl::Status Synchronize() override {
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    DUET_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream()));
    return absl::OkStatus();
  }

  bool WantsEagerStepBeforeCapture() const override {
    return options_.gemm_autotune_max_tokens > 0;
  }
  absl::StatusOr<std::unique_ptr<StepGraph>> CaptureStep(
      const StepInputs& step, const AttentionShape& shape, int32_t vocab_size,
      const std::function<absl::Status()>& record) override;

  cudaStream_t stream() const { return stream_.get(); }
  void* native_stream() override { return stream_.get(); }
  int device_index() const { return device_; }
  const std::shared_ptr<CachingAllocator>& allocator() const {
    return allocator_;
  }

 private:
  // QkNormRope, plus the KV-cache write in the same kernel when kv_cache
  // is given.
  absl::Status QkNormRopeMaybeWriteKv(
      const StepInputs& step, const AttentionShape& s, const TensorView& qkv,
      const TensorView* q_norm, const TensorView* k_norm, float eps,
      const TensorView& inv_freq, const TensorView* kv_cache) {
    DUET_RETURN_IF_ERROR(meta().Check(step, s, "qk_norm_rope"));
    DUET_RETURN_IF_ERROR(
        CheckMatrix(qkv, kBF16, step.num_tokens(), s.qkv_width(), "qkv"));
    DUET_RETURN_IF_ERROR(
        CheckVector(inv_freq, kF32, s.head_dim / 2, "inv_freq"));
    if ((q_norm == nullptr) != (k_norm == nullptr)) {
      return absl::InvalidArgumentError("q_norm and k_norm: both or neither");
    }
    cuda::QkNormRopeParams p;
    if (q_norm != nullptr) {
      DUET_RETURN_IF_ERROR(CheckVector(*q_norm, kBF16, s.head_dim, "q_norm"));
      DUET_RETURN_IF_ERROR(CheckVector(*k_norm, kBF16, s.head_dim, "k_norm"));
      p.q_norm = Ptr<const __nv_bfloat16>(*q_norm);
      p.k_norm = Ptr<const __nv_bfloat16>(*k_norm);
    }
    if (kv_cache != nullptr) {
      DUET_RETURN_IF_ERROR(CheckCache(s, *kv_cache));
      p.kv_cache = Ptr<__nv_bfloat16>(*kv_cache);
      p.slot_mapping = meta().device().slot_mapping;
      p.block_size = s.block_size;
    }
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    p.qkv = Ptr<__nv_bfloat16>(qkv);
    p.num_tokens = step.num_tokens();
    p.num_heads = s.num_heads;
    p.num_kv_heads = s.num_kv_heads;
    p.head_dim = s.head_dim;
    p.positions = meta().device().positions;
    p.eps = eps;
    p.inv_freq = Ptr<const float>(inv_freq);
    return cuda::LaunchQkNormRope(p, stream(), options_.programmatic_launch);
  }

  const cuda::StepMetadata& meta() const { return *current_; }

  // y = x * w^T (silu_mul: the fused gate/up GEMM) on the hand-written
  // weight-streaming kernels for decode's few tokens: small_gemm.h up to
  // small_gemm_max_tokens, skinny_gemm.h up to skinny_gemm_max_tokens.
  // nullopt when neither takes these sizes (sizes checked by the caller).
  std::optional<absl::Status> StreamingGemm(const TensorView& x,
                                            const TensorView& w,
                                            const TensorView& y,
                                            bool silu_mul) {
    const int64_t t = x.dim(0), n = w.dim(0), k = x.dim(1);
    cuda::SmallGemmParams p;
    p.x = Ptr<const __nv_bfloat16>(x);
    p.w = Ptr<const __nv_bfloat16>(w);
    p.y = Ptr<__nv_bfloat16>(y);
    p.tokens = t;
    p.n = n;
    p.k = k;
    p.silu_mul = silu_mul;
    if (t <= options_.small_gemm_max_tokens &&
        cuda::SmallGemmApplies(t, n, k)) {
      p.shape = options_.small_gemm_shape;
      return cuda::LaunchSmallGemm(p, stream(), options_.programmatic_launch);
    }
    if (t <= options_.skinny_gemm_max_tokens &&
        cuda::SkinnyGemmApplies(t, n, k)) {
      p.shape = options_.skinny_gemm_shape;
      return cuda::LaunchSkinnyGemm(p, stream(), options_.programmatic_launch);
    }
    return std::nullopt;
  }

  absl::Status Gemm(const TensorView& x, const TensorView& w,
                    const TensorView& y, cudaDataType_t out_type) {
    if (x.dim(1) == 0) {
      // An empty sum: cuBLASLt rejects k = 0, the answer is zeros.
      DUET_CUDA_RETURN_IF_ERROR(
          cudaMemsetAsync(y.data, 0, y.nbytes(), stream()));
      return absl::OkStatus();
    }
    if (out_type == CUDA_R_16BF) {
      if (std::optional<absl::Status> st =
              StreamingGemm(x, w, y, /*silu_mul=*/false)) {
        return *st;
      }
    }
    cuda::GemmParams p;
    p.x = x.data;
    p.w = w.data;
    p.y = y.data;
    p.tokens = x.dim(0);
    p.n = w.dim(0);
    p.k = x.dim(1);
    p.out_type = out_type;
    return gemm_.Run(p, stream());
  }

  // Declaration order is destruction order reversed: the allocator outlives
  // every buffer below, and the stream outlives the objects that queue
  // work on it.
  const int device_;
  const CudaBackendOptions options_;
  int num_sms_ = 0;
  std::shared_ptr<CachingAllocator> allocator_;
  cuda::CudaStream stream_;
  cuda::GemmRunner gemm_;
  cuda::StepMetadata metadata_;
  // The metadata ops read: metadata_, or a graph's own during its capture.
  const cuda::StepMetadata* current_ = &metadata_;
  cuda::HostTransfer transfer_;
  cuda::KvBlockTransfer kv_blocks_;
  cuda::DeviceSampler sampler_;
  // Decode attention's split arrival counters (attention.h): zero between
  // launches.
  static constexpr int64_t kSplitCounters = 4096;
  DeviceBuffer split_counters_;
};

// A CUDA graph of one step's ops plus what it bakes in: its own metadata
// buffers (replays upload into them, outside the graph) and the blocks its
// ops allocated while being recorded.
class CudaStepGraph final : public StepGraph {
 public:
  CudaStepGraph(CudaBackend* backend, const StepInputs& step,
                const AttentionShape& shape, int32_t vocab_size)
      : backend_(backend),
        shape_(shape),
        vocab_size_(vocab_size),
        mode_(step.mode),
        num_tokens_(step.num_tokens()),
        num_seqs_(step.num_seqs()),
        max_blocks_(step.max_blocks_per_seq),
        logits_rows_(step.logits_rows.size()) {}

  ~CudaStepGraph() override {
    ScopedDevice guard(backend_->device_index());
    // The last replay may still run: its memory is returned only after.
    (void)cudaStreamSynchronize(backend_->stream());
    if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
    backend_->allocator()->ReleaseCaptured(blocks_);
  }

  absl::Status Replay(const StepInputs& step) override {
    if (step.mode != mode_ || step.num_tokens() != num_tokens_ ||
        step.num_seqs() != num_seqs_ ||
        step.max_blocks_per_seq != max_blocks_ ||
        step.logits_rows.size() != logits_rows_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "graph replay: step of ", step.num_seqs(), " sequences, ",
          step.max_blocks_per_seq, " blocks per sequence does not match the ",
          num_seqs_, " x ", max_blocks_, " it was recorded for"));
    }
    DUET_RETURN_IF_ERROR(ValidateStep(step, shape_, vocab_size_));
    ScopedDevice guard(backend_->device_index());
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    const void* before = metadata_.device().token_ids;
    DUET_RETURN_IF_ERROR(metadata_.Upload(step, shape_, backend_->stream(),
                                          backend_->allocator()));
    if (metadata_.device().token_ids != before) {
      // Same sizes give the same layout; a moved buffer would leave the
      // graph reading freed memory.
      return absl::InternalError("graph replay: metadata buffer moved");
    }
    DUET_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_, backend_->stream()));
    return absl::OkStatus();
  }

  cuda::StepMetadata& metadata() { return metadata_; }
  void Adopt(cudaGraphExec_t exec, CachingAllocator::Blocks blocks) {
    exec_ = exec;
    blocks_ = std::move(blocks);
  }

 private:
  CudaBackend* const backend_;
  const AttentionShape shape_;
  const int32_t vocab_size_;
  const AttentionMode mode_;
  const int32_t num_tokens_, num_seqs_, max_blocks_;
  const size_t logits_rows_;
  cuda::StepMetadata metadata_;
  cudaGraphExec_t exec_ = nullptr;
  CachingAllocator::Blocks blocks_;
};

absl::StatusOr<std::unique_ptr<StepGraph>> CudaBackend::CaptureStep(
    const StepInputs& step, const AttentionShape& shape, int32_t vocab_size,
    const std::function<absl::Status()>& record) {
  DUET_RETURN_IF_ERROR(ValidateStep(step, shape, vocab_size));
  ScopedDevice guard(device_);
  DUET_CUDA_RETURN_IF_ERROR(guard.status());
  auto graph = std::make_unique<CudaStepGraph>(this, step, shape, vocab_size);
  DUET_RETURN_IF_ERROR(graph->metadata().Init());
  DUET_RETURN_IF_ERROR(
      graph->metadata().Upload(step, shape, stream(), allocator_));
  metadata_.Invalidate();
  current_ = &graph->metadata();
  allocator_->BeginCapture();
  // Relaxed: a cache miss inside the capture may cudaMalloc.
  cudaError_t rc =
      cudaStreamBeginCapture(stream(), cudaStreamCaptureModeRelaxed);
  absl::Status recorded = rc == cudaSuccess ? record() : absl::OkStatus();
  cudaGraph_t g = nullptr;
  if (rc == cudaSuccess) rc = cudaStreamEndCapture(stream(), &g);
  CachingAllocator::Blocks blocks = allocator_->EndCapture();
  current_ = &metadata_;
  cudaGraphExec_t exec = nullptr;
  if (rc == cudaSuccess && recorded.ok()) {
    rc = cudaGraphInstantiate(&exec, g, 0);
  }
  if (g != nullptr) (void)cudaGraphDestroy(g);
  graph->Adopt(exec, std::move(blocks));  // released with the graph
  if (rc != cudaSuccess) (void)cudaGetLastError();
  DUET_RETURN_IF_ERROR(recorded);
  DUET_CUDA_RETURN_IF_ERROR(rc);
  return std::unique_ptr<StepGraph>(std::move(graph));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(
    int device, const CudaBackendOptions& options) {
  DUET_RETURN_IF_ERROR(CheckCudaBackendOptions(options));
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: ", cudaGetErrorString(rc)));
  }
  if (device < 0 || device >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device ", device, " (", count, " visible)"));
  }
  cudaDeviceProp prop{};
  DUET_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  if (prop.major < 8) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA device ", device, " (", prop.name, ", sm_", prop.major,
        prop.minor, ") is older than sm_80, which the CUDA backend needs"));
  }
  auto backend = std::make_unique<CudaBackend>(device, options);
  DUET_RETURN_IF_ERROR(backend->Init());
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace duet::kernels
