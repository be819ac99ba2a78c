// duet-tokenizer-bench: single-threaded Encode throughput on one text.
//
//   duet-tokenizer-bench --tokenizer assets/qwen3/tokenizer.json
//       [--text FILE | --generate_mb 1] [--iterations 20] [--dump_text OUT]
//
// Without --text it encodes a generated mixed corpus (English prose, code,
// Chinese, Japanese, numbers, emoji, odd whitespace); --dump_text writes that
// text so that scripts/make_tokenizer_golden.py --bench-text can time the
// reference `tokenizers` on the very same bytes. The printed id count and
// FNV-1a hash of the ids let the two runs be checked for identical output.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "common/clock.h"
#include "common/flags.h"
#include "tokenizer/tokenizer.h"

ABSL_FLAG(std::string, tokenizer, "", "path to tokenizer.json");
ABSL_FLAG(std::string, text, "", "text file to encode (default: generated corpus)");
ABSL_FLAG(double, generate_mb, 1.0, "size of the generated corpus in MiB");
ABSL_FLAG(int32_t, iterations, 20, "timed Encode calls (after one warm-up call)");
ABSL_FLAG(bool, add_special_tokens, false, "Encode's add_special_tokens");
ABSL_FLAG(std::string, dump_text, "", "write the encoded text to this file");
ABSL_FLAG(bool, per_line, false,
          "encode each line (newline included) with its own Encode call instead of the "
          "whole text in one call");

namespace {

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    s_ ^= s_ << 13;
    s_ ^= s_ >> 7;
    s_ ^= s_ << 17;
    return s_;
  }
  size_t Below(size_t n) { return static_cast<size_t>(Next() % n); }

 private:
  uint64_t s_;
};

template <size_t N>
const char* Pick(Rng& rng, const char* const (&pool)[N]) {
  return pool[rng.Below(N)];
}

std::string GenerateCorpus(size_t bytes) {
  static const char* const kWords[] = {
      "the", "of", "and", "to", "in", "is", "was", "that", "for", "it", "with", "as", "on",
      "be", "at", "by", "this", "had", "not", "are", "but", "from", "or", "have", "an",
      "they", "which", "one", "you", "were", "her", "all", "she", "there", "would", "their",
      "we", "him", "been", "has", "when", "who", "will", "more", "no", "if", "out", "so",
      "said", "what", "up", "its", "about", "into", "than", "them", "can", "only", "other",
      "new", "some", "could", "time", "these", "two", "may", "then", "do", "first", "any",
      "my", "now", "such", "like", "our", "over", "man", "me", "even", "most", "made",
      "after", "also", "did", "many", "before", "must", "through", "years", "where", "much",
      "your", "way", "well", "down", "should", "because", "each", "just", "those", "people",
      "Mr.", "how", "too", "little", "state", "good", "very", "make", "world", "still",
      "own", "see", "men", "work", "long", "get", "here", "between", "both", "life",
      "being", "under", "never", "day", "same", "another", "know", "while", "last",
      "might", "us", "great", "old", "year", "off", "come", "since", "against", "go",
      "came", "right", "used", "take", "three", "tokenizer", "inference", "throughput",
      "latency", "prefill", "decode", "attention", "transformer", "kernel", "memory",
      "don't", "it's", "I'm", "we're", "they've", "DON'T", "You'll", "Hello", "World"};
  static const char* const kCode[] = {
      "for (int i = 0; i < n; ++i) {\n    sum += values[i] * weights[i];\n}\n",
      "def encode(self, text: str) -> list[int]:\n    return self._tokenizer.encode(text).ids\n",
      "    if err != nil {\n\t\treturn nil, fmt.Errorf(\"open %s: %w\", path, err)\n\t}\n",
      "{\"model\": \"qwen3\", \"max_tokens\": 256, \"temperature\": 0.7, \"stream\": true}\n",
      "SELECT id, name, created_at FROM users WHERE age > 21 ORDER BY name;\n",
      "#include <vector>\n#include \"absl/status/status.h\"\n\nnamespace duet {\n",
      "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n}\n",
      "const result = await fetch(`/api/v1/items?page=${page}`);\r\n",
      "\t\t<div class=\"container\"><span id='x'>&nbsp;</span></div>\n"};
  static const char* const kChinese[] = {
      "我们今天讨论大型语言模型的推理效率。", "分词器把文本切成词元，然后模型逐个预测。",
      "北京的天气很好，适合出去散步。", "这个问题的答案并不简单，需要仔细思考。",
      "人工智能正在改变世界的许多行业。"};
  static const char* const kJapanese[] = {
      "東京は日本の首都です。", "今日はとても良い天気ですね。",
      "トークナイザーはテキストを分割します。", "ありがとうございました！"};
  static const char* const kEmoji[] = {"😀", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵", "❤️", "🚀", "🤖", "✨"};
  static const char* const kSpace[] = {" ", " ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n",
                                       "   ", "\u3000", "\u00a0"};
  Rng rng(0x5eed);
  std::string out;
  out.reserve(bytes + 256);
  while (out.size() < bytes) {
    const size_t kind = rng.Below(100);
    if (kind < 60) {  // a sentence of prose
      const size_t words = 5 + rng.Below(20);
      for (size_t w = 0; w < words; ++w) {
        if (w > 0) out += " ";
        if (rng.Below(25) == 0) {  // a made-up word, so BPE has real work
          const size_t len = 3 + rng.Below(10);
          for (size_t c = 0; c < len; ++c) out.push_back(static_cast<char>('a' + rng.Below(26)));
        } else {
          out += Pick(rng, kWords);
        }
      }
      out += rng.Below(4) == 0 ? ", " : ". ";
      if (rng.Below(8) == 0) out += Pick(rng, kSpace);
    } else if (kind < 72) {
      out += Pick(rng, kCode);
    } else if (kind < 82) {
      out += Pick(rng, kChinese);
    } else if (kind < 87) {
      out += Pick(rng, kJapanese);
    } else if (kind < 93) {
      out += absl::StrFormat(" %d", static_cast<int64_t>(rng.Next() % 10000000000ULL) >>
                                        rng.Below(30));
      out += rng.Below(2) ? "." : ",";
    } else if (kind < 97) {
      out += Pick(rng, kEmoji);
      out += " ";
    } else {
      out += Pick(rng, kSpace);
    }
  }
  return out;
}

// Lines with their '\n' kept, so that they concatenate back to `text`.
std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    const size_t nl = text.find('\n', start);
    const size_t end = nl == std::string::npos ? text.size() : nl + 1;
    lines.push_back(text.substr(start, end - start));
    start = end;
  }
  return lines;
}

