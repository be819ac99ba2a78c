// Fuzzes the router's handling of a client's Generate request: the input is
// a serialized duet.v1.GenerateRequest, handed to RouterService::Generate
// directly (no server, no network; a default ServerContext and no writer).
// The registry holds one decode node (never contacted: max_model_len 4096)
// and no prefill node, so Generate runs the private Validate (text prompts
// tokenized with the router's tokenizer, stop strings, sampling ranges,
// prompt + max_tokens against the context) and TextStream::Create, then
// stops with UNAVAILABLE before any RPC. Everything after needs live nodes
// and is not reached.
//
// The tokenizer is the real Qwen3 one (assets/qwen3/tokenizer.json in the
// source tree; DUET_FUZZ_TOKENIZER=PATH picks another), loaded once.
//
// Then, for a request Generate accepted, the prompt_token_ids go through a
// TextStream with the request's stop strings, as the router does with a
// decode node's token stream.
//
// Invariants checked:
//   - Generate answers INVALID_ARGUMENT or (valid request, no prefill node)
//     UNAVAILABLE, nothing else;
//   - an ASCII prompt without special-token text decodes back to itself
//     (Decode(Encode(text)) == text; NFC leaves ASCII alone);
//   - TextStream: every delta is valid UTF-8; the text sent never holds a
//     stop string; without a stop, deltas + Finish() equal
//     Decode(ids, skip_special_tokens); with one, the text sent plus the
//     stop string is a prefix of that decode.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/logging.h"
#include "duet/v1/client.pb.h"
#include "duet/v1/registry.pb.h"
#include "fuzz/fuzz_util.h"
#include "router/node_registry.h"
#include "router/router_service.h"
#include "router/text_stream.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace v1 = duet::v1;
using duet::fuzz::Check;
using duet::fuzz::IsStrictUtf8;
using duet::fuzz::Printable;

struct State {
  std::unique_ptr<duet::tokenizer::Tokenizer> tokenizer;
  std::unique_ptr<duet::router::NodeRegistry> registry;
  std::unique_ptr<duet::router::RouterService> service;
};
State* g = nullptr;

