#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace duet::model {
namespace {

using Json = nlohmann::json;
// Insertion-ordered, so the writer controls key order (and thus the bytes).
using OrderedJson = nlohmann::ordered_json;

// Same limit as the official Rust implementation: anything larger is a
// corrupt length field, not a real header.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr size_t kLengthBytes = 8;
constexpr absl::string_view kMetadataKey = "__metadata__";

// Only the safetensors spelling: "f32" or "float32" in a header is not
// something the Python library would accept, so neither do we.
std::optional<DType> DTypeFromSafetensors(absl::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  return std::nullopt;
}

const char* SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
  }
  return "?";
}

template <typename... Args>
absl::Status Invalid(absl::string_view file, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", args...));
}

template <typename... Args>
absl::Status TensorError(absl::string_view file, absl::string_view tensor,
                         const Args&... args) {
  return absl::InvalidArgumentError(
      absl::StrCat(file, ": tensor '", tensor, "': ", args...));
}

std::string JoinPath(absl::string_view dir, absl::string_view name) {
  if (dir.empty()) return std::string(name);
  if (dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now and reports the error, which for writes can be the first sign
  // that data did not reach the disk.
  int Close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

// Deletes a temporary file unless the write that produced it succeeded, so a
// failed write never leaves `x.tmp` litter behind.
class TempFileGuard {
 public:
  explicit TempFileGuard(std::string path) : path_(std::move(path)) {}
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  ~TempFileGuard() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  void Release() { path_.clear(); }

 private:
  std::string path_;
};

absl::Status ErrnoError(int err, absl::string_view what,
                        absl::string_view path) {
  return absl::ErrnoToStatus(err, absl::StrCat(what, " ", path));
}

absl::Status WriteAll(int fd, const void* data, size_t size,
                      const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "cannot write", path);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// fsync + close + rename: the file appears under `path` complete or not at
// all, even across a crash.
absl::Status CommitTempFile(Fd& fd, const std::string& tmp,
                            const std::string& path) {
  if (::fsync(fd.get()) != 0) return ErrnoError(errno, "cannot fsync", tmp);
  if (fd.Close() != 0) return ErrnoError(errno, "cannot close", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    return ErrnoError(err, absl::StrCat("cannot rename ", tmp, " to"), path);
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents) {
  const std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoError(errno, "cannot create", tmp);
  TempFileGuard guard(tmp);
  DUET_RETURN_IF_ERROR(
      WriteAll(fd.get(), contents.data(), contents.size(), tmp));
  DUET_RETURN_IF_ERROR(CommitTempFile(fd, tmp, path));
  guard.Release();
  return absl::OkStatus();
}

// Prefixes `status` with `context`, keeping its code.
absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      absl::StrCat(context, ": ", status.message()));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, "cannot open", path);
  std::string out;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "cannot read", path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::Status RemoveIfExists(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoError(errno, "cannot remove stale", path);
  }
  return absl::OkStatus();
}

// numel * element size, or nullopt on overflow (a hostile shape such as
// [2^40, 2^40] must not wrap around into a plausible size).
std::optional<uint64_t> TensorBytes(const Shape& shape, DType dtype) {
  uint64_t bytes = DTypeSize(dtype);
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes)) {
      return std::nullopt;
    }
  }
  return bytes;
}

// ---------------------------------------------------------------------------
// Reader.

struct ParsedTensor {
  TensorInfo info;
  uint64_t begin = 0;
  uint64_t end = 0;
};

std::string OffsetsString(uint64_t begin, uint64_t end) {
  return absl::StrCat("[", begin, ", ", end, "]");
}

