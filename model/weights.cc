#include "model/weights.h"

#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace duet::model {
namespace {

std::string LayerName(int32_t layer, absl::string_view suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

absl::StatusOr<TensorView> HostView(const Checkpoint& ckpt,
                                    const std::string& name) {
  DUET_ASSIGN_OR_RETURN(const TensorInfo* info, ckpt.Find(name));
  return TensorView{const_cast<void*>(info->data), info->dtype, info->shape,
                    Device::kCpu};
}

// Rows [begin, begin + count) of a row-major matrix: a view into the mapped
// file, no copy.
TensorView RowSlice(TensorView v, int64_t begin, int64_t count) {
  const int64_t row_bytes =
      v.shape[1] * static_cast<int64_t>(DTypeSize(v.dtype));
  v.data = static_cast<char*>(v.data) + begin * row_bytes;
  v.shape = {count, v.shape[1]};
  return v;
}

}  // namespace

absl::Status CheckTpShard(const ModelConfig& c, TpShard shard) {
  if (shard.size < 1 || shard.rank < 0 || shard.rank >= shard.size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor-parallel rank ", shard.rank, " of size ", shard.size));
  }
  auto divides = [&](int32_t n, const char* what) -> absl::Status {
    if (n % shard.size == 0) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor-parallel size ", shard.size, " does not divide the model's ",
        what, " (", n, "); pick a size that divides ", c.num_heads,
        " attention heads, ", c.num_kv_heads, " KV heads and ",
        c.intermediate_size, " intermediate"));
  };
  DUET_RETURN_IF_ERROR(divides(c.num_heads, "attention heads"));
  DUET_RETURN_IF_ERROR(divides(c.num_kv_heads, "KV heads"));
  DUET_RETURN_IF_ERROR(divides(c.intermediate_size, "intermediate size"));
  return absl::OkStatus();
}

ModelConfig ShardConfig(const ModelConfig& config, TpShard shard) {
  ModelConfig c = config;
  c.num_heads /= shard.size;
  c.num_kv_heads /= shard.size;
  c.intermediate_size /= shard.size;
  return c;
}

std::vector<WeightSpec> ExpectedWeights(const ModelConfig& c) {
  const int64_t h = c.hidden_size;
  std::vector<WeightSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, h},
                   WeightKind::kEmbedding, 0});
  for (int32_t l = 0; l < c.num_layers; ++l) {
    specs.push_back({LayerName(l, "input_layernorm.weight"), {h},
                     WeightKind::kNorm, 0});
    specs.push_back({LayerName(l, "self_attn.q_proj.weight"),
                     {c.q_size(), h}, WeightKind::kLinear, h});
    specs.push_back({LayerName(l, "self_attn.k_proj.weight"),
                     {c.kv_size(), h}, WeightKind::kLinear, h});
    specs.push_back({LayerName(l, "self_attn.v_proj.weight"),
                     {c.kv_size(), h}, WeightKind::kLinear, h});
    specs.push_back({LayerName(l, "self_attn.o_proj.weight"),
                     {h, c.q_size()}, WeightKind::kLinear, c.q_size()});
    if (c.qk_norm) {
      specs.push_back({LayerName(l, "self_attn.q_norm.weight"), {c.head_dim},
                       WeightKind::kNorm, 0});
      specs.push_back({LayerName(l, "self_attn.k_norm.weight"), {c.head_dim},
                       WeightKind::kNorm, 0});
    }
    specs.push_back({LayerName(l, "post_attention_layernorm.weight"), {h},
                     WeightKind::kNorm, 0});
    specs.push_back({LayerName(l, "mlp.gate_proj.weight"),
                     {c.intermediate_size, h}, WeightKind::kLinear, h});
    specs.push_back({LayerName(l, "mlp.up_proj.weight"),
                     {c.intermediate_size, h}, WeightKind::kLinear, h});
    specs.push_back({LayerName(l, "mlp.down_proj.weight"),
                     {h, c.intermediate_size}, WeightKind::kLinear,
                     c.intermediate_size});
  }
  specs.push_back({"model.norm.weight", {h}, WeightKind::kNorm, 0});
  if (!c.tie_word_embeddings) {
    specs.push_back(
        {"lm_head.weight", {c.vocab_size, h}, WeightKind::kLinear, h});
  }
  return specs;
}

