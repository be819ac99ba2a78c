#include "tokenizer/byte_level.h"

#include "tokenizer/utf8.h"

namespace duet::tokenizer {

const ByteLevelAlphabet& ByteLevelAlphabet::Get() {
  static const ByteLevelAlphabet* const kAlphabet = new ByteLevelAlphabet();
  return *kAlphabet;
}

ByteLevelAlphabet::ByteLevelAlphabet() {
  // Printable Latin-1 bytes keep their code point; the other 68 bytes get
  // 256, 257, ... in byte order (GPT-2's bytes_to_unicode).
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  int next = 256;
  for (int b = 0; b < 256; ++b) code_point_[b] = printable(b) ? b : next++;
  for (int i = 0; i < 512; ++i) byte_of_[i] = -1;
  for (int b = 0; b < 256; ++b) {
    byte_of_[code_point_[b]] = static_cast<int16_t>(b);
    std::string s;
    AppendUtf8(code_point_[b], &s);
    encoded_len_[b] = s.size();
    for (size_t i = 0; i < s.size(); ++i) encoded_[b][i] = s[i];
  }
}

void ByteLevelAlphabet::Map(absl::string_view bytes, std::string* out) const {
  for (unsigned char b : bytes) out->append(encoded_[b], encoded_len_[b]);
}

bool ByteLevelAlphabet::Unmap(absl::string_view text, std::string* out) const {
  std::string bytes;
  bytes.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    size_t len;
    const char32_t cp = DecodeUtf8(text.substr(i), &len);
    const std::optional<uint8_t> b = ByteOf(cp);
    if (!b) return false;
    bytes.push_back(static_cast<char>(*b));
    i += len;
  }
  out->append(bytes);
  return true;
}

}  // namespace duet::tokenizer
