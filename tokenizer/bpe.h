// The tokenizer.json "model" section for type BPE: vocabulary, merges (both
// "a b" strings and ["a", "b"] pairs), unk/byte_fallback/fuse_unk,
// continuing_subword_prefix, end_of_word_suffix and ignore_merges, with a
// word cache. Merging follows the reference Word::merge_all: repeatedly merge
// the adjacent pair of lowest merge rank, leftmost first on ties.
#ifndef DUET_TOKENIZER_BPE_H_
#define DUET_TOKENIZER_BPE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"

namespace duet::tokenizer {

// Word -> ids cache, safe for concurrent Encode calls. Direct-mapped: a word
// hashes to one slot of one shard and replaces whatever was there, so memory
// stays bounded (at most 64k words) and a lookup costs one hash, one
// uncontended lock and one compare.
class BpeWordCache {
 public:
  // Appends the cached ids of `word` to *ids; false on a miss.
  bool Lookup(absl::string_view word, std::vector<int32_t>* ids) const;
  void Insert(absl::string_view word, const int32_t* ids, size_t n);

  static constexpr size_t kMaxWordBytes = 256;  // longer words are not cached

 private:
  static constexpr size_t kShards = 64;
  static constexpr size_t kSlotsPerShard = 1024;
  struct Slot {
    std::string word;
    absl::InlinedVector<int32_t, 6> ids;
  };
  // std::mutex rather than absl::Mutex: the distribution's abseil is built
  // with deadlock detection on, which made each lock cost more than the BPE
  // merge it saves.
  struct Shard {
    mutable std::mutex mu;
    std::vector<Slot> slots;  // guarded by mu; allocated on first insert
  };
  std::array<Shard, kShards> shards_;
};

class BpeModel {
 public:
  // `config` is tokenizer.json's "model" object. Non-BPE types are
  // InvalidArgument naming the type.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& config);

  // Appends the ids of one pre-token, given in the vocabulary's alphabet.
  void Tokenize(absl::string_view word, std::vector<int32_t>* ids) const;

  // True when every one of the 256 byte-level characters is a vocabulary
  // entry and no subword prefix/suffix applies: then a pre-token can be
  // tokenized from its raw bytes, which skips building the byte-level string.
  bool supports_raw_bytes() const { return supports_raw_bytes_; }
  // Same ids as Tokenize(ByteLevel(bytes)). Requires supports_raw_bytes().
  void TokenizeRawBytes(absl::string_view bytes, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // Vocabulary tokens by id ("" where no token has that id).
  const std::vector<std::string>& tokens_by_id() const { return tokens_by_id_; }
  size_t vocab_entries() const { return vocab_.size(); }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const Merge* FindMerge(int32_t a, int32_t b) const {
    const auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  // Initial symbols of `word` (the reference merge_word before merging).
  void InitialSymbols(absl::string_view word, absl::InlinedVector<int32_t, 32>* symbols) const;
  // Merges `symbols` in place by rank.
  void MergeAll(absl::InlinedVector<int32_t, 32>* symbols) const;
  void MergeAllSmall(absl::InlinedVector<int32_t, 32>* symbols) const;
  void MergeAllLarge(absl::InlinedVector<int32_t, 32>* symbols) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> tokens_by_id_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::optional<std::string> unk_token_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;

  bool supports_raw_bytes_ = false;
  std::array<int32_t, 256> byte_ids_{};                 // raw byte -> id
  absl::flat_hash_map<std::string, int32_t> raw_vocab_;  // raw bytes -> id (ignore_merges)

  // Separate caches: a raw byte string and an alphabet string can be equal
  // while meaning different words.
  mutable BpeWordCache cache_;
  mutable BpeWordCache raw_cache_;
};

}  // namespace duet::tokenizer

#endif  // DUET_TOKENIZER_BPE_H_