absl::StatusOr<ParsedTensor> ParseTensorEntry(const std::string& file,
                                              const std::string& name,
                                              const Json& entry,
                                              uint64_t data_size) {
  if (!entry.is_object()) {
    return TensorError(file, name, "entry is not a JSON object");
  }
  ParsedTensor t;
  t.info.name = name;
  t.info.file = file;

  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) return TensorError(file, name, "missing dtype");
  if (!dtype_it->is_string()) {
    return TensorError(file, name, "dtype is not a string");
  }
  const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
  const std::optional<DType> dtype = DTypeFromSafetensors(dtype_name);
  if (!dtype) {
    return TensorError(file, name, "unsupported dtype '", dtype_name,
                       "' (supported: F32, BF16, F16)");
  }
  t.info.dtype = *dtype;

  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) return TensorError(file, name, "missing shape");
  if (!shape_it->is_array()) {
    return TensorError(file, name, "shape is not an array");
  }
  for (const Json& dim : *shape_it) {
    if (dim.is_number_unsigned()) {
      const uint64_t d = dim.get<uint64_t>();
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return TensorError(file, name, "shape dimension ", d, " is too large");
      }
      t.info.shape.push_back(static_cast<int64_t>(d));
    } else if (dim.is_number_integer()) {  // parsed as signed: negative
      return TensorError(file, name, "negative dimension ", dim.get<int64_t>(),
                         " in shape ", shape_it->dump());
    } else {
      return TensorError(file, name, "shape ", shape_it->dump(),
                         " has a dimension that is not an integer");
    }
  }

  const auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end()) {
    return TensorError(file, name, "missing data_offsets");
  }
  const Json& offsets = *offsets_it;
  if (!offsets.is_array() || offsets.size() != 2 ||
      !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
    return TensorError(file, name, "data_offsets ", offsets.dump(),
                       " is not [begin, end] with non-negative integers");
  }
  t.begin = offsets[0].get<uint64_t>();
  t.end = offsets[1].get<uint64_t>();
  if (t.begin > t.end) {
    return TensorError(file, name, "data_offsets ",
                       OffsetsString(t.begin, t.end), " have begin > end");
  }
  if (t.end > data_size) {
    return TensorError(file, name, "data_offsets ",
                       OffsetsString(t.begin, t.end),
                       " end beyond the data section, which has ", data_size,
                       " bytes (truncated file?)");
  }
  const std::optional<uint64_t> needed =
      TensorBytes(t.info.shape, t.info.dtype);
  const uint64_t span = t.end - t.begin;
  if (!needed) {
    return TensorError(file, name, "shape ", ShapeString(t.info.shape),
                       " of dtype ", dtype_name, " overflows 64-bit size");
  }
  if (*needed != span) {
    return TensorError(file, name, "shape ", ShapeString(t.info.shape),
                       " of dtype ", dtype_name, " needs ", *needed,
                       " bytes but data_offsets span ", span);
  }
  t.info.nbytes = static_cast<size_t>(span);
  return t;
}

