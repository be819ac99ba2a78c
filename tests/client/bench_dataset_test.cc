// duet-bench's datasets: the ShareGPT and JSONL parsers on the committed
// fixtures in tests/client/testdata (good and malformed), prefix
// repetition, and LoadBenchRequests' sampling and errors.
#include "client/bench_dataset.h"

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Fixture(const std::string& name) {
  return absl::StrCat(DUET_CLIENT_TESTDATA, "/", name);
}

std::string Read(const std::string& name) {
  std::ifstream in(Fixture(name));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string ErrorOf(const WorkloadOptions& w) {
  auto loaded = LoadBenchRequests(w);
  EXPECT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(loaded.status().message());
}

TEST(DatasetNameTest, VllmNamesAndAliases) {
  EXPECT_EQ(*ParseDatasetName("random"), DatasetKind::kRandom);
  EXPECT_EQ(*ParseDatasetName("ShareGPT"), DatasetKind::kShareGpt);
  EXPECT_EQ(*ParseDatasetName("custom"), DatasetKind::kJsonl);
  EXPECT_EQ(*ParseDatasetName("prefix_repetition"),
            DatasetKind::kPrefixRepetition);
  EXPECT_EQ(DatasetName(DatasetKind::kPrefixRepetition), "prefix-repetition");
  EXPECT_THAT(std::string(ParseDatasetName("sonnet").status().message()),
              HasSubstr("--dataset-name: unknown dataset 'sonnet'"));
}

TEST(ShareGptTest, HumanTurnIsThePromptGptTurnTheOutputLength) {
  // Estimates are ceil(bytes / 4): a = 11 / 23, c = 1 / 10 (prompt too
  // short), d = 11 / 1 (answer too short), e = 9 / 17, g = 11 / 18; b has
  // one turn and f none.
  auto prompts = ParseShareGpt(Read("sharegpt_small.json"), nullptr,
                               /*output_len_fixed=*/false, "s.json");
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  ASSERT_EQ(prompts->size(), 3u);
  EXPECT_EQ((*prompts)[0].prompt, "Explain how a transformer decodes tokens.");
  EXPECT_EQ((*prompts)[0].prompt_len, 11);
  EXPECT_EQ((*prompts)[0].output_len, 23);
  EXPECT_EQ((*prompts)[1].prompt, "What does a prefill node do in duet?");
  EXPECT_EQ((*prompts)[1].output_len, 17);  // Turn 1 only, not later ones.
  // With --output-len the answer's length no longer matters: d is kept.
  auto fixed = ParseShareGpt(Read("sharegpt_small.json"), nullptr, true, "s");
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(fixed->size(), 4u);
}

TEST(ShareGptTest, TakesUsableEntriesInSeededOrderUpToTheLimit) {
  // Only what is taken gets tokenized: count the counter's calls.
  int calls = 0;
  auto counting = [&calls](absl::string_view text) {
    ++calls;
    return EstimateTokens(text);
  };
  auto first = ParseShareGpt(Read("sharegpt_small.json"), counting, false, "s",
                             std::nullopt, 1);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 1u);
  EXPECT_EQ((*first)[0].prompt, "Explain how a transformer decodes tokens.");
  EXPECT_EQ(calls, 2);  // Entry a's two turns, nothing after.
  std::set<std::string> seen;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    auto two = ParseShareGpt(Read("sharegpt_small.json"), nullptr, false, "s",
                             seed, 2);
    ASSERT_TRUE(two.ok());
    ASSERT_EQ(two->size(), 2u);
    for (const TextPrompt& p : *two) seen.insert(p.prompt);
  }
  EXPECT_EQ(seen.size(), 3u);  // Only usable ones, and all of them.
}

TEST(ShareGptTest, TokenCounterDecidesLengthsAndFilters) {
  // A counter of words: the prompt limit of 1024 and the total of 2048 are
  // vLLM's.
  auto words = [](absl::string_view text) {
    return static_cast<int>(std::count(text.begin(), text.end(), ' ')) + 1;
  };
  auto prompts = ParseShareGpt(Read("sharegpt_small.json"), words, false, "s");
  ASSERT_TRUE(prompts.ok());
  std::vector<int> out;
  for (const TextPrompt& p : *prompts) out.push_back(p.output_len);
  EXPECT_THAT(out, ElementsAre(17, 13, 10));  // a, e, g
  std::string long_prompt(2000 * 2, 'x');
  for (size_t i = 1; i < long_prompt.size(); i += 2) long_prompt[i] = ' ';
  const std::string json =
      absl::StrCat(R"([{"conversations": [{"value": ")", long_prompt,
                   R"("}, {"value": "a b c d e"}]}])");
  EXPECT_THAT(
      std::string(
          ParseShareGpt(json, words, false, "long.json").status().message()),
      HasSubstr("no usable conversation"));
}

