// The backend interface: every op the transformer forward pass needs, so the
// forward pass (model/forward.cc) is written once and runs on the CPU
// reference backend (kernels/cpu) or the CUDA backend (kernels/cuda).
//
// Conventions:
// - Activations and KV cache live in backend memory in activation_dtype();
//   logits are always fp32.
// - The packed QKV activation is [num_tokens, (num_heads + 2 * num_kv_heads) *
//   head_dim] row-major: Q heads, then K heads, then V heads of each token.
// - The paged KV cache of one layer is [num_blocks][2 (K,V)][num_kv_heads]
//   [block_size][head_dim] (DESIGN.md §2).
// - Per-step metadata (token ids, positions, slots, block tables) is given
//   once to BeginStep(); device backends copy it to the device there, and the
//   ops of that step read it.
#ifndef DUET_KERNELS_BACKEND_H_
#define DUET_KERNELS_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/tensor.h"
#include "kernels/sampling.h"

namespace duet::kernels {

// Owning handle of backend memory. Move-only; frees on destruction.
class Tensor {
 public:
  using Deleter = std::function<void(void*)>;
  Tensor() = default;
  Tensor(TensorView view, Deleter deleter)
      : view_(std::move(view)), deleter_(std::move(deleter)) {}
  ~Tensor() { Reset(); }
  Tensor(Tensor&& other) noexcept { *this = std::move(other); }
  Tensor& operator=(Tensor&& other) noexcept {
    if (this != &other) {
      Reset();
      view_ = std::move(other.view_);
      deleter_ = std::move(other.deleter_);
      other.view_ = TensorView{};
      other.deleter_ = nullptr;
    }
    return *this;
  }
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  const TensorView& view() const { return view_; }
  bool empty() const { return view_.data == nullptr; }

 private:
  void Reset() {
    if (view_.data != nullptr && deleter_) deleter_(view_.data);
    view_.data = nullptr;
  }
  TensorView view_;
  Deleter deleter_;
};

// Owning handle of host memory from Backend::AllocateHostStaging. Move-only;
// frees on destruction (it may outlive the backend).
class HostBuffer {
 public:
  using Deleter = std::function<void(void*)>;
  HostBuffer() = default;
  HostBuffer(void* data, size_t size, Deleter deleter)
      : data_(data), size_(size), deleter_(std::move(deleter)) {}
  ~HostBuffer() { Reset(); }
  HostBuffer(HostBuffer&& other) noexcept { *this = std::move(other); }
  HostBuffer& operator=(HostBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      deleter_ = std::exchange(other.deleter_, nullptr);
    }
    return *this;
  }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void Reset() {
    if (data_ != nullptr && deleter_) deleter_(data_);
    data_ = nullptr;
    size_ = 0;
  }
  void* data_ = nullptr;
  size_t size_ = 0;
  Deleter deleter_;
};

// A paged KV pool as raw bytes, for moving whole blocks (KV transfer): per
// layer, `num_blocks` blocks of `block_bytes` starting at layer_base[l], so
// block b of layer l is layer_base[l] + b * block_bytes. This is the layout
// of one layer's [num_blocks][2][num_kv_heads][block_size][head_dim] cache.
struct KvBlockPool {
  std::vector<void*> layer_base;  // [num_layers], backend memory
  int32_t num_blocks = 0;
  int64_t block_bytes = 0;
  Device device = Device::kCpu;
};

// InvalidArgument unless `pool` is on `device` with a non-null base per layer
// (at least one layer), positive num_blocks and block_bytes, every id is in
// [0, num_blocks) (and, when `unique_ids`, listed once), `host` is non-null
// when there are ids, and `host_bytes` holds the packed blocks
// (num_layers * ids.size() * block_bytes). Shared by the backends.
absl::Status CheckKvBlockCopy(const KvBlockPool& pool, Device device,
                              std::span<const int32_t> ids, const void* host,
                              int64_t host_bytes, bool unique_ids);

