#include "tokenizer/bpe.h"

#include <algorithm>
#include <climits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/json_util.h"
#include "tokenizer/utf8.h"

namespace duet::tokenizer {
namespace {

using json_util::Json;

// Vocabularies larger than this are rejected: ids index dense tables.
constexpr int64_t kMaxVocabId = int64_t{1} << 24;
// Words up to this many symbols merge with the scan-based MergeAllSmall.
constexpr size_t kSmallWord = 48;

}  // namespace

bool BpeWordCache::Lookup(absl::string_view word, std::vector<int32_t>* ids) const {
  const size_t h = absl::HashOf(word);
  const Shard& shard = shards_[h % kShards];
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.slots.empty()) return false;
  const Slot& slot = shard.slots[(h / kShards) % kSlotsPerShard];
  if (slot.word != word || slot.ids.empty()) return false;
  ids->insert(ids->end(), slot.ids.begin(), slot.ids.end());
  return true;
}

void BpeWordCache::Insert(absl::string_view word, const int32_t* ids, size_t n) {
  const size_t h = absl::HashOf(word);
  Shard& shard = shards_[h % kShards];
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.slots.empty()) shard.slots.resize(kSlotsPerShard);
  Slot& slot = shard.slots[(h / kShards) % kSlotsPerShard];
  slot.word.assign(word.data(), word.size());
  slot.ids.assign(ids, ids + n);
}

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const Json& config) {
  if (!config.is_object()) return absl::InvalidArgumentError("\"model\" must be an object");
  std::string type = json_util::TypeOf(config);
  if (type == "<missing>" && json_util::Find(config, "merges") != nullptr) type = "BPE";
  if (type != "BPE") {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported model type \"", type, "\" (only BPE is supported)"));
  }
  constexpr absl::string_view kWhere = "model BPE";
  auto model = std::unique_ptr<BpeModel>(new BpeModel());

  const Json* dropout = json_util::Find(config, "dropout");
  if (dropout != nullptr && !dropout->is_null() &&
      !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return absl::InvalidArgumentError("model BPE: dropout is not supported (encoding is random)");
  }
  DUET_ASSIGN_OR_RETURN(model->unk_token_, json_util::GetOptionalString(config, "unk_token", kWhere));
  DUET_ASSIGN_OR_RETURN(std::optional<std::string> prefix,
                        json_util::GetOptionalString(config, "continuing_subword_prefix", kWhere));
  DUET_ASSIGN_OR_RETURN(std::optional<std::string> suffix,
                        json_util::GetOptionalString(config, "end_of_word_suffix", kWhere));
  model->continuing_subword_prefix_ = prefix.value_or("");
  model->end_of_word_suffix_ = suffix.value_or("");
  DUET_ASSIGN_OR_RETURN(model->fuse_unk_, json_util::GetBool(config, "fuse_unk", false, kWhere));
  DUET_ASSIGN_OR_RETURN(model->byte_fallback_,
                        json_util::GetBool(config, "byte_fallback", false, kWhere));
  DUET_ASSIGN_OR_RETURN(model->ignore_merges_,
                        json_util::GetBool(config, "ignore_merges", false, kWhere));

  const Json* vocab = json_util::Find(config, "vocab");
  if (vocab == nullptr || !vocab->is_object()) {
    return absl::InvalidArgumentError("model BPE: \"vocab\" must be an object");
  }
  model->vocab_.reserve(vocab->size());
  int32_t max_id = -1;
  for (const auto& [token, id_json] : vocab->items()) {
    DUET_ASSIGN_OR_RETURN(int32_t id, json_util::ToId(id_json, kWhere));
    if (id >= kMaxVocabId) {
      return absl::InvalidArgumentError(absl::StrCat("model BPE: token id ", id, " too large"));
    }
    model->vocab_[token] = id;
    max_id = std::max(max_id, id);
  }
  model->tokens_by_id_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [token, id] : model->vocab_) model->tokens_by_id_[id] = token;

  if (model->unk_token_ && !model->vocab_.contains(*model->unk_token_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model BPE: unk_token \"", *model->unk_token_, "\" is not in the vocab"));
  }

  const Json* merges = json_util::Find(config, "merges");
  if (merges == nullptr || !merges->is_array()) {
    return absl::InvalidArgumentError("model BPE: \"merges\" must be a list");
  }
  model->merges_.reserve(merges->size());
  const size_t prefix_len = model->continuing_subword_prefix_.size();
  int32_t rank = 0;
  for (const Json& m : *merges) {
    std::string a, b;
    if (m.is_string()) {
      const std::string& line = m.get_ref<const std::string&>();
      const size_t space = line.find(' ');
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("model BPE: merge ", rank, " \"", line, "\" has no space"));
      }
      a = line.substr(0, space);
      b = line.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("model BPE: merge ", rank, " is neither \"a b\" nor [a, b]"));
    }
    const auto ia = model->vocab_.find(a);
    const auto ib = model->vocab_.find(b);
    if (ia == model->vocab_.end() || ib == model->vocab_.end() || b.size() < prefix_len) {
      return absl::InvalidArgumentError(
          absl::StrCat("model BPE: merge ", rank, " uses a token not in the vocab"));
    }
    const auto in = model->vocab_.find(absl::StrCat(a, absl::string_view(b).substr(prefix_len)));
    if (in == model->vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model BPE: merge ", rank, " makes a token not in the vocab"));
    }
    // A repeated pair keeps its last rank, as the reference's HashMap does.
    model->merges_[PairKey(ia->second, ib->second)] = Merge{rank, in->second};
    ++rank;
  }

  // Raw-byte mode: each byte's byte-level character must be a token.
  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
  model->supports_raw_bytes_ = prefix_len == 0 && model->end_of_word_suffix_.empty();
  for (int b = 0; b < 256 && model->supports_raw_bytes_; ++b) {
    const auto it = model->vocab_.find(alphabet.Encoded(static_cast<uint8_t>(b)));
    if (it == model->vocab_.end()) {
      model->supports_raw_bytes_ = false;
    } else {
      model->byte_ids_[b] = it->second;
    }
  }
  if (model->supports_raw_bytes_ && model->ignore_merges_) {
    for (const auto& [token, id] : model->vocab_) {
      std::string raw;
      if (alphabet.Unmap(token, &raw)) model->raw_vocab_.emplace(std::move(raw), id);
    }
  }
  return model;
}