absl::StatusOr<ModelWeights> LoadWeights(const Checkpoint& ckpt,
                                         const ModelConfig& c,
                                         kernels::Backend& backend,
                                         TpShard shard) {
  DUET_RETURN_IF_ERROR(CheckTpShard(c, shard));
  // 1. The checkpoint must hold exactly the expected tensors and shapes.
  const std::vector<WeightSpec> specs = ExpectedWeights(c);
  absl::flat_hash_set<std::string> expected;
  for (const WeightSpec& spec : specs) {
    expected.insert(spec.name);
    auto info = ckpt.Find(spec.name);
    if (!info.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint is missing tensor '", spec.name, "' required by ",
          c.tie_word_embeddings ? "a tied" : "an untied",
          " config.json: ", info.status().message()));
    }
    if ((*info)->shape != spec.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", spec.name, "' has shape ",
          ShapeString((*info)->shape), " but config.json implies ",
          ShapeString(spec.shape)));
    }
  }
  for (const std::string& name : ckpt.Names()) {
    // Some exporters store the RoPE table as a buffer; we recompute it.
    if (absl::EndsWith(name, "rotary_emb.inv_freq")) continue;
    if (!expected.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint has unexpected tensor '", name, "' (not part of a ",
          c.model_type, " model with this config.json",
          name == "lm_head.weight" ? "; tie_word_embeddings is true" : "",
          ")"));
    }
  }

  // 2. Upload this rank's slices, fusing Q/K/V and gate/up into single
  // matrices.
  const DType dt = backend.activation_dtype();
  const int64_t n = shard.size;
  auto upload = [&](const std::string& name) -> absl::StatusOr<kernels::Tensor> {
    DUET_ASSIGN_OR_RETURN(TensorView v, HostView(ckpt, name));
    return backend.Upload(v.data, v.dtype, dt, v.shape);
  };
  // Row slices (this rank's output rows) of each named matrix, stacked.
  auto upload_rows = [&](std::initializer_list<std::string> names)
      -> absl::StatusOr<kernels::Tensor> {
    std::vector<TensorView> parts;
    for (const std::string& name : names) {
      DUET_ASSIGN_OR_RETURN(TensorView v, HostView(ckpt, name));
      const int64_t rows = v.shape[0] / n;
      parts.push_back(RowSlice(v, shard.rank * rows, rows));
    }
    return backend.UploadConcat(parts, dt);
  };
  // This rank's input columns of a row-major [out, in] matrix.
  auto upload_columns =
      [&](const std::string& name) -> absl::StatusOr<kernels::Tensor> {
    DUET_ASSIGN_OR_RETURN(TensorView v, HostView(ckpt, name));
    if (n == 1) return backend.Upload(v.data, v.dtype, dt, v.shape);
    const size_t elem = DTypeSize(v.dtype);
    const int64_t rows = v.shape[0];
    const int64_t cols = v.shape[1] / n;
    std::vector<char> host(static_cast<size_t>(rows * cols) * elem);
    const char* src = static_cast<const char*>(v.data);
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(host.data() + r * cols * elem,
                  src + (r * v.shape[1] + shard.rank * cols) * elem,
                  cols * elem);
    }
    return backend.Upload(host.data(), v.dtype, dt, {rows, cols});
  };

  ModelWeights w;
  DUET_ASSIGN_OR_RETURN(w.embed, upload("model.embed_tokens.weight"));
  for (int32_t l = 0; l < c.num_layers; ++l) {
    LayerWeights lw;
    DUET_ASSIGN_OR_RETURN(lw.input_norm,
                          upload(LayerName(l, "input_layernorm.weight")));
    DUET_ASSIGN_OR_RETURN(
        lw.qkv, upload_rows({LayerName(l, "self_attn.q_proj.weight"),
                             LayerName(l, "self_attn.k_proj.weight"),
                             LayerName(l, "self_attn.v_proj.weight")}));
    if (c.qk_norm) {
      DUET_ASSIGN_OR_RETURN(lw.q_norm,
                            upload(LayerName(l, "self_attn.q_norm.weight")));
      DUET_ASSIGN_OR_RETURN(lw.k_norm,
                            upload(LayerName(l, "self_attn.k_norm.weight")));
    }
    DUET_ASSIGN_OR_RETURN(
        lw.o_proj, upload_columns(LayerName(l, "self_attn.o_proj.weight")));
    DUET_ASSIGN_OR_RETURN(
        lw.post_norm, upload(LayerName(l, "post_attention_layernorm.weight")));
    DUET_ASSIGN_OR_RETURN(
        lw.gate_up, upload_rows({LayerName(l, "mlp.gate_proj.weight"),
                                 LayerName(l, "mlp.up_proj.weight")}));
    DUET_ASSIGN_OR_RETURN(
        lw.down, upload_columns(LayerName(l, "mlp.down_proj.weight")));
    w.layers.push_back(std::move(lw));
  }
  DUET_ASSIGN_OR_RETURN(w.final_norm, upload("model.norm.weight"));
  if (!c.tie_word_embeddings) {
    DUET_ASSIGN_OR_RETURN(w.lm_head, upload("lm_head.weight"));
  }
  const std::vector<float> inv_freq = RopeInvFreq(c);
  DUET_ASSIGN_OR_RETURN(
      w.inv_freq,
      backend.Upload(inv_freq.data(), DType::kF32, DType::kF32,
                     {static_cast<int64_t>(inv_freq.size())}));
  return w;
}

}  // namespace duet::model
