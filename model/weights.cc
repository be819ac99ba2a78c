#include "model/weights.h"

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

}  // namespace

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
                                         kernels::Backend& backend) {
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

  // 2. Upload, fusing Q/K/V and gate/up into single matrices.
  const DType dt = backend.activation_dtype();
  auto upload = [&](const std::string& name) -> absl::StatusOr<kernels::Tensor> {
    DUET_ASSIGN_OR_RETURN(TensorView v, HostView(ckpt, name));
    return backend.Upload(v.data, v.dtype, dt, v.shape);
  };
  auto upload_concat = [&](std::initializer_list<std::string> names)
      -> absl::StatusOr<kernels::Tensor> {
    std::vector<TensorView> parts;
    for (const std::string& name : names) {
      DUET_ASSIGN_OR_RETURN(TensorView v, HostView(ckpt, name));
      parts.push_back(v);
    }
    return backend.UploadConcat(parts, dt);
  };

  ModelWeights w;
  DUET_ASSIGN_OR_RETURN(w.embed, upload("model.embed_tokens.weight"));
  for (int32_t l = 0; l < c.num_layers; ++l) {
    LayerWeights lw;
    DUET_ASSIGN_OR_RETURN(lw.input_norm,
                          upload(LayerName(l, "input_layernorm.weight")));
    DUET_ASSIGN_OR_RETURN(
        lw.qkv, upload_concat({LayerName(l, "self_attn.q_proj.weight"),
                               LayerName(l, "self_attn.k_proj.weight"),
                               LayerName(l, "self_attn.v_proj.weight")}));
    if (c.qk_norm) {
      DUET_ASSIGN_OR_RETURN(lw.q_norm,
                            upload(LayerName(l, "self_attn.q_norm.weight")));
      DUET_ASSIGN_OR_RETURN(lw.k_norm,
                            upload(LayerName(l, "self_attn.k_norm.weight")));
    }
    DUET_ASSIGN_OR_RETURN(lw.o_proj,
                          upload(LayerName(l, "self_attn.o_proj.weight")));
    DUET_ASSIGN_OR_RETURN(
        lw.post_norm, upload(LayerName(l, "post_attention_layernorm.weight")));
    DUET_ASSIGN_OR_RETURN(
        lw.gate_up, upload_concat({LayerName(l, "mlp.gate_proj.weight"),
                                   LayerName(l, "mlp.up_proj.weight")}));
    DUET_ASSIGN_OR_RETURN(lw.down,
                          upload(LayerName(l, "mlp.down_proj.weight")));
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