TEST(ShareGptTest, MalformedFilesNameTheProblem) {
  EXPECT_THAT(std::string(ParseShareGpt("{not json", nullptr, false, "x.json")
                              .status()
                              .message()),
              HasSubstr("--dataset-path x.json: not a ShareGPT file"));
  EXPECT_FALSE(ParseShareGpt(R"({"conversations": []})", nullptr, false, "x")
                   .ok());  // An object, not a list.
  EXPECT_THAT(std::string(ParseShareGpt(Read("sharegpt_bad_turn.json"), nullptr,
                                        false, "bad.json")
                              .status()
                              .message()),
              HasSubstr("bad.json: entry 1 turn 0 has no string \"value\""));
}

TEST(JsonlTest, PromptsAndOptionalOutputLengthsInFileOrder) {
  auto prompts = ParseJsonl(Read("prompts.jsonl"), nullptr, "p.jsonl");
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  ASSERT_EQ(prompts->size(), 3u);  // The blank line is skipped.
  EXPECT_EQ((*prompts)[0].prompt, "Summarize the design of duet in one line.");
  EXPECT_EQ((*prompts)[0].output_len, 7);
  EXPECT_EQ((*prompts)[1].output_len, 0);  // Not given.
  EXPECT_EQ((*prompts)[2].output_len, 3);
  EXPECT_EQ((*prompts)[2].prompt_len, EstimateTokens((*prompts)[2].prompt));
}

TEST(JsonlTest, MalformedLinesAreReportedByNumber) {
  const std::map<std::string, std::string> expected = {
      {"prompts_bad_json.jsonl", "line 3: not valid JSON"},
      {"prompts_no_prompt.jsonl",
       "line 2: needs a non-empty string \"prompt\""},
      {"prompts_bad_len.jsonl",
       "line 2: \"output_len\" must be an integer > 0"},
  };
  for (const auto& [file, message] : expected) {
    const auto s = ParseJsonl(Read(file), nullptr, file).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << file;
    EXPECT_THAT(std::string(s.message()),
                HasSubstr(absl::StrCat("--dataset-path ", file, " ", message)));
  }
  EXPECT_THAT(
      std::string(ParseJsonl("[1, 2]\n", nullptr, "a").status().message()),
      HasSubstr("line 1: not a JSON object"));
  EXPECT_THAT(std::string(ParseJsonl("\n\n", nullptr, "e").status().message()),
              HasSubstr("no prompt in the file"));
}

WorkloadOptions TextWorkload(DatasetKind kind, const std::string& file) {
  WorkloadOptions w;
  w.dataset = kind;
  w.dataset_path = Fixture(file);
  w.num_requests = 7;
  w.output_len_min = w.output_len_max = 5;
  w.seed = 1;
  return w;
}

TEST(LoadBenchRequestsTest, JsonlCyclesInOrderWithDefaultAndOverrideLengths) {
  WorkloadOptions w = TextWorkload(DatasetKind::kJsonl, "prompts.jsonl");
  auto requests = LoadBenchRequests(w);
  ASSERT_TRUE(requests.ok()) << requests.status();
  ASSERT_EQ(requests->size(), 7u);
  std::vector<int> lens;
  for (const BenchRequestSpec& r : *requests) {
    EXPECT_TRUE(r.prompt_token_ids.empty());
    lens.push_back(r.output_len);
  }
  // The file's lengths; the line without one takes --output-len (5).
  EXPECT_THAT(lens, ElementsAre(7, 5, 3, 7, 5, 3, 7));
  EXPECT_EQ((*requests)[3].prompt_text, (*requests)[0].prompt_text);
  EXPECT_NE((*requests)[3].sampling_seed, (*requests)[0].sampling_seed);
  w.output_len_override = 9;  // --output-len given: every request.
  for (const BenchRequestSpec& r : *LoadBenchRequests(w)) {
    EXPECT_EQ(r.output_len, 9);
  }
}

