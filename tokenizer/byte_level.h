// GPT-2's byte-level alphabet (bytes_to_unicode): every byte maps to one
// printable code point so byte strings can live in a text vocabulary.
#ifndef DUET_TOKENIZER_BYTE_LEVEL_H_
#define DUET_TOKENIZER_BYTE_LEVEL_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace duet::tokenizer {

class ByteLevelAlphabet {
 public:
  static const ByteLevelAlphabet& Get();

  // The code point byte `b` maps to, UTF-8 encoded (1 or 2 bytes).
  absl::string_view Encoded(uint8_t b) const { return {encoded_[b], encoded_len_[b]}; }
  char32_t CodePoint(uint8_t b) const { return code_point_[b]; }

  // Appends the byte-level text of `bytes`.
  void Map(absl::string_view bytes, std::string* out) const;

  // The byte that code point `cp` stands for, if `cp` is in the alphabet.
  std::optional<uint8_t> ByteOf(char32_t cp) const {
    if (cp >= 512 || byte_of_[cp] < 0) return std::nullopt;
    return static_cast<uint8_t>(byte_of_[cp]);
  }

  // If every code point of the UTF-8 string `text` is in the alphabet, writes
  // the bytes they stand for to *out and returns true (ByteLevel decoding).
  bool Unmap(absl::string_view text, std::string* out) const;

 private:
  ByteLevelAlphabet();

  char32_t code_point_[256];
  char encoded_[256][2];
  size_t encoded_len_[256];
  int16_t byte_of_[512];  // every alphabet code point is < 0x144
};

}  // namespace duet::tokenizer

#endif  // DUET_TOKENIZER_BYTE_LEVEL_H_