uint64_t Fnv1a(const std::vector<int32_t>& ids) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const int32_t id : ids) {
    auto v = static_cast<uint32_t>(id);
    for (int i = 0; i < 4; ++i) {
      h ^= (v >> (8 * i)) & 0xFF;
      h *= 0x100000001b3ULL;
    }
  }
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  duet::ParseFlags(argc, argv);
  const std::string path = absl::GetFlag(FLAGS_tokenizer);
  if (path.empty()) {
    std::fprintf(stderr, "--tokenizer is required\n");
    return 2;
  }
  duet::Stopwatch load_clock;
  auto tokenizer = duet::tokenizer::Tokenizer::FromFile(path);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  const double load_ms = load_clock.ElapsedMs();

  std::string text;
  const std::string text_path = absl::GetFlag(FLAGS_text);
  if (!text_path.empty()) {
    std::ifstream in(text_path, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot open %s\n", text_path.c_str());
      return 1;
    }
    std::ostringstream s;
    s << in.rdbuf();
    text = s.str();
  } else {
    text = GenerateCorpus(static_cast<size_t>(absl::GetFlag(FLAGS_generate_mb) * 1048576.0));
  }
  if (const std::string dump = absl::GetFlag(FLAGS_dump_text); !dump.empty()) {
    std::ofstream out(dump, std::ios::binary);
    out << text;
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", dump.c_str());
      return 1;
    }
  }

  const bool special = absl::GetFlag(FLAGS_add_special_tokens);
  const int iterations = std::max(1, absl::GetFlag(FLAGS_iterations));
  const bool per_line = absl::GetFlag(FLAGS_per_line);
  const std::vector<std::string> inputs =
      per_line ? SplitLines(text) : std::vector<std::string>{text};
  // Encodes every input; the ids of all of them, concatenated.
  auto encode_all = [&]() -> absl::StatusOr<std::vector<int32_t>> {
    std::vector<int32_t> all;
    for (const std::string& input : inputs) {
      auto ids = (*tokenizer)->Encode(input, special);
      if (!ids.ok()) return ids.status();
      all.insert(all.end(), ids->begin(), ids->end());
    }
    return all;
  };
  auto warm = encode_all();  // also fills the word cache
  if (!warm.ok()) {
    std::fprintf(stderr, "%s\n", warm.status().ToString().c_str());
    return 1;
  }
  std::vector<double> ms;
  for (int i = 0; i < iterations; ++i) {
    duet::Stopwatch clock;
    auto ids = encode_all();
    ms.push_back(clock.ElapsedMs());
    if (!ids.ok() || ids->size() != warm->size()) {
      std::fprintf(stderr, "encode changed between iterations\n");
      return 1;
    }
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  const double mb = static_cast<double>(text.size()) / 1e6;
  const double tokens = static_cast<double>(warm->size());

  duet::Stopwatch decode_clock;
  auto decoded = (*tokenizer)->Decode(*warm, false);
  const double decode_ms = decode_clock.ElapsedMs();

  std::printf("tokenizer: %s (loaded in %.0f ms)\n", path.c_str(), load_ms);
  std::printf("text: %zu bytes (%s), %s\n", text.size(),
              text_path.empty() ? "generated corpus" : text_path.c_str(),
              per_line ? absl::StrFormat("%zu lines, one Encode call each", inputs.size()).c_str()
                       : "one Encode call");
  std::printf("ids: %zu, fnv1a64 0x%016llx\n", warm->size(),
              static_cast<unsigned long long>(Fnv1a(*warm)));
  std::printf("encode: %d iterations, median %.2f ms, best %.2f ms\n", iterations, median,
              ms.front());
  std::printf("duet encode (1 thread, median): %.2f MB/s, %.0f tokens/s\n", mb / (median / 1e3),
              tokens / (median / 1e3));
  std::printf("decode: %.2f ms, round trip %s\n", decode_ms,
              decoded.ok() && *decoded == text ? "exact" : "differs");
  return 0;
}