TEST(LoadBenchRequestsTest, ShareGptIsASeededShuffle) {
  WorkloadOptions w =
      TextWorkload(DatasetKind::kShareGpt, "sharegpt_small.json");
  w.num_requests = 3;
  std::set<std::string> first_prompts;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    w.seed = seed;
    const auto a = *LoadBenchRequests(w);
    const auto b = *LoadBenchRequests(w);
    ASSERT_EQ(a.size(), 3u);
    std::set<std::string> distinct;
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].prompt_text, b[i].prompt_text);  // Same seed, same order.
      distinct.insert(a[i].prompt_text);
    }
    EXPECT_EQ(distinct.size(), 3u);  // A permutation of the 3 usable ones.
    first_prompts.insert(a[0].prompt_text);
  }
  EXPECT_EQ(first_prompts.size(), 3u);  // Seeds change the order.
}

TEST(LoadBenchRequestsTest, FileErrorsNameTheFlag) {
  WorkloadOptions missing = TextWorkload(DatasetKind::kJsonl, "no_such.jsonl");
  EXPECT_THAT(ErrorOf(missing), HasSubstr("--dataset-path: cannot read '"));
  EXPECT_THAT(ErrorOf(missing), HasSubstr("No such file"));
  WorkloadOptions no_path = missing;
  no_path.dataset_path.clear();
  EXPECT_THAT(ErrorOf(no_path),
              HasSubstr("--dataset-name jsonl needs --dataset-path FILE"));
  EXPECT_THAT(
      ErrorOf(TextWorkload(DatasetKind::kJsonl, "prompts_bad_json.jsonl")),
      HasSubstr("line 3"));
}

TEST(PrefixRepetitionTest, RequestsShareTheirPrefixesAndDifferAfter) {
  WorkloadOptions w;
  w.dataset = DatasetKind::kPrefixRepetition;
  w.num_requests = 60;
  w.prefix_len = 16;
  w.num_prefixes = 3;
  w.input_len_min = 4;
  w.input_len_max = 8;
  w.output_len_min = w.output_len_max = 2;
  w.vocab_limit = 50000;
  w.seed = 5;
  auto requests = LoadBenchRequests(w);
  ASSERT_TRUE(requests.ok());
  std::map<std::vector<int32_t>, int> prefixes;
  std::set<std::vector<int32_t>> suffixes;
  for (const BenchRequestSpec& r : *requests) {
    ASSERT_GE(r.prompt_token_ids.size(), 20u);
    ASSERT_LE(r.prompt_token_ids.size(), 24u);
    EXPECT_EQ(r.input_len, static_cast<int>(r.prompt_token_ids.size()));
    ++prefixes[{r.prompt_token_ids.begin(), r.prompt_token_ids.begin() + 16}];
    suffixes.insert(
        {r.prompt_token_ids.begin() + 16, r.prompt_token_ids.end()});
  }
  ASSERT_EQ(prefixes.size(), 3u);
  for (const auto& [prefix, uses] : prefixes) EXPECT_GE(uses, 8);
  EXPECT_EQ(suffixes.size(), 60u);
  // Request i does not depend on how many are sent.
  w.num_requests = 10;
  const auto fewer = *LoadBenchRequests(w);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(fewer[i].prompt_token_ids, (*requests)[i].prompt_token_ids);
  }
}

TEST(PrefixRepetitionTest, PrefixShareGivesTheRestPrefixesOfTheirOwn) {
  WorkloadOptions w;
  w.dataset = DatasetKind::kPrefixRepetition;
  w.num_requests = 400;
  w.prefix_len = 16;
  w.num_prefixes = 1;
  w.input_len_min = w.input_len_max = 4;
  w.output_len_min = w.output_len_max = 2;
  w.vocab_limit = 50000;
  w.seed = 9;
  w.prefix_share = 0.9;
  auto requests = LoadBenchRequests(w);
  ASSERT_TRUE(requests.ok());
  std::map<std::vector<int32_t>, int> prefixes;
  for (const BenchRequestSpec& r : *requests) {
    ASSERT_EQ(r.prompt_token_ids.size(), 20u);
    ++prefixes[{r.prompt_token_ids.begin(), r.prompt_token_ids.begin() + 16}];
  }
  int shared = 0;
  for (const auto& [prefix, uses] : prefixes) shared = std::max(shared, uses);
  // 90% of 400 share the one prefix (binomial: 360 +- 6 sd); every other
  // request has a prefix no one else has.
  EXPECT_GT(shared, 330);
  EXPECT_LT(shared, 390);
  EXPECT_EQ(prefixes.size(), static_cast<size_t>(400 - shared + 1));
}

}  // namespace
}  // namespace duet::client
