// Fuzzes Checkpoint::Open on a sharded checkpoint: the input is
// model.safetensors.index.json, next to two fixed, valid shards
// (model-00001-of-00002.safetensors: "a" F32 [2], "b" BF16 [3];
// model-00002-of-00002.safetensors: "c" F16 [1, 2]) written once per process
// in a directory under /dev/shm. Checkpoint::Open takes a directory, so the
// index is written there per input.
//
// Invariants checked on success: every listed tensor is found, lies in a
// shard inside the checkpoint directory (weight_map names must not escape it)
// and is readable; Names() is sorted and matches size().
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/dtype.h"
#include "fuzz/fuzz_util.h"
#include "model/safetensors.h"

namespace {

using duet::fuzz::Check;
using duet::model::TensorSpec;

std::string* g_dir = nullptr;
volatile unsigned g_sink = 0;  // keeps the reads of tensor bytes

void RemoveDir() {
  if (g_dir == nullptr) return;
  std::error_code ec;
  std::filesystem::remove_all(*g_dir, ec);
}

std::string TempDir() {
  if (::access("/dev/shm", W_OK) == 0) return "/dev/shm";
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
}

void WriteShard(const std::string& name, std::vector<TensorSpec> specs) {
  const absl::Status s = duet::model::WriteSafetensors(
      absl::StrCat(*g_dir, "/", name), specs,
      [](size_t i, std::span<std::byte> out) {
        for (size_t k = 0; k < out.size(); ++k) {
          out[k] = static_cast<std::byte>(i * 31 + k);
        }
        return absl::OkStatus();
      });
  if (!s.ok()) duet::fuzz::Fail("cannot write shard", s.ToString());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  g_dir =
      new std::string(absl::StrCat(TempDir(), "/duet-fuzz-index-", ::getpid()));
  RemoveDir();
  std::filesystem::create_directories(*g_dir);
  std::atexit(RemoveDir);
  WriteShard("model-00001-of-00002.safetensors",
             {{"a", duet::DType::kF32, {2}}, {"b", duet::DType::kBF16, {3}}});
  WriteShard("model-00002-of-00002.safetensors",
             {{"c", duet::DType::kF16, {1, 2}}});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string index_path =
      absl::StrCat(*g_dir, "/", duet::model::kIndexFileName);
  {
    const int fd = ::open(index_path.c_str(),
                          O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) duet::fuzz::Fail("cannot create", index_path);
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::write(fd, data + done, size - done);
      if (n <= 0) duet::fuzz::Fail("cannot write", index_path);
      done += static_cast<size_t>(n);
    }
    ::close(fd);
  }
  auto ckpt = duet::model::Checkpoint::Open(*g_dir);
  if (!ckpt.ok()) {
    duet::fuzz::Note("rejected", ckpt.status().ToString());
    return 0;
  }
  duet::fuzz::Note("accepted", absl::StrCat((*ckpt)->size(), " tensors"));

  const std::vector<std::string> names = (*ckpt)->Names();
  Check(names.size() == (*ckpt)->size(), "Names().size() != size()");
  for (size_t i = 1; i < names.size(); ++i) {
    Check(names[i - 1] < names[i], "Names() not sorted and unique");
  }
  const std::string prefix = *g_dir + "/";
  for (const std::string& name : names) {
    auto t = (*ckpt)->Find(name);
    Check(t.ok(), "a listed tensor is not found", name);
    const std::string& file = (*t)->file;
    Check(absl::StartsWith(file, prefix), "shard outside the checkpoint", file);
    for (absl::string_view part :
         absl::StrSplit(absl::string_view(file).substr(prefix.size()), '/')) {
      Check(part != "..", "shard path escapes the checkpoint", file);
    }
    unsigned sum = 0;
    const auto* bytes = static_cast<const unsigned char*>((*t)->data);
    for (size_t k = 0; k < (*t)->nbytes; ++k) sum += bytes[k];
    g_sink = g_sink + sum;
  }
  return 0;
}
