// The requests a duet-bench run sends, from one of four datasets named as in
// vLLM's `bench serve` (--dataset-name):
//   random             token-id prompts of seeded random ids, lengths from
//                      --input-len / --output-len (and --range-ratio);
//   sharegpt           a ShareGPT JSON file: conversation turn 0 (human) is
//                      the prompt, turn 1's (gpt) length the output length;
//   jsonl (or custom)  one {"prompt": "...", "output_len"?: N} per line;
//   prefix-repetition  --num-prefixes shared token-id prefixes of
//                      --prefix-len tokens, each request one of them plus a
//                      random suffix (--input-len): prefix-cache workloads.
// Text prompts go to the router as GenerateRequest.prompt (the router
// tokenizes them; it needs --tokenizer); token-id prompts as
// prompt_token_ids. Everything here is deterministic in the seed.
#ifndef DUET_CLIENT_BENCH_DATASET_H_
#define DUET_CLIENT_BENCH_DATASET_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/bench_stats.h"

namespace duet::client {

enum class DatasetKind { kRandom, kShareGpt, kJsonl, kPrefixRepetition };

// "random", "sharegpt", "jsonl" (alias "custom", vLLM's name for it),
// "prefix-repetition" (or with '_'); INVALID_ARGUMENT naming --dataset-name.
absl::StatusOr<DatasetKind> ParseDatasetName(absl::string_view name);
// The canonical name ("random", "sharegpt", "jsonl", "prefix-repetition").
std::string DatasetName(DatasetKind kind);
inline bool IsTextDataset(DatasetKind kind) {
  return kind == DatasetKind::kShareGpt || kind == DatasetKind::kJsonl;
}

// Token count of a text, client side: for ShareGPT output lengths and
// length filters (the router counts the real prompt tokens; the report uses
// its count). Empty: EstimateTokens.
using TokenCounter = std::function<int(absl::string_view)>;
// ceil(bytes / 4), at least 1: roughly what byte-level BPE tokenizers give
// on English text. duet-bench --tokenizer counts exactly instead.
int EstimateTokens(absl::string_view text);

// What requests a run sends. For random, lengths are drawn uniformly from
// [min, max] (inclusive; min == max gives a fixed length); prefix-repetition
// uses the input range for the suffix.
struct WorkloadOptions {
  DatasetKind dataset = DatasetKind::kRandom;
  int num_requests = 100;
  int input_len_min = 128;
  int input_len_max = 128;
  int output_len_min = 128;
  int output_len_max = 128;
  // Token ids (prompts, prefixes) are uniform in [0, vocab_limit).
  int vocab_limit = 32000;
  uint64_t seed = 0;
  // prefix-repetition: tokens of each shared prefix, and how many there are.
  int prefix_len = 256;
  int num_prefixes = 10;
  // prefix-repetition: the share of requests that take one of the shared
  // prefixes; the others get a random prefix of their own, of the same
  // length (1: all share, as vLLM's dataset).
  double prefix_share = 1.0;
  // sharegpt / jsonl: the file.
  std::string dataset_path;
  // sharegpt / jsonl: > 0 makes every request generate this many tokens
  // (--output-len given on the command line); 0 uses the file's lengths
  // (jsonl lines without "output_len" take output_len_min).
  int output_len_override = 0;
  TokenCounter count_tokens;
};

// One request of the workload.
struct BenchRequestSpec {
  int index = 0;
  // Token-id datasets: the prompt. Empty for text datasets.
  std::vector<int32_t> prompt_token_ids;
  // Text datasets: the prompt, tokenized by the router.
  std::string prompt_text;
  // Prompt tokens: exact for ids, client-side count for text.
  int input_len = 0;
  // Tokens to generate (sent as max_tokens; exact with ignore_eos).
  int output_len = 0;
  // SamplingParams.seed, so sampled runs replay too.
  uint64_t sampling_seed = 0;
};

// A prompt read from a file, before sampling.
struct TextPrompt {
  std::string prompt;
  int prompt_len = 0;  // Tokens, by the TokenCounter.
  int output_len = 0;  // 0: not given (jsonl line without "output_len").
};

// ShareGPT JSON (a list of {"conversations": [{"from", "value"}, ...]}):
// entries with fewer than 2 turns are skipped, and, as vLLM filters them,
// prompts under 4 or over 1024 tokens, outputs under 4 tokens (unless
// `output_len_fixed`) and prompt + output over 2048 tokens. With
// `shuffle_seed` the entries are taken in that seeded order (else file
// order), stopping after `limit` usable ones. `source` names the file in
// errors: INVALID_ARGUMENT for bad JSON, a turn whose "value" is not a
// string, or nothing usable.
absl::StatusOr<std::vector<TextPrompt>> ParseShareGpt(
    absl::string_view json, const TokenCounter& count, bool output_len_fixed,
    absl::string_view source, std::optional<uint64_t> shuffle_seed = {},
    size_t limit = SIZE_MAX);

// JSONL: every non-blank line one object with a non-empty string "prompt"
// and optionally "output_len" (integer > 0). INVALID_ARGUMENT names
// `source` and the 1-based line number of the first bad line.
absl::StatusOr<std::vector<TextPrompt>> ParseJsonl(absl::string_view text,
                                                   const TokenCounter& count,
                                                   absl::string_view source);

// The whole workload; the same options give the same requests. random and
// prefix-repetition: request i does not depend on num_requests. sharegpt:
// the usable conversations in a seeded shuffle; jsonl: the lines in file
// order; both start over when num_requests exceeds the prompts.
// INVALID_ARGUMENT names the flag at fault (missing or unreadable
// --dataset-path, malformed file, bad lengths).
absl::StatusOr<std::vector<BenchRequestSpec>> LoadBenchRequests(
    const WorkloadOptions& options);

// random only (no files, never fails for valid options); LoadBenchRequests
// calls it.
std::vector<BenchRequestSpec> MakeBenchRequests(const WorkloadOptions& options);

}  // namespace duet::client

#endif  // DUET_CLIENT_BENCH_DATASET_H_
