// Fuzzes what a node does first with a peer's RPC request: the input is one
// serialized message, parsed (ParseFromArray) as a PrefillRequest, a
// DescribeResponse (what a prefill node gets back from the decode node),
// a ReserveRequest and a DecodeRequest in turn (proto/duet/v1/node.proto), and
// each parsed message goes through the serving/convert.h conversions its
// handler runs (FromProto of KvTransferDescriptor, SamplingParams, KvLayout,
// KvTransport) and then the public checks the engines apply right after
// (model::ValidateRequest, kv_transfer::CheckSameLayout against a fixed
// local layout, model::BlocksForTokens). The engines themselves (Submit,
// Reserve, StartDecode) need a loaded model and are not reached.
//
// Invariants checked: a conversion that succeeds yields values in the
// documented ranges (block ids in [0, num_blocks), layout sizes > 0,
// tp_rank < tp_size), and ToProto(FromProto(x)) converts back to the same
// value (FromProto(ToProto(d)) succeeds and ToProto of it serializes
// identically). Rejections must be InvalidArgument (FailedPrecondition for a
// CUDA IPC descriptor from another host, as documented).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "duet/v1/common.pb.h"
#include "duet/v1/node.pb.h"
#include "fuzz/fuzz_util.h"
#include "kv_transfer/kv_transfer.h"
#include "model/config.h"
#include "model/engine.h"
#include "model/kv_cache.h"
#include "model/sampler.h"
#include "serving/convert.h"