absl::StatusOr<std::map<std::string, std::string>> ParseMetadata(
    const std::string& file, const Json& value) {
  std::map<std::string, std::string> out;
  if (value.is_null()) return out;  // serde reads null as "no metadata"
  if (!value.is_object()) {
    return Invalid(file, kMetadataKey, " is not a JSON object");
  }
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string()) {
      return Invalid(file, kMetadataKey, " value for key '", key,
                     "' is not a string");
    }
    out.emplace(key, v.get<std::string>());
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    return ErrnoError(errno, "cannot open safetensors file", path);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return ErrnoError(errno, "cannot stat", path);
  }
  if (!S_ISREG(st.st_mode)) return Invalid(path, "not a regular file");
  const auto size = static_cast<uint64_t>(st.st_size);
  // Also catches the empty file, which mmap would refuse anyway.
  if (size < kLengthBytes) {
    return Invalid(path, "file is ", size,
                   " bytes, shorter than 8 bytes: empty or truncated, no "
                   "header length");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (map == MAP_FAILED) return ErrnoError(errno, "cannot mmap", path);
  // The mapping keeps the file alive; the descriptor is no longer needed.
  std::unique_ptr<SafetensorsFile> file(
      new SafetensorsFile(path, map, static_cast<size_t>(size)));
  DUET_RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

absl::Status SafetensorsFile::ParseHeader() {
  const auto* bytes = static_cast<const unsigned char*>(map_);
  const uint64_t file_size = map_size_;
  uint64_t header_len = 0;
  for (size_t i = 0; i < kLengthBytes; ++i) {
    header_len |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  }
  if (header_len > kMaxHeaderBytes) {
    return Invalid(path_, "header length ", header_len,
                   " is absurdly large (limit ", kMaxHeaderBytes,
                   " bytes): corrupt or not a safetensors file");
  }
  if (header_len > file_size - kLengthBytes) {
    return Invalid(path_, "header length ", header_len,
                   " is larger than the file (", file_size,
                   " bytes): truncated or not a safetensors file");
  }
  const char* header_begin =
      reinterpret_cast<const char*>(bytes) + kLengthBytes;
  const char* header_end = header_begin + header_len;

  // nlohmann keeps the last of duplicate keys silently; the callback sees
  // every top-level key, so a tensor listed twice is reported as such rather
  // than as a confusing hole in the data section.
  std::set<std::string> seen;
  std::string duplicate;
  const auto on_event = [&](int depth, Json::parse_event_t event,
                            Json& parsed) {
    if (depth == 1 && event == Json::parse_event_t::key && parsed.is_string() &&
        duplicate.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second) duplicate = key;
    }
    return true;
  };
  const Json header = Json::parse(header_begin, header_end, on_event,
                                  /*allow_exceptions=*/false);
  if (header.is_discarded()) {
    return Invalid(path_, "header (", header_len, " bytes) is not valid JSON");
  }
  if (!header.is_object()) return Invalid(path_, "header is not a JSON object");
  if (!duplicate.empty()) {
    return TensorError(path_, duplicate, "listed twice in the header");
  }

  const uint64_t data_size = file_size - kLengthBytes - header_len;
  std::vector<ParsedTensor> parsed;
  parsed.reserve(header.size());
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      DUET_ASSIGN_OR_RETURN(metadata_, ParseMetadata(path_, value));
      continue;
    }
    DUET_ASSIGN_OR_RETURN(ParsedTensor t,
                          ParseTensorEntry(path_, key, value, data_size));
    parsed.push_back(std::move(t));
  }

  // Header order is arbitrary (old writers sorted by name); file order is by
  // offset, ties (zero-size tensors) broken by end and then name.
  std::sort(parsed.begin(), parsed.end(),
            [](const ParsedTensor& a, const ParsedTensor& b) {
              return std::tie(a.begin, a.end, a.info.name) <
                     std::tie(b.begin, b.end, b.info.name);
            });
  // Like the official reader: the tensors must tile the data section with no
  // overlap, no gap and nothing after the last one.
  uint64_t cursor = 0;
  const ParsedTensor* prev = nullptr;
  for (const ParsedTensor& t : parsed) {
    if (t.begin < cursor) {
      return TensorError(path_, t.info.name, "data_offsets ",
                         OffsetsString(t.begin, t.end), " overlap tensor '",
                         prev->info.name, "' at ",
                         OffsetsString(prev->begin, prev->end));
    }
    if (t.begin > cursor) {
      return TensorError(path_, t.info.name, "data_offsets ",
                         OffsetsString(t.begin, t.end), " leave a hole of ",
                         t.begin - cursor, " bytes at offset ", cursor,
                         " (tensors must cover the data section exactly)");
    }
    cursor = t.end;
    prev = &t;
  }
  if (cursor != data_size) {
    return Invalid(path_, "data section has ", data_size,
                   " bytes but its tensors cover only ", cursor, " (",
                   data_size - cursor, " trailing bytes)");
  }

  const char* data = header_end;
  tensors_.reserve(parsed.size());
  for (ParsedTensor& t : parsed) {
    t.info.data = data + t.begin;
    tensors_.push_back(std::move(t.info));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Checkpoint.

namespace {

// Index entries are file names next to the index. Anything that could point
// elsewhere (absolute, "..") is rejected rather than followed.
bool IsSafeShardName(absl::string_view name) {
  if (name.empty() || name.front() == '/') return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    if (slash == absl::string_view::npos) slash = name.size();
    if (name.substr(start, slash - start) == "..") return false;
    start = slash + 1;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(
    const std::string& dir) {
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;
  const std::string single_path = JoinPath(dir, kSingleFileName);
  const std::string index_path = JoinPath(dir, kIndexFileName);

  if (PathExists(single_path)) {
    DUET_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single_path));
    for (const TensorInfo& t : file->tensors()) ckpt->by_name_[t.name] = &t;
    ckpt->shards_.push_back(std::move(file));
    return ckpt;
  }
  if (!PathExists(index_path)) {
    return absl::NotFoundError(
        absl::StrCat("no safetensors checkpoint in ", dir, ": looked for ",
                     single_path, " and ", index_path, ", found neither"));
  }

  DUET_ASSIGN_OR_RETURN(const std::string index_text, ReadFile(index_path));
  const Json index =
      Json::parse(index_text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded()) return Invalid(index_path, "not valid JSON");
  if (!index.is_object()) return Invalid(index_path, "not a JSON object");
  const auto map_it = index.find("weight_map");
  if (map_it == index.end()) return Invalid(index_path, "missing weight_map");
  if (!map_it->is_object()) {
    return Invalid(index_path, "weight_map is not a JSON object");
  }
  const Json& weight_map = *map_it;

  // shard file name -> one tensor the index places there (for messages).
  std::map<std::string, std::string> shard_names;
  for (const auto& [tensor, shard] : weight_map.items()) {
    if (!shard.is_string()) {
      return Invalid(index_path, "weight_map entry for tensor '", tensor,
                     "' is not a string");
    }
    const std::string& name = shard.get_ref<const std::string&>();
    if (!IsSafeShardName(name)) {
      return Invalid(index_path, "weight_map entry for tensor '", tensor,
                     "' names shard '", name,
                     "', which is not a file name inside the checkpoint");
    }
    shard_names.emplace(name, tensor);
  }

  for (const auto& [shard_name, example_tensor] : shard_names) {
    const std::string shard_path = JoinPath(dir, shard_name);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> shard =
        SafetensorsFile::Open(shard_path);
    if (!shard.ok()) {
      if (absl::IsNotFound(shard.status())) {
        return absl::NotFoundError(
            absl::StrCat(index_path, " names shard '", shard_name,
                         "' (for tensor '", example_tensor,
                         "'), which is missing: ", shard.status().message()));
      }
      return shard.status();
    }
    for (const TensorInfo& t : (*shard)->tensors()) {
      if (const auto seen = ckpt->by_name_.find(t.name);
          seen != ckpt->by_name_.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", t.name, "' is in two shards: ", seen->second->file,
            " and ", shard_path));
      }
      const auto listed = weight_map.find(t.name);
      if (listed == weight_map.end()) {
        return TensorError(shard_path, t.name,
                           "present in the shard but not listed in the "
                           "weight_map of ",
                           index_path);
      }
      if (listed->get_ref<const std::string&>() != shard_name) {
        return TensorError(shard_path, t.name, "present in the shard but ",
                           index_path, " lists it for shard '",
                           listed->get_ref<const std::string&>(), "'");
      }
      ckpt->by_name_[t.name] = &t;
    }
    ckpt->shards_.push_back(*std::move(shard));
  }

  for (const auto& [tensor, shard] : weight_map.items()) {
    if (!ckpt->by_name_.contains(tensor)) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": weight_map lists tensor '", tensor,
                       "' in shard '", shard.get_ref<const std::string&>(),
                       "' but the shard does not contain it"));
    }
  }
  return ckpt;
}