// InvalidArgument unless both pools are valid on `device` (as
// CheckKvBlockCopy), have the same layers and block bytes, there are as
// many source as destination ids, every id is in its pool, and no
// destination block is listed twice.
absl::Status CheckKvPoolCopy(const KvBlockPool& src,
                             std::span<const int32_t> src_ids,
                             const KvBlockPool& dst,
                             std::span<const int32_t> dst_ids, Device device);

// A point in a backend's stream: reached once the work queued before it is
// done. Taken on the thread that owns the backend (the engine loop), waited
// on from any thread; the KV sender uses it to start copying a layer's KV as
// soon as the forward pass has written it, without stopping that pass.
class StreamMark {
 public:
  virtual ~StreamMark() = default;
  // Blocks until the mark is reached; DEADLINE_EXCEEDED at `deadline`.
  virtual absl::Status Wait(absl::Time deadline) const = 0;
};

// A second queue for moving whole KV blocks, driven by one thread that is
// not the backend's owner (the KV sender's): its copies run beside the
// forward pass instead of behind it on the backend's stream. Each copy
// returns once it is done or its deadline passed (DEADLINE_EXCEEDED); after
// a deadline the next call first waits out what is still queued, within
// its own deadline, so no buffer the queue reuses is overwritten while a
// copy may still read it. Arguments are checked as the Backend's copies.
class KvCopyQueue {
 public:
  virtual ~KvCopyQueue() = default;
  // The next copy starts only once `mark` (from the same backend) is
  // reached; on a GPU the wait is queued on the device, not done here.
  virtual absl::Status After(std::shared_ptr<const StreamMark> mark) = 0;
  // As Backend::GatherKvBlocks.
  virtual absl::Status Gather(const KvBlockPool& pool,
                              std::span<const int32_t> ids, void* host,
                              int64_t host_bytes, absl::Time deadline) = 0;
  // As Backend::CopyKvBlocks.
  virtual absl::Status Copy(const KvBlockPool& src,
                            std::span<const int32_t> src_ids,
                            const KvBlockPool& dst,
                            std::span<const int32_t> dst_ids,
                            absl::Time deadline) = 0;
};

enum class AttentionMode {
  // Queries of any length per sequence (chunked prefill): each new token
  // attends to the cached prefix and causally to the new tokens before it.
  kPrefill,
  // Exactly one new token per sequence (a decode step).
  kDecode,
};

// Host-side description of one forward step over a batch of sequences. Each
// sequence contributes query_start[s+1] - query_start[s] new tokens, which are
// the last tokens of its seq_lens[s] tokens in the cache after this step.
struct StepInputs {
  AttentionMode mode = AttentionMode::kPrefill;
  std::vector<int32_t> token_ids;     // [num_tokens]
  std::vector<int32_t> positions;     // [num_tokens]
  std::vector<int64_t> slot_mapping;  // [num_tokens] block * block_size + off
  std::vector<int32_t> query_start;   // [num_seqs + 1]
  std::vector<int32_t> seq_lens;      // [num_seqs]
  int32_t max_blocks_per_seq = 0;
  std::vector<int32_t> block_tables;  // [num_seqs * max_blocks_per_seq]
  std::vector<int32_t> logits_rows;   // token rows whose logits are wanted

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t num_seqs() const { return static_cast<int32_t>(seq_lens.size()); }
};

// Geometry every attention-related op needs.
struct AttentionShape {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t block_size = 0;
  int32_t num_blocks = 0;
  int32_t qkv_width() const {
    return (num_heads + 2 * num_kv_heads) * head_dim;
  }
};

// Checks that `step` is internally consistent for `shape` (sizes agree, slots
// and block ids in range, positions match seq_lens, decode has one token per
// sequence). Every backend calls this in BeginStep: a malformed step is an
// InvalidArgument, never an out-of-bounds access.
absl::Status ValidateStep(const StepInputs& step, const AttentionShape& shape,
                          int32_t vocab_size);