namespace {

namespace v1 = duet::v1;
using duet::fuzz::Check;

// What a tiny CPU node would hold locally.
const duet::model::ModelConfig& LocalConfig() {
  static const duet::model::ModelConfig* const config = [] {
    auto* c = new duet::model::ModelConfig();
    c->vocab_size = 151936;
    c->hidden_size = 64;
    c->intermediate_size = 128;
    c->num_layers = 2;
    c->num_heads = 4;
    c->num_kv_heads = 2;
    c->head_dim = 16;
    c->max_position_embeddings = 4096;
    c->eos_token_ids = {151645};
    return c;
  }();
  return *config;
}

duet::kv_transfer::KvLayout LocalLayout() {
  duet::kv_transfer::KvLayout l;
  l.num_layers = 2;
  l.num_kv_heads = 2;
  l.head_dim = 16;
  l.block_size = 16;
  l.dtype = duet::DType::kF32;
  return l;
}

void CheckRejection(const absl::Status& s, absl::string_view what) {
  duet::fuzz::Note(absl::StrCat(what, " rejected"), s.ToString());
  Check(absl::IsInvalidArgument(s) || absl::IsFailedPrecondition(s),
        absl::StrCat(what, " rejected with an unexpected code"), s.ToString());
}

std::optional<duet::kv_transfer::KvLayout> Layout(const v1::KvLayout& p) {
  auto l = duet::serving::FromProto(p);
  if (!l.ok()) {
    CheckRejection(l.status(), "KvLayout");
    return std::nullopt;
  }
  Check(l->num_layers > 0 && l->num_kv_heads > 0 && l->head_dim > 0 &&
            l->block_size > 0 && l->tp_size > 0 && l->tp_rank >= 0 &&
            l->tp_rank < l->tp_size,
        "KvLayout accepted out of range", p.ShortDebugString());
  const v1::KvLayout back = duet::serving::ToProto(*l);
  auto again = duet::serving::FromProto(back);
  Check(again.ok() && *again == *l, "KvLayout round trip differs",
        p.ShortDebugString());
  (void)duet::kv_transfer::CheckSameLayout(LocalLayout(), *l);
  (void)duet::kv_transfer::KvLayoutString(*l);
  return *std::move(l);
}

void Descriptor(const v1::KvTransferDescriptor& p) {
  auto d = duet::serving::FromProto(p);
  if (!d.ok()) {
    CheckRejection(d.status(), "KvTransferDescriptor");
    return;
  }
  duet::fuzz::Note("KvTransferDescriptor accepted");
  Check(d->num_blocks > 0, "descriptor accepted with num_blocks <= 0");
  for (int32_t id : d->block_ids) {
    Check(id >= 0 && id < d->num_blocks, "descriptor block id out of range",
          absl::StrCat(id, " of ", d->num_blocks));
  }
  if (d->transport == duet::kv_transfer::Transport::kUcx) {
    Check(d->ucx_rkeys.size() == static_cast<size_t>(d->layout.num_layers) &&
              d->remote_layer_base.size() ==
                  static_cast<size_t>(d->layout.num_layers),
          "UCX descriptor accepted without one rkey and base per layer");
  }
  // The decode node sends ToProto of what it built; the prefill node must
  // read back the same descriptor.
  const v1::KvTransferDescriptor back = duet::serving::ToProto(*d);
  auto again = duet::serving::FromProto(back);
  Check(again.ok(), "FromProto(ToProto(descriptor)) fails",
        again.status().ToString());
  std::string a, b;
  Check(back.SerializeToString(&a) &&
            duet::serving::ToProto(*again).SerializeToString(&b) && a == b,
        "descriptor round trip differs", back.ShortDebugString());
  (void)duet::kv_transfer::CheckSameLayout(LocalLayout(), d->layout);
}

std::optional<duet::model::SamplingParams> Sampling(
    const v1::SamplingParams& p) {
  auto s = duet::serving::FromProto(p);
  if (!s.ok()) {
    CheckRejection(s.status(), "SamplingParams");
    return std::nullopt;
  }
  Check(s->top_p != 0.0f, "top_p 0 (unset) was not mapped to 1");
  const absl::Status valid =
      duet::model::ValidateSamplingParams(*s, LocalConfig().vocab_size);
  duet::fuzz::Note("ValidateSamplingParams", valid.ToString());
  if (valid.ok()) {
    Check(std::isfinite(s->temperature) && s->temperature >= 0 &&
              s->top_k >= 0 && s->top_p > 0 && s->top_p <= 1 &&
              s->max_tokens > 0,
          "ValidateSamplingParams accepted out-of-range params",
          p.ShortDebugString());
    for (int32_t id : s->stop_token_ids) {
      Check(id >= 0 && id < LocalConfig().vocab_size,
            "ValidateSamplingParams accepted a stop id outside the vocabulary",
            absl::StrCat(id));
    }
    (void)duet::model::ToSampleSpec(*s, 0);
  }
  return *std::move(s);
}

void Request(const std::vector<int32_t>& prompt,
             const duet::model::SamplingParams& params) {
  const absl::Status s =
      duet::model::ValidateRequest(prompt, params, LocalConfig());
  duet::fuzz::Note("ValidateRequest", s.ToString());
  if (!s.ok()) return;
  Check(!prompt.empty(), "ValidateRequest accepted an empty prompt");
  for (int32_t id : prompt) {
    Check(id >= 0 && id < LocalConfig().vocab_size,
          "ValidateRequest accepted an id outside the vocabulary",
          absl::StrCat(id));
  }
  Check(static_cast<int64_t>(prompt.size()) + params.max_tokens <=
            LocalConfig().max_position_embeddings,
        "ValidateRequest accepted a request beyond the context");
  Check(duet::model::BlocksForTokens(static_cast<int64_t>(prompt.size()),
                                     LocalLayout().block_size) > 0,
        "BlocksForTokens of a valid prompt <= 0");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int n = static_cast<int>(std::min<size_t>(size, 1 << 20));
  {  // Prefill node: PrefillService::Prefill.
    v1::PrefillRequest req;
    if (req.ParseFromArray(data, n)) {
      duet::fuzz::Note("as PrefillRequest", req.ShortDebugString());
      const auto params = Sampling(req.sampling());
      if (params.has_value()) {
        Request(std::vector<int32_t>(req.prompt_token_ids().begin(),
                                     req.prompt_token_ids().end()),
                *params);
      }
    }
  }
  {  // Prefill node: the decode node's answer to Describe.
    v1::DescribeResponse reply;
    if (reply.ParseFromArray(data, n)) {
      duet::fuzz::Note("as DescribeResponse", reply.ShortDebugString());
      Descriptor(reply.kv_transfer());
    }
  }
  {  // Decode node: DecodeService::Reserve.
    v1::ReserveRequest req;
    if (req.ParseFromArray(data, n)) {
      duet::fuzz::Note("as ReserveRequest", req.ShortDebugString());
      (void)Layout(req.expected_layout());
      auto transport = duet::serving::FromProto(req.kv_transport());
      if (transport.ok()) {
        if (transport->has_value()) {
          Check(duet::serving::ToProto(**transport) == req.kv_transport(),
                "KvTransport round trip differs");
        } else {
          Check(req.kv_transport() == v1::KV_TRANSPORT_UNSPECIFIED,
                "only UNSPECIFIED maps to the node's default transport");
        }
      } else {
        CheckRejection(transport.status(), "KvTransport");
      }
    }
  }
  {  // Decode node: DecodeService::Decode.
    v1::DecodeRequest req;
    if (req.ParseFromArray(data, n)) {
      duet::fuzz::Note("as DecodeRequest", req.ShortDebugString());
      const auto params = Sampling(req.sampling());
      if (params.has_value()) {
        std::vector<int32_t> prompt(req.prompt_token_ids().begin(),
                                    req.prompt_token_ids().end());
        Request(prompt, *params);
      }
    }
  }
  return 0;
}