std::optional<int32_t> BpeModel::TokenToId(absl::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::InitialSymbols(absl::string_view word,
                              absl::InlinedVector<int32_t, 32>* symbols) const {
  // Mirrors the reference merge_word, including its quirk that byte-fallback
  // tokens do not flush a pending unk first.
  std::optional<int32_t> pending_unk;
  const std::optional<int32_t> unk_id =
      unk_token_ ? std::optional<int32_t>(vocab_.find(*unk_token_)->second) : std::nullopt;
  std::string s;
  size_t i = 0;
  while (i < word.size()) {
    const Utf8Step step = NextUtf8Step(word.substr(i));
    const size_t len = step.kind == Utf8StepKind::kValid ? step.length : 1;
    const bool first = i == 0;
    const bool last = i + len >= word.size();
    s.clear();
    if (!first) s += continuing_subword_prefix_;
    s.append(word.data() + i, len);
    if (last) s += end_of_word_suffix_;
    i += len;

    const auto it = vocab_.find(s);
    if (it != vocab_.end()) {
      if (pending_unk) {
        symbols->push_back(*pending_unk);
        pending_unk.reset();
      }
      symbols->push_back(it->second);
      continue;
    }
    if (byte_fallback_) {
      absl::InlinedVector<int32_t, 8> bytes;
      bool all = true;
      for (const unsigned char b : s) {
        const auto bt = vocab_.find(absl::StrFormat("<0x%02X>", b));
        if (bt == vocab_.end()) {
          all = false;
          break;
        }
        bytes.push_back(bt->second);
      }
      if (all) {
        symbols->insert(symbols->end(), bytes.begin(), bytes.end());
        continue;
      }
    }
    if (unk_id) {
      if (pending_unk && !fuse_unk_) symbols->push_back(*pending_unk);
      pending_unk = unk_id;
    }
    // Without an unk token the character is dropped, as in the reference.
  }
  if (pending_unk) symbols->push_back(*pending_unk);
}

void BpeModel::MergeAll(absl::InlinedVector<int32_t, 32>* symbols) const {
  if (symbols->size() < 2) return;
  if (symbols->size() <= kSmallWord) {
    MergeAllSmall(symbols);
  } else {
    MergeAllLarge(symbols);
  }
}

// For short words a scan over a rank array beats a heap: each step merges
// the leftmost pair of lowest rank, which is the pair the reference's heap
// (ordered by rank, then position) would pop next.
void BpeModel::MergeAllSmall(absl::InlinedVector<int32_t, 32>* symbols) const {
  int32_t* s = symbols->data();
  size_t n = symbols->size();
  Merge pair[kSmallWord];
  auto lookup = [&](size_t i) {
    const Merge* m = FindMerge(s[i], s[i + 1]);
    pair[i] = m != nullptr ? *m : Merge{INT32_MAX, -1};
  };
  for (size_t i = 0; i + 1 < n; ++i) lookup(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (pair[i].rank < pair[best].rank) best = i;
    }
    if (pair[best].rank == INT32_MAX) break;
    s[best] = pair[best].new_id;
    std::copy(s + best + 2, s + n, s + best + 1);
    std::copy(pair + best + 1, pair + n - 1, pair + best);
    --n;
    if (best > 0) lookup(best - 1);
    if (best + 1 < n) lookup(best);
  }
  symbols->resize(n);
}

