#include "router/openai_logprobs.h"

#include <algorithm>
#include <cmath>

namespace duet::router::openai {
namespace {

using json = nlohmann::ordered_json;

// OpenAI's stand-in for -inf (JSON has none).
constexpr double kMinLogprob = -9999.0;

double Clamp(float v) {
  if (std::isnan(v)) return kMinLogprob;
  return std::max(static_cast<double>(v), kMinLogprob);
}

// Python's len() of a valid UTF-8 string: its code points.
int64_t CodePoints(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

json Bytes(const std::string& b) {
  json out = json::array();
  for (unsigned char c : b) out.push_back(static_cast<int>(c));
  return out;
}

}  // namespace

TokenText TokenString(const tokenizer::Tokenizer& tok, int32_t id) {
  TokenText t;
  bool any_before = false;
  // Special tokens are named too (skip_special_tokens off), as a one-token
  // decode in vLLM does.
  if (!tok.AppendTokenBytes(id, /*skip_special_tokens=*/false, &any_before,
                            &t.bytes)
           .ok()) {
    return TokenText{};
  }
  const int32_t one[] = {id};
  auto text = tok.Decode(one, /*skip_special_tokens=*/false);
  if (text.ok()) t.text = *std::move(text);
  return t;
}

json LogprobsBuilder::Empty() const {
  json o;
  if (chat_) {
    o["content"] = json::array();
  } else {
    o["tokens"] = json::array();
    o["token_logprobs"] = json::array();
    o["top_logprobs"] = json::array();
    o["text_offset"] = json::array();
  }
  return o;
}

json LogprobsBuilder::Build(const v1::TokenChunk& chunk) {
  json o = Empty();
  const int n = std::min(chunk.token_ids_size(), chunk.logprobs_size());
  for (int i = 0; i < n; ++i) {
    const v1::TokenLogprobs& lp = chunk.logprobs(i);
    const TokenText token = TokenString(*tok_, chunk.token_ids(i));
    const int alternatives =
        std::min({top_, lp.top_token_ids_size(), lp.top_logprobs_size()});
    if (chat_) {
      json entry;
      entry["token"] = token.text;
      entry["logprob"] = Clamp(lp.logprob());
      entry["bytes"] = Bytes(token.bytes);
      entry["top_logprobs"] = json::array();
      for (int k = 0; k < alternatives; ++k) {
        const TokenText alt = TokenString(*tok_, lp.top_token_ids(k));
        json a;
        a["token"] = alt.text;
        a["logprob"] = Clamp(lp.top_logprobs(k));
        a["bytes"] = Bytes(alt.bytes);
        entry["top_logprobs"].push_back(std::move(a));
      }
      o["content"].push_back(std::move(entry));
      continue;
    }
    o["tokens"].push_back(token.text);
    o["token_logprobs"].push_back(Clamp(lp.logprob()));
    json top = json::object();
    for (int k = 0; k < alternatives; ++k) {
      const std::string alt = TokenString(*tok_, lp.top_token_ids(k)).text;
      // Two ids with one text (e.g. both empty) share a key; the more
      // likely one, seen first, stays.
      if (!top.contains(alt)) top[alt] = Clamp(lp.top_logprobs(k));
    }
    if (!top.contains(token.text)) top[token.text] = Clamp(lp.logprob());
    o["top_logprobs"].push_back(std::move(top));
    o["text_offset"].push_back(text_offset_);
    text_offset_ += CodePoints(token.text);
  }
  return o;
}

}  // namespace duet::router::openai