absl::StatusOr<const TensorInfo*> Checkpoint::Find(
    absl::string_view name) const {
  const auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor '", name, "' not found in checkpoint ", dir_));
  }
  return it->second;
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  names.reserve(by_name_.size());
  for (const auto& [name, info] : by_name_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

// ---------------------------------------------------------------------------
// Writer.

namespace {

// Checks names and shapes; returns each tensor's byte size.
absl::StatusOr<std::vector<uint64_t>> ValidateSpecs(
    std::span<const TensorSpec> specs) {
  std::vector<uint64_t> sizes;
  sizes.reserve(specs.size());
  absl::flat_hash_map<absl::string_view, size_t> seen;
  uint64_t total = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& s = specs[i];
    if (s.name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor spec #", i, " has an empty name"));
    }
    if (s.name == kMetadataKey) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor spec #", i, " uses the reserved name ", kMetadataKey));
    }
    if (const auto [it, inserted] = seen.emplace(s.name, i); !inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", s.name, "' appears twice (specs #",
                       it->second, " and #", i, ")"));
    }
    for (int64_t d : s.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", s.name, "': negative dimension in shape ",
                         ShapeString(s.shape)));
      }
    }
    const std::optional<uint64_t> bytes = TensorBytes(s.shape, s.dtype);
    if (!bytes || __builtin_add_overflow(total, *bytes, &total)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", s.name, "': shape ", ShapeString(s.shape),
                       " overflows 64-bit size"));
    }
    sizes.push_back(*bytes);
  }
  return sizes;
}

// Compact JSON, "__metadata__" first, tensors in spec order, keys of a
// tensor in the order serde writes them: what Python's save_file produces for
// the same layout.
absl::StatusOr<std::string> BuildHeader(
    std::span<const TensorSpec> specs, std::span<const uint64_t> sizes,
    const std::map<std::string, std::string>& metadata) {
  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson meta = OrderedJson::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[std::string(kMetadataKey)] = std::move(meta);
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    OrderedJson shape = OrderedJson::array();
    for (int64_t d : specs[i].shape) shape.push_back(d);
    OrderedJson entry = OrderedJson::object();
    entry["dtype"] = SafetensorsDTypeName(specs[i].dtype);
    entry["shape"] = std::move(shape);
    entry["data_offsets"] = {offset, offset + sizes[i]};
    header[specs[i].name] = std::move(entry);
    offset += sizes[i];
  }
  std::string text;
  try {
    // Throws on strings that are not valid UTF-8; the format requires UTF-8.
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor names and metadata must be valid UTF-8: ", e.what()));
  }
  // Pad so the data section starts 8-byte aligned, as the official writer
  // does, so F32 tensors at aligned offsets are aligned in the mapping.
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

std::string ShardFileName(size_t index, size_t count) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", index + 1,
                count);
  return buf;
}

}  // namespace