// InvalidArgument for a shape with a negative dim (what Allocate accepts).
absl::Status CheckAllocShape(const Shape& shape);

// Shape of UploadConcat(parts): dim 0 summed, the other dims equal in every
// part. InvalidArgument for no parts, a scalar part, a part that is not a
// non-null host tensor, or mismatched trailing dims. Shared by the backends.
absl::StatusOr<Shape> ConcatShape(const std::vector<TensorView>& parts);

// InvalidArgument unless logits is a non-empty [rows, vocab] fp32 tensor on
// `device`, specs and tokens both have `rows` entries, logprobs none or
// `rows`, every spec is in range (temperature finite >= 0, top_k >= 0,
// top_p in (0, 1], min_p in [0, 1], penalties finite with repetition > 0,
// num_logprobs in [-1, kMaxTopLogprobs]; logprobs has rows entries when any
// row asks for them), and seen_offsets (if any) has rows + 1 non-decreasing
// entries from 0 to seen.size() with every seen id in [0, vocab).
absl::Status CheckSampleArgs(const TensorView& logits, Device device,
                             const SampleBatch& batch,
                             std::span<const int32_t> tokens,
                             std::span<const TokenLogprobs> logprobs);

// A step recorded by Backend::CaptureStep (a CUDA graph on the CUDA
// backend): replaying it runs the same ops on new metadata of the same
// shape with one launch instead of hundreds.
class StepGraph {
 public:
  virtual ~StepGraph() = default;
  // Uploads `step`'s metadata and queues the recorded ops. `step` must
  // have the captured mode, token and sequence counts, max_blocks_per_seq
  // and number of logits rows (FailedPrecondition otherwise) and pass
  // ValidateStep (InvalidArgument).
  virtual absl::Status Replay(const StepInputs& step) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual absl::string_view name() const = 0;
  virtual Device device() const = 0;
  // dtype of activations, weights and KV cache on this backend.
  virtual DType activation_dtype() const = 0;

  virtual absl::StatusOr<Tensor> Allocate(DType dtype, const Shape& shape) = 0;
  // Copies host data in `src_dtype` into a new tensor of `dtype`, converting.
  virtual absl::StatusOr<Tensor> Upload(const void* src, DType src_dtype,
                                        DType dtype, const Shape& shape) = 0;
  // Concatenates host tensors along dim 0 into one new `dtype` tensor (fused
  // QKV and gate/up weights). All parts must agree on every other dim.
  virtual absl::StatusOr<Tensor> UploadConcat(
      const std::vector<TensorView>& parts, DType dtype) = 0;
  // Copies a backend tensor to host memory as fp32.
  virtual absl::Status DownloadF32(const TensorView& src, float* dst) = 0;

  // Validates and (on device backends) uploads the step metadata.
  virtual absl::Status BeginStep(const StepInputs& step,
                                 const AttentionShape& shape,
                                 int32_t vocab_size) = 0;

