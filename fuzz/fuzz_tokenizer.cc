// Fuzzes tokenizer.json loading (Tokenizer::FromJson: BPE model, normalizer,
// pre-tokenizer, post-processor, decoder, added tokens) and, when the input
// loads, Encode/Decode of a few fixed strings and the incremental
// detokenizer with the loaded tokenizer.
//
// Invariants checked when the input loads:
//   - Encode without special tokens returns ids that name tokens
//     (0 <= id < vocab_size(), IdToToken has it) and that Decode accepts;
//   - Decode output is valid UTF-8;
//   - IncrementalDetokenizer deltas are valid UTF-8 and, with Flush, add up
//     to Decode's output (incremental_detokenizer.h's contract).
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "fuzz/fuzz_util.h"
#include "tokenizer/incremental_detokenizer.h"
#include "tokenizer/tokenizer.h"

namespace {

using duet::fuzz::Check;
using duet::fuzz::IsStrictUtf8;
using duet::fuzz::Printable;
using duet::tokenizer::Tokenizer;

constexpr const char* kTexts[] = {
    "Hello, world! It's 2025: x=3.14",
    "  leading spaces\tand\ttabs\r\n\nnew lines  ",
    ("h\xC3\xA9llo w\xC3\xB6rld \xE2\x9C\x93 \xE6\x97\xA5\xE6\x9C\xAC "
     "\xF0\x9F\x99\x82 e\xCC\x81"),
    "<|im_start|>user\nhi<|im_end|><s></s><|endoftext|>",
    "ab abc c aab bca",
    "",
};

void CheckDecode(const Tokenizer& tok, const std::vector<int32_t>& ids,
                 bool skip_special, absl::string_view what) {
  auto text = tok.Decode(ids, skip_special);
  if (!text.ok()) return;  // ids that name no token: checked by the caller
  Check(IsStrictUtf8(*text), "Decode returned invalid UTF-8",
        absl::StrCat(what, ": ", Printable(*text)));
  duet::tokenizer::IncrementalDetokenizer detok(&tok, skip_special);
  std::string streamed;
  for (int32_t id : ids) {
    auto delta = detok.Add(id);
    Check(delta.ok(), "IncrementalDetokenizer rejected an id Decode accepts",
          absl::StrCat(what, ": id ", id, ": ", delta.status().ToString()));
    Check(IsStrictUtf8(*delta), "incremental delta is not valid UTF-8",
          absl::StrCat(what, ": ", Printable(*delta)));
    streamed += *delta;
  }
  streamed += detok.Flush();
  Check(streamed == *text, "incremental detokenization != Decode",
        absl::StrCat(what, ": streamed '", Printable(streamed),
                     "' vs decoded '", Printable(*text), "'"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto loaded = Tokenizer::FromJson(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!loaded.ok()) {
    duet::fuzz::Note("rejected", loaded.status().ToString());
    Check(absl::IsInvalidArgument(loaded.status()),
          "a rejected tokenizer.json must be InvalidArgument",
          loaded.status().ToString());
    return 0;
  }
  const Tokenizer& tok = **loaded;
  const int32_t vocab = tok.vocab_size();
  duet::fuzz::Note("loaded", absl::StrCat("vocab_size ", vocab));
  Check(vocab >= 0, "negative vocab_size");

  for (const char* text : kTexts) {
    for (bool add_special : {false, true}) {
      auto ids = tok.Encode(text, add_special);
      if (!ids.ok()) {
        duet::fuzz::Note("Encode failed", ids.status().ToString());
        continue;
      }
      if (!add_special) {
        // Post-processor ids come from the file as they are; the model's and
        // the added tokens' must exist.
        for (int32_t id : *ids) {
          Check(id >= 0 && id < vocab && tok.IdToToken(id).has_value(),
                "Encode returned an id that names no token",
                absl::StrCat("'", Printable(text), "' -> ", id));
        }
        Check(tok.Decode(*ids, false).ok(),
              "Decode rejected ids Encode returned", Printable(text));
      }
      CheckDecode(tok, *ids, /*skip_special=*/false, text);
      CheckDecode(tok, *ids, /*skip_special=*/true, text);
    }
  }

  // Every id of a small vocabulary, one at a time and all together.
  std::vector<int32_t> all;
  for (int32_t id = 0; id < vocab && id < 512; ++id) {
    const auto token = tok.IdToToken(id);
    (void)tok.IsSpecialToken(id);
    if (!token.has_value()) continue;
    Check(tok.TokenToId(*token).has_value(),
          "TokenToId does not know a token IdToToken returned",
          Printable(*token));
    all.push_back(id);
  }
  CheckDecode(tok, all, /*skip_special=*/false, "all ids");
  CheckDecode(tok, all, /*skip_special=*/true, "all ids");
  // Out-of-range ids are errors, never reads past the tables.
  for (int64_t id : {int64_t{-1}, int64_t{vocab}, int64_t{vocab} + 1}) {
    if (id > std::numeric_limits<int32_t>::max()) continue;
    Check(
        !tok.Decode(std::vector<int32_t>{static_cast<int32_t>(id)}, false).ok(),
        "Decode accepted an id outside the vocabulary", absl::StrCat(id));
  }
  return 0;
}
