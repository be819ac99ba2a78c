// Reading and writing Hugging Face safetensors checkpoints.
//
// Format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// u64 N, N bytes of UTF-8 JSON mapping tensor names to
// {"dtype", "shape", "data_offsets": [begin, end]} (plus an optional
// "__metadata__" string map), then the data section. Offsets are relative to
// the start of the data section, and the tensors must tile it exactly. We read
// files by memory-mapping them, so loading a multi-GB checkpoint costs no copy
// until a backend uploads the bytes, and we validate everything the official
// Rust implementation validates so that a file we accept is one PyTorch would
// accept too (and vice versa for the dtypes we support).
#ifndef DUET_MODEL_SAFETENSORS_H_
#define DUET_MODEL_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/dtype.h"
#include "common/tensor.h"

namespace duet::model {

// One tensor inside a memory-mapped checkpoint. `data` points into the mapping
// and stays valid while the owning Checkpoint/SafetensorsFile lives.
//
// The format has no padding between tensors, so `data` is only as aligned as
// the writer made it: files written by WriteSafetensors or by the Python
// library put the data section at an 8-byte boundary, but a tensor that
// follows an odd-sized F16/BF16 tensor may sit at a 2-byte boundary.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  const void* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // path of the shard it lives in (for error messages)
};

// One memory-mapped .safetensors file, header fully validated on Open.
class SafetensorsFile {
 public:
  // NotFound when `path` does not exist; InvalidArgument naming the file (and
  // the tensor, where one is at fault) for any malformed header or layout.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();  // unmaps the file (the descriptor is closed on Open)

  const std::string& path() const { return path_; }
  // In file order (by data offset).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // The header's "__metadata__" map (empty when absent).
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }

 private:
  SafetensorsFile(std::string path, void* map, size_t map_size)
      : path_(std::move(path)), map_(map), map_size_(map_size) {}
  // Validates the mapped header and fills tensors_ and metadata_.
  absl::Status ParseHeader();

  std::string path_;
  void* map_;  // whole file, PROT_READ / MAP_PRIVATE
  size_t map_size_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A Hugging Face checkpoint directory: `model.safetensors`, or a sharded
// `model.safetensors.index.json` + the shards it names.
class Checkpoint {
 public:
  // Like transformers, prefers `model.safetensors` when both files exist.
  // A sharded checkpoint must be consistent: every shard the index names
  // exists, every tensor sits in exactly the shard the index says, and no
  // shard holds a tensor the index does not list.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(
      const std::string& dir);

  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  // NotFound naming the tensor and the directory when absent.
  absl::StatusOr<const TensorInfo*> Find(absl::string_view name) const;
  std::vector<std::string> Names() const;  // sorted
  size_t size() const { return by_name_.size(); }
  const std::string& dir() const { return dir_; }

 private:
  Checkpoint() = default;

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  // Points into shards_' tensor vectors, which never change after Open.
  absl::flat_hash_map<std::string, const TensorInfo*> by_name_;
};

// Writer. Streams tensor data through `fill` so multi-GB checkpoints never sit
// in memory at once: fill(i, out) must write exactly specs[i]'s bytes to out.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
};
using TensorFill =
    std::function<absl::Status(size_t index, std::span<std::byte> out)>;

// Writes one safetensors file: "__metadata__" first (omitted when empty), then
// the tensors in spec order, compact JSON padded with spaces so the data
// section starts 8-byte aligned. Output is byte-identical for identical input.
// Writes `path + ".tmp"` and renames it over `path` only on success, so a
// reader never sees a half-written file. Names must be unique, non-empty and
// not "__metadata__"; dims must be non-negative.
absl::Status WriteSafetensors(
    const std::string& path, std::span<const TensorSpec> specs,
    const TensorFill& fill,
    const std::map<std::string, std::string>& metadata = {});

// Writes `dir/model.safetensors` when everything fits in max_shard_bytes (or
// it is 0), else HF-style `model-00001-of-0000N.safetensors` shards (tensors
// kept in spec order, a new shard starts when adding a tensor would exceed the
// limit; a tensor larger than the limit gets a shard of its own, and a split
// that yields one shard is written as `model.safetensors`, as transformers
// does) plus
// `model.safetensors.index.json`
// ({"metadata":{"total_size":N},"weight_map":{name:file}}), written last.
// Sizes count tensor bytes only, as transformers does. `metadata` goes into
// every shard. Creates `dir` if needed, and removes a stale
// `model.safetensors` (when sharding) or index (when not) so that
// Checkpoint::Open reads what was just written.
absl::Status WriteCheckpoint(
    const std::string& dir, std::span<const TensorSpec> specs,
    const TensorFill& fill, uint64_t max_shard_bytes,
    const std::map<std::string, std::string>& metadata = {});

// File names inside a checkpoint directory.
inline constexpr absl::string_view kSingleFileName = "model.safetensors";
inline constexpr absl::string_view kIndexFileName =
    "model.safetensors.index.json";

}  // namespace duet::model

#endif  // DUET_MODEL_SAFETENSORS_H_