  // out[t] = table[token_ids[t]].
  virtual absl::Status Embedding(const StepInputs& step,
                                 const TensorView& table,
                                 const TensorView& out) = 0;
  // out = RMSNorm(x) * weight over the last dim of x [rows, dim].
  virtual absl::Status RmsNorm(const TensorView& x, const TensorView& weight,
                               float eps, const TensorView& out) = 0;
  // residual += x; out = RMSNorm(residual) * weight.
  virtual absl::Status AddRmsNorm(const TensorView& x,
                                  const TensorView& residual,
                                  const TensorView& weight, float eps,
                                  const TensorView& out) = 0;
  // out[T, N] = x[T, K] * weight[N, K]^T.
  virtual absl::Status Linear(const TensorView& x, const TensorView& weight,
                              const TensorView& out) = 0;
  // In place on qkv: optional per-head RMSNorm of Q and K heads (q_norm and
  // k_norm [head_dim], both null for Llama), then rotary embedding (rotate-half
  // form) at step.positions with inv_freq [head_dim / 2] (fp32).
  virtual absl::Status QkNormRope(const StepInputs& step,
                                  const AttentionShape& shape,
                                  const TensorView& qkv,
                                  const TensorView* q_norm,
                                  const TensorView* k_norm, float eps,
                                  const TensorView& inv_freq) = 0;
  // Writes the K and V heads of each token of qkv into its slot of the cache.
  virtual absl::Status WriteKvCache(const StepInputs& step,
                                    const AttentionShape& shape,
                                    const TensorView& qkv,
                                    const TensorView& kv_cache) = 0;
  // QkNormRope then WriteKvCache, in one pass where the backend can fuse
  // them (the CUDA backend does: one kernel instead of two per layer, which
  // counts at decode, where each is a few microseconds of launch and tail).
  virtual absl::Status QkNormRopeWriteKv(
      const StepInputs& step, const AttentionShape& shape,
      const TensorView& qkv, const TensorView* q_norm, const TensorView* k_norm,
      float eps, const TensorView& inv_freq, const TensorView& kv_cache) {
    if (absl::Status s =
            QkNormRope(step, shape, qkv, q_norm, k_norm, eps, inv_freq);
        !s.ok()) {
      return s;
    }
    return WriteKvCache(step, shape, qkv, kv_cache);
  }
  // out[T, num_heads * head_dim] = softmax(Q K^T * scale) V over the paged
  // cache (which already holds this step's K/V), causal, grouped-query.
  virtual absl::Status Attention(const StepInputs& step,
                                 const AttentionShape& shape,
                                 const TensorView& qkv,
                                 const TensorView& kv_cache, float scale,
                                 const TensorView& out) = 0;
  // out[T, I] = silu(g) * u where [g | u] = x * gate_up_weight[2I, K]^T, in
  // one kernel where the backend can fuse them (the CUDA backend does for
  // decode-sized x: one warp computes a gate row and its up row). `scratch`
  // [T, 2I] holds [g | u] on the unfused path; its contents are unspecified
  // afterwards. Same values as Linear then SiluMul.
  virtual absl::Status LinearSiluMul(const TensorView& x,
                                     const TensorView& gate_up_weight,
                                     const TensorView& scratch,
                                     const TensorView& out) {
    if (absl::Status s = Linear(x, gate_up_weight, scratch); !s.ok()) {
      return s;
    }
    return SiluMul(scratch, out);
  }
  // out[T, I] = silu(gate_up[:, :I]) * gate_up[:, I:].
  virtual absl::Status SiluMul(const TensorView& gate_up,
                               const TensorView& out) = 0;
  // logits[r, V] (fp32) = x[step.logits_rows[r]] * lm_head[V, H]^T.
  virtual absl::Status Logits(const StepInputs& step, const TensorView& x,
                              const TensorView& lm_head,
                              const TensorView& logits) = 0;
  // tokens[r] = the token drawn from row r of logits [rows, vocab] (fp32)
  // with batch.specs[r] and row r's seen tokens, by the procedure of
  // kernels/sampling.h (identical tokens on every backend); logprobs[r]
  // for the rows whose spec asks (logprobs may be empty when none does).
  // May overwrite logits. Returns when tokens and logprobs are written.
  virtual absl::Status Sample(const TensorView& logits,
                              const SampleBatch& batch,
                              std::span<int32_t> tokens,
                              std::span<TokenLogprobs> logprobs) = 0;
  // No penalties, no logprobs.
  absl::Status Sample(const TensorView& logits,
                      std::span<const SampleSpec> specs,
                      std::span<int32_t> tokens) {
    return Sample(logits, SampleBatch{specs, {}, {}}, tokens, {});
  }
  // Records the ops that `record` issues for `step` (validated and made
  // current as by BeginStep) without running them. Memory the ops allocate
  // stays reserved for the graph, so tensors they leave alive stay valid
  // while it lives; every tensor and cache the ops use must outlive it, and
  // it must not outlive the backend. UNIMPLEMENTED where the backend has no
  // graphs (CPU).
  virtual absl::StatusOr<std::unique_ptr<StepGraph>> CaptureStep(
      const StepInputs& step, const AttentionShape& shape, int32_t vocab_size,
      const std::function<absl::Status()>& record) {
    (void)step, (void)shape, (void)vocab_size, (void)record;
    return absl::UnimplementedError("this backend does not record graphs");
  }
  // True when the backend settles per-shape choices only outside a capture
  // (the CUDA backend's cuBLASLt autotune), so a step should run once op
  // by op before it is captured.
  virtual bool WantsEagerStepBeforeCapture() const { return false; }
  // Host memory of at least `bytes` for staging KV blocks to and from the
  // network (registered with UCX by kv_transfer): page-locked on device
  // backends, so the copies run at full PCIe rate without an extra bounce;
  // 64-byte aligned zeroed memory on the CPU. InvalidArgument for bytes <= 0,
  // RESOURCE_EXHAUSTED when the memory cannot be had.
  virtual absl::StatusOr<HostBuffer> AllocateHostStaging(int64_t bytes) = 0;
  // Copies block ids[i] of every layer of `pool` into host memory laid out
  // [layer][i][block_bytes] (`host`, at least host_bytes). Queued after the
  // work already on the backend's stream (the forward pass that wrote the
  // KV) and returns once the host bytes are valid. Ids may repeat.
  // InvalidArgument as CheckKvBlockCopy (duplicates allowed), before
  // anything is copied.
  virtual absl::Status GatherKvBlocks(const KvBlockPool& pool,
                                      std::span<const int32_t> ids, void* host,
                                      int64_t host_bytes) = 0;
  // The inverse: host [layer][i][block_bytes] into block ids[i] of every
  // layer of `pool`. Returns once `host` has been read (the caller may reuse
  // it); the pool writes are ordered before any later work on the backend's
  // stream (the next forward pass sees them). InvalidArgument as
  // CheckKvBlockCopy, ids listed twice included (two writes to one block).
  virtual absl::Status ScatterKvBlocks(const void* host, int64_t host_bytes,
                                       std::span<const int32_t> ids,
                                       const KvBlockPool& pool) = 0;
  // Block src_ids[i] of every layer of `src` (this backend's pool) into
  // block dst_ids[i] of the same layer of `dst`: device memory this backend
  // can write, such as another process's pool mapped through CUDA IPC.
  // Queued after the work already on the backend's stream (the forward pass
  // that wrote the KV); returns once the copy is done, so the bytes are
  // visible to the destination's owner. InvalidArgument as CheckKvPoolCopy,
  // before anything is copied.
  virtual absl::Status CopyKvBlocks(const KvBlockPool& src,
                                    std::span<const int32_t> src_ids,
                                    const KvBlockPool& dst,
                                    std::span<const int32_t> dst_ids) = 0;
  // A mark after everything queued on the backend's stream so far (on the
  // owner's thread). On the CPU every op is done when it returns, so the
  // mark is already reached.
  virtual absl::StatusOr<std::shared_ptr<const StreamMark>> Mark() = 0;
  // A copy queue of its own (see KvCopyQueue); it must not outlive the
  // backend.
  virtual absl::StatusOr<std::unique_ptr<KvCopyQueue>> CreateKvCopyQueue() = 0;
  // Device memory this backend holds (handed out or cached for reuse);
  // 0 on the CPU. What a node counts as its own when it sizes its KV pool
  // from a share of the device: free-memory readings would also count
  // other processes on the same GPU.
  virtual int64_t DeviceBytesReserved() const { return 0; }
  // Blocks until all queued work is done (no-op on CPU).
  virtual absl::Status Synchronize() = 0;
  // The device stream every op is queued on (a cudaStream_t on the CUDA
  // backend), for a Communicator whose collectives must be ordered with the
  // forward pass; nullptr on the CPU.
  virtual void* native_stream() { return nullptr; }
};

}  // namespace duet::kernels

#endif  // DUET_KERNELS_BACKEND_H_
