#include "client/bench_dataset.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace duet::client {
namespace {

// Stream ids under DeriveSeed. Request i uses a stream of its own (derived
// from kRequestStream), so request i is the same whatever num_requests is.
// (Stream 2 is the arrival times: bench.h's kArrivalSeedStream.)
constexpr uint64_t kRequestStream = 1;
constexpr uint64_t kPrefixStream = 3;
constexpr uint64_t kShuffleStream = 4;

// vLLM's ShareGPT filters (benchmark_dataset.is_valid_sequence defaults).
constexpr int kMinSequenceLen = 4;
constexpr int kMaxPromptLen = 1024;
constexpr int kMaxTotalLen = 2048;

std::vector<int32_t> RandomIds(BenchRng& rng, int n, int vocab_limit) {
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) {
    id = static_cast<int32_t>(rng.UniformInt(0, vocab_limit - 1));
  }
  return ids;
}

int Count(const TokenCounter& count, absl::string_view text) {
  return count ? count(text) : EstimateTokens(text);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dataset-path: cannot read '", path, "': ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<BenchRequestSpec> MakePrefixRequests(const WorkloadOptions& o) {
  const uint64_t prefix_base = DeriveSeed(o.seed, kPrefixStream);
  std::vector<std::vector<int32_t>> prefixes;
  for (int p = 0; p < o.num_prefixes; ++p) {
    BenchRng rng(DeriveSeed(prefix_base, static_cast<uint64_t>(p)));
    prefixes.push_back(RandomIds(rng, o.prefix_len, o.vocab_limit));
  }
  std::vector<BenchRequestSpec> requests;
  const uint64_t base = DeriveSeed(o.seed, kRequestStream);
  for (int i = 0; i < o.num_requests; ++i) {
    BenchRng rng(DeriveSeed(base, static_cast<uint64_t>(i)));
    BenchRequestSpec spec;
    spec.index = i;
    // A seeded choice rather than round robin: caches see prefixes in no
    // fixed rotation (an LRU cache smaller than all prefixes would
    // otherwise always miss).
    const auto prefix = rng.UniformInt(0, o.num_prefixes - 1);
    const int suffix_len =
        static_cast<int>(rng.UniformInt(o.input_len_min, o.input_len_max));
    spec.output_len =
        static_cast<int>(rng.UniformInt(o.output_len_min, o.output_len_max));
    spec.sampling_seed = rng.Next();
    // Drawn only below 1, so the default's requests stay as they were.
    const bool own =
        o.prefix_share < 1.0 &&
        static_cast<double>(rng.UniformInt(0, 999999)) >= o.prefix_share * 1e6;
    spec.prompt_token_ids =
        own ? RandomIds(rng, o.prefix_len, o.vocab_limit) : prefixes[prefix];
    const std::vector<int32_t> suffix =
        RandomIds(rng, suffix_len, o.vocab_limit);
    spec.prompt_token_ids.insert(spec.prompt_token_ids.end(), suffix.begin(),
                                 suffix.end());
    spec.input_len = static_cast<int>(spec.prompt_token_ids.size());
    requests.push_back(std::move(spec));
  }
  return requests;
}

}  // namespace

absl::StatusOr<DatasetKind> ParseDatasetName(absl::string_view name) {
  std::string n = absl::AsciiStrToLower(name);
  std::replace(n.begin(), n.end(), '_', '-');
  if (n == "random") return DatasetKind::kRandom;
  if (n == "sharegpt") return DatasetKind::kShareGpt;
  if (n == "jsonl" || n == "custom") return DatasetKind::kJsonl;
  if (n == "prefix-repetition") return DatasetKind::kPrefixRepetition;
  return absl::InvalidArgumentError(
      absl::StrCat("--dataset-name: unknown dataset '", name,
                   "' (use random, sharegpt, jsonl or prefix-repetition)"));
}

std::string DatasetName(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::kRandom:
      return "random";
    case DatasetKind::kShareGpt:
      return "sharegpt";
    case DatasetKind::kJsonl:
      return "jsonl";
    case DatasetKind::kPrefixRepetition:
      return "prefix-repetition";
  }
  return "unknown";
}

int EstimateTokens(absl::string_view text) {
  return std::max<int>(1, static_cast<int>((text.size() + 3) / 4));
}