absl::Status WriteSafetensors(
    const std::string& path, std::span<const TensorSpec> specs,
    const TensorFill& fill,
    const std::map<std::string, std::string>& metadata) {
  if (!fill && !specs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteSafetensors(", path, "): fill is empty"));
  }
  absl::StatusOr<std::vector<uint64_t>> sizes_or = ValidateSpecs(specs);
  if (!sizes_or.ok()) {
    return Annotate(sizes_or.status(), absl::StrCat("writing ", path));
  }
  const std::vector<uint64_t>& sizes = *sizes_or;
  absl::StatusOr<std::string> header_or = BuildHeader(specs, sizes, metadata);
  if (!header_or.ok()) {
    return Annotate(header_or.status(), absl::StrCat("writing ", path));
  }
  const std::string& header = *header_or;

  const std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoError(errno, "cannot create", tmp);
  TempFileGuard guard(tmp);

  unsigned char length[kLengthBytes];
  for (size_t i = 0; i < kLengthBytes; ++i) {
    length[i] = static_cast<unsigned char>(header.size() >> (8 * i));
  }
  DUET_RETURN_IF_ERROR(WriteAll(fd.get(), length, sizeof(length), tmp));
  DUET_RETURN_IF_ERROR(WriteAll(fd.get(), header.data(), header.size(), tmp));

  // One buffer sized for the largest tensor, reused: memory stays at one
  // tensor however large the checkpoint.
  const uint64_t largest =
      sizes.empty() ? 0 : *std::max_element(sizes.begin(), sizes.end());
  std::vector<std::byte> buffer(static_cast<size_t>(largest));
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::span<std::byte> out(buffer.data(),
                                   static_cast<size_t>(sizes[i]));
    const absl::Status filled = fill(i, out);
    if (!filled.ok()) {
      return Annotate(filled,
                      absl::StrCat("writing ", path, ": filling tensor '",
                                   specs[i].name, "' failed"));
    }
    DUET_RETURN_IF_ERROR(WriteAll(fd.get(), out.data(), out.size(), tmp));
  }
  DUET_RETURN_IF_ERROR(CommitTempFile(fd, tmp, path));
  guard.Release();
  return absl::OkStatus();
}

absl::Status WriteCheckpoint(
    const std::string& dir, std::span<const TensorSpec> specs,
    const TensorFill& fill, uint64_t max_shard_bytes,
    const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<std::vector<uint64_t>> sizes_or = ValidateSpecs(specs);
  if (!sizes_or.ok()) {
    return Annotate(sizes_or.status(),
                    absl::StrCat("writing checkpoint ", dir));
  }
  const std::vector<uint64_t>& sizes = *sizes_or;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return ErrnoError(ec.value(), "cannot create directory", dir);

  // Greedy split in spec order; [first, last) ranges of specs.
  std::vector<std::pair<size_t, size_t>> shards;
  uint64_t total = 0;
  {
    size_t first = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      if (max_shard_bytes > 0 && i > first &&
          bytes + sizes[i] > max_shard_bytes) {
        shards.emplace_back(first, i);
        first = i;
        bytes = 0;
      }
      bytes += sizes[i];
      total += sizes[i];
    }
    shards.emplace_back(first, specs.size());
  }

  const std::string single_path = JoinPath(dir, kSingleFileName);
  const std::string index_path = JoinPath(dir, kIndexFileName);
  if (shards.size() == 1) {
    DUET_RETURN_IF_ERROR(WriteSafetensors(single_path, specs, fill, metadata));
    return RemoveIfExists(index_path);
  }

  Json weight_map = Json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const auto [first, last] = shards[s];
    const std::string name = ShardFileName(s, shards.size());
    const TensorFill shard_fill = [&fill, first = first](
                                      size_t i, std::span<std::byte> out) {
      return fill(first + i, out);
    };
    DUET_RETURN_IF_ERROR(WriteSafetensors(JoinPath(dir, name),
                                          specs.subspan(first, last - first),
                                          shard_fill, metadata));
    for (size_t i = first; i < last; ++i) weight_map[specs[i].name] = name;
  }
  Json index = Json::object();
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = std::move(weight_map);
  std::string text;
  try {
    // Indented with sorted keys, like transformers' save_pretrained.
    text = index.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot serialize ", index_path, ": ", e.what()));
  }
  // The index goes last: until it exists the directory does not claim to
  // hold the new shards.
  DUET_RETURN_IF_ERROR(WriteFileAtomically(index_path, text));
  return RemoveIfExists(single_path);
}

}  // namespace duet::model