bool IsAscii(absl::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

void CheckTextStream(const v1::GenerateRequest& req) {
  if (req.prompt_token_ids().empty()) return;
  std::vector<std::string> stops(req.sampling().stop().begin(),
                                 req.sampling().stop().end());
  auto stream = duet::router::TextStream::Create(g->tokenizer.get(), stops);
  if (!stream.ok()) return;  // an empty stop string
  const std::vector<int32_t> ids(req.prompt_token_ids().begin(),
                                 req.prompt_token_ids().end());
  std::string sent;
  size_t consumed = 0;
  bool stopped = false;
  std::string matched;
  // In chunks of 3, like a decode node's stream of several tokens a message.
  for (size_t i = 0; i < ids.size() && !stopped; i += 3) {
    const size_t n = std::min<size_t>(3, ids.size() - i);
    auto delta = stream->Add(std::span<const int32_t>(ids).subspan(i, n));
    if (!delta.ok()) return;  // an id the tokenizer does not know
    Check(IsStrictUtf8(delta->text), "TextStream delta is not valid UTF-8",
          Printable(delta->text));
    sent += delta->text;
    consumed += delta->tokens_consumed;
    if (delta->stopped) {
      stopped = true;
      matched = delta->matched_stop;
    }
  }
  if (!stopped) {
    const duet::router::TextStream::Delta tail = stream->Finish();
    sent += tail.text;
    if (tail.stopped) {
      stopped = true;
      matched = tail.matched_stop;
    }
  }
  // An id the tokenizer does not know (a model's padded vocabulary rows)
  // has no text in a stream (text_stream.cc), so the oracle decodes the
  // consumed ids without those.
  std::vector<int32_t> known;
  for (int32_t id : std::span<const int32_t>(ids).first(consumed)) {
    const int32_t one[] = {id};
    if (g->tokenizer->Decode(one, true).ok()) known.push_back(id);
  }
  auto full = g->tokenizer->Decode(known, true);
  Check(full.ok(), "Decode rejects ids it accepted one by one");
  if (!stopped) {
    Check(sent == *full, "TextStream text != Decode",
          absl::StrCat("'", Printable(sent), "' vs '", Printable(*full), "'"));
    for (const std::string& s : stops) {
      Check(!absl::StrContains(sent, s), "TextStream missed a stop string",
            Printable(s));
    }
    return;
  }
  Check(absl::StartsWith(*full, sent + matched),
        "TextStream text + stop string is not a prefix of Decode",
        absl::StrCat("'", Printable(sent), "' + '", Printable(matched),
                     "' vs '", Printable(*full), "'"));
  for (const std::string& s : stops) {
    Check(!absl::StrContains(sent, s), "TextStream sent a stop string",
          Printable(s));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  duet::SetMinLogSeverity(duet::LogSeverity::kError);
  g = new State();
  const char* env = std::getenv("DUET_FUZZ_TOKENIZER");
  const std::string path =
      env != nullptr && *env != '\0'
          ? std::string(env)
          : std::string(DUET_FUZZ_SOURCE_DIR "/assets/qwen3/tokenizer.json");
  auto tok = duet::tokenizer::Tokenizer::FromFile(path);
  if (!tok.ok())
    duet::fuzz::Fail("cannot load tokenizer", tok.status().ToString());
  g->tokenizer = std::move(*tok);

  g->registry = std::make_unique<duet::router::NodeRegistry>(
      absl::Seconds(1), absl::InfiniteDuration());
  v1::RegisterRequest reg;
  reg.set_role(v1::NODE_ROLE_DECODE);
  reg.set_address("127.0.0.1:1");  // never dialled: no prefill node
  reg.mutable_kv_layout()->set_num_layers(2);
  reg.mutable_kv_layout()->set_num_kv_heads(2);
  reg.mutable_kv_layout()->set_head_dim(16);
  reg.mutable_kv_layout()->set_block_size(16);
  reg.mutable_kv_layout()->set_dtype(v1::DTYPE_F32);
  reg.mutable_kv_layout()->set_tp_size(1);
  reg.set_max_model_len(4096);
  reg.set_total_kv_blocks(1024);
  auto id = g->registry->Register(reg);
  if (!id.ok()) duet::fuzz::Fail("cannot register", id.status().ToString());

  g->service = std::make_unique<duet::router::RouterService>(
      g->registry.get(), duet::router::RouterOptions(), g->tokenizer.get());
  g->service->set_tokenizer_eos(151645);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  v1::GenerateRequest req;
  if (!req.ParseFromArray(data,
                          static_cast<int>(std::min<size_t>(size, 1 << 20)))) {
    return 0;
  }
  bool accepted = false;  // passed Validate
  {
    grpc::ServerContext ctx;
    const grpc::Status s = g->service->Generate(&ctx, &req, nullptr);
    duet::fuzz::Note(req.ShortDebugString(),
                     absl::StrCat(s.error_code(), " ", s.error_message()));
    Check(s.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
              s.error_code() == grpc::StatusCode::UNAVAILABLE,
          "Generate answered neither INVALID_ARGUMENT nor UNAVAILABLE",
          absl::StrCat(s.error_code(), " ", s.error_message()));
    accepted = s.error_code() == grpc::StatusCode::UNAVAILABLE;
    if (accepted) {
      const auto& p = req.sampling();
      Check(p.max_tokens() > 0 && p.top_k() >= 0 && p.temperature() >= 0 &&
                p.top_p() >= 0 && p.top_p() <= 1,
            "Generate accepted out-of-range sampling params",
            p.ShortDebugString());
    }
  }

  // Round trip of ASCII text without special tokens.
  const std::string& text = req.prompt();
  if (!text.empty() && IsAscii(text) && !absl::StrContains(text, "<|") &&
      !absl::StrContains(text, "<think>") &&
      !absl::StrContains(text, "</think>") &&
      !absl::StrContains(text, "<tool_")) {
    auto ids = g->tokenizer->Encode(text, /*add_special_tokens=*/false);
    Check(ids.ok(), "Encode rejected ASCII text", ids.status().ToString());
    auto back = g->tokenizer->Decode(*ids, /*skip_special_tokens=*/false);
    Check(back.ok() && *back == text, "Decode(Encode(ASCII text)) != text",
          absl::StrCat("'", Printable(text), "' -> '",
                       back.ok() ? Printable(*back) : "error", "'"));
  }

  // The router streams text only for requests it accepted (stop strings
  // are then well-formed UTF-8 of bounded size).
  if (accepted) CheckTextStream(req);
  return 0;
}