absl::StatusOr<std::vector<TextPrompt>> ParseShareGpt(
    absl::string_view json, const TokenCounter& count, bool output_len_fixed,
    absl::string_view source, std::optional<uint64_t> shuffle_seed,
    size_t limit) {
  const nlohmann::json data = nlohmann::json::parse(json, nullptr, false);
  if (data.is_discarded() || !data.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dataset-path ", source,
        ": not a ShareGPT file (expected a JSON list of {\"conversations\": "
        "[...]})"));
  }
  // Every entry's shape is checked up front (cheap); only the ones taken
  // are tokenized, in shuffled order, as vLLM samples: a 90k-conversation
  // file costs num-prompts tokenizations, not 180k.
  std::vector<size_t> candidates;
  for (size_t i = 0; i < data.size(); ++i) {
    const nlohmann::json& entry = data[i];
    if (!entry.is_object() || !entry.contains("conversations")) continue;
    const nlohmann::json& turns = entry["conversations"];
    if (!turns.is_array() || turns.size() < 2) continue;
    for (int t = 0; t < 2; ++t) {
      if (!turns[t].is_object() || !turns[t].contains("value") ||
          !turns[t]["value"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--dataset-path ", source, ": entry ", i, " turn ", t,
                         " has no string \"value\""));
      }
    }
    candidates.push_back(i);
  }
  if (shuffle_seed.has_value()) {
    // Seeded Fisher-Yates, as vLLM shuffles ShareGPT before sampling.
    BenchRng rng(*shuffle_seed);
    for (size_t i = candidates.size(); i > 1; --i) {
      std::swap(candidates[i - 1], candidates[rng.UniformInt(0, i - 1)]);
    }
  }
  std::vector<TextPrompt> prompts;
  for (size_t i : candidates) {
    if (prompts.size() >= limit) break;
    const nlohmann::json& turns = data[i]["conversations"];
    TextPrompt p;
    p.prompt = turns[0]["value"].get<std::string>();
    p.prompt_len = Count(count, p.prompt);
    p.output_len = Count(count, turns[1]["value"].get<std::string>());
    if (p.prompt.empty() || p.prompt_len < kMinSequenceLen ||
        (!output_len_fixed && p.output_len < kMinSequenceLen) ||
        p.prompt_len > kMaxPromptLen ||
        p.prompt_len + p.output_len > kMaxTotalLen) {
      continue;
    }
    prompts.push_back(std::move(p));
  }
  if (prompts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dataset-path ", source,
        ": no usable conversation (need 2+ turns, a prompt of 4..1024 "
        "tokens, an answer of 4+ tokens, 2048 tokens in all)"));
  }
  return prompts;
}

absl::StatusOr<std::vector<TextPrompt>> ParseJsonl(absl::string_view text,
                                                   const TokenCounter& count,
                                                   absl::string_view source) {
  std::vector<TextPrompt> prompts;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--dataset-path ", source, " line ", line_number, ": ", why,
          " (expected {\"prompt\": \"...\", "
          "\"output_len\": N} with output_len optional)"));
    };
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) return bad("not valid JSON");
    if (!j.is_object()) return bad("not a JSON object");
    if (!j.contains("prompt") || !j["prompt"].is_string() ||
        j["prompt"].get<std::string>().empty()) {
      return bad("needs a non-empty string \"prompt\"");
    }
    TextPrompt p;
    p.prompt = j["prompt"].get<std::string>();
    p.prompt_len = Count(count, p.prompt);
    if (j.contains("output_len")) {
      const nlohmann::json& n = j["output_len"];
      if (!n.is_number_integer() || n.get<int64_t>() <= 0 ||
          n.get<int64_t>() > (1 << 30)) {
        return bad("\"output_len\" must be an integer > 0");
      }
      p.output_len = n.get<int>();
    }
    prompts.push_back(std::move(p));
  }
  if (prompts.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dataset-path ", source, ": no prompt in the file"));
  }
  return prompts;
}

std::vector<BenchRequestSpec> MakeBenchRequests(
    const WorkloadOptions& options) {
  std::vector<BenchRequestSpec> requests;
  requests.reserve(std::max(options.num_requests, 0));
  const uint64_t base = DeriveSeed(options.seed, kRequestStream);
  for (int i = 0; i < options.num_requests; ++i) {
    BenchRng rng(DeriveSeed(base, static_cast<uint64_t>(i)));
    BenchRequestSpec spec;
    spec.index = i;
    const int input_len = static_cast<int>(
        rng.UniformInt(options.input_len_min, options.input_len_max));
    spec.output_len = static_cast<int>(
        rng.UniformInt(options.output_len_min, options.output_len_max));
    spec.sampling_seed = rng.Next();
    spec.prompt_token_ids = RandomIds(rng, input_len, options.vocab_limit);
    spec.input_len = input_len;
    requests.push_back(std::move(spec));
  }
  return requests;
}

absl::StatusOr<std::vector<BenchRequestSpec>> LoadBenchRequests(
    const WorkloadOptions& o) {
  if (o.dataset == DatasetKind::kRandom) return MakeBenchRequests(o);
  if (o.dataset == DatasetKind::kPrefixRepetition) {
    return MakePrefixRequests(o);
  }
  if (o.dataset_path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dataset-name ", DatasetName(o.dataset),
                     " needs --dataset-path FILE"));
  }
  absl::StatusOr<std::string> text = ReadFile(o.dataset_path);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<TextPrompt>> prompts =
      o.dataset == DatasetKind::kShareGpt
          ? ParseShareGpt(*text, o.count_tokens, o.output_len_override > 0,
                          o.dataset_path, DeriveSeed(o.seed, kShuffleStream),
                          static_cast<size_t>(o.num_requests))
          : ParseJsonl(*text, o.count_tokens, o.dataset_path);
  if (!prompts.ok()) return prompts.status();
  std::vector<BenchRequestSpec> requests;
  const uint64_t base = DeriveSeed(o.seed, kRequestStream);
  for (int i = 0; i < o.num_requests; ++i) {
    const TextPrompt& p = (*prompts)[i % prompts->size()];
    BenchRequestSpec spec;
    spec.index = i;
    spec.prompt_text = p.prompt;
    spec.input_len = p.prompt_len;
    spec.output_len = o.output_len_override > 0 ? o.output_len_override
                      : p.output_len > 0        ? p.output_len
                                                : o.output_len_min;
    spec.sampling_seed =
        BenchRng(DeriveSeed(base, static_cast<uint64_t>(i))).Next();
    requests.push_back(std::move(spec));
  }
  return requests;
}

}  // namespace duet::client