// The reference algorithm: a heap of candidate merges keyed (rank, position)
// over a linked list of symbols, skipping entries made stale by earlier
// merges. O(n log n) for long words (runs of spaces, long identifiers).
void BpeModel::MergeAllLarge(absl::InlinedVector<int32_t, 32>* symbols) const {
  const size_t n = symbols->size();
  struct Sym {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Sym> sym(n);
  for (size_t i = 0; i < n; ++i) {
    sym[i] = Sym{(*symbols)[i], static_cast<int32_t>(i) - 1,
                 i + 1 < n ? static_cast<int32_t>(i + 1) : -1, true};
  }
  struct Entry {
    int32_t rank, pos, new_id;
  };
  // std heap functions build a max-heap: "less" means larger (rank, pos).
  auto after = [](const Entry& x, const Entry& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  std::vector<Entry> heap;
  heap.reserve(n);
  for (size_t i = 0; i + 1 < n; ++i) {
    if (const Merge* m = FindMerge(sym[i].id, sym[i + 1].id)) {
      heap.push_back({m->rank, static_cast<int32_t>(i), m->new_id});
    }
  }
  std::make_heap(heap.begin(), heap.end(), after);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), after);
    const Entry top = heap.back();
    heap.pop_back();
    Sym& cur = sym[top.pos];
    if (!cur.alive || cur.next == -1) continue;
    const int32_t next_pos = cur.next;
    const Merge* m = FindMerge(cur.id, sym[next_pos].id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale entry
    cur.id = top.new_id;
    sym[next_pos].alive = false;
    cur.next = sym[next_pos].next;
    if (cur.next != -1) sym[cur.next].prev = top.pos;
    if (cur.prev != -1) {
      if (const Merge* pm = FindMerge(sym[cur.prev].id, cur.id)) {
        heap.push_back({pm->rank, cur.prev, pm->new_id});
        std::push_heap(heap.begin(), heap.end(), after);
      }
    }
    if (cur.next != -1) {
      if (const Merge* nm = FindMerge(cur.id, sym[cur.next].id)) {
        heap.push_back({nm->rank, top.pos, nm->new_id});
        std::push_heap(heap.begin(), heap.end(), after);
      }
    }
  }
  symbols->clear();
  for (int32_t i = 0; i != -1; i = sym[i].next) symbols->push_back(sym[i].id);
}

void BpeModel::Tokenize(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() < BpeWordCache::kMaxWordBytes;
  if (cacheable && cache_.Lookup(word, ids)) return;
  absl::InlinedVector<int32_t, 32> symbols;
  InitialSymbols(word, &symbols);
  MergeAll(&symbols);
  ids->insert(ids->end(), symbols.begin(), symbols.end());
  if (cacheable) cache_.Insert(word, symbols.data(), symbols.size());
}

void BpeModel::TokenizeRawBytes(absl::string_view bytes, std::vector<int32_t>* ids) const {
  if (bytes.empty()) return;
  if (bytes.size() == 1) {
    ids->push_back(byte_ids_[static_cast<uint8_t>(bytes[0])]);
    return;
  }
  if (ignore_merges_) {
    const auto it = raw_vocab_.find(bytes);
    if (it != raw_vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = bytes.size() < BpeWordCache::kMaxWordBytes;
  if (cacheable && raw_cache_.Lookup(bytes, ids)) return;
  absl::InlinedVector<int32_t, 32> symbols;
  symbols.reserve(bytes.size());
  for (const unsigned char b : bytes) symbols.push_back(byte_ids_[b]);
  MergeAll(&symbols);
  ids->insert(ids->end(), symbols.begin(), symbols.end());
  if (cacheable) raw_cache_.Insert(bytes, symbols.data(), symbols.size());
}

}  // namespace duet::tokenizer
