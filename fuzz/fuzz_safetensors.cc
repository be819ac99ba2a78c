// Fuzzes the safetensors reader: SafetensorsFile::Open on an arbitrary file,
// i.e. the 8-byte header length, the JSON header and the layout checks.
//
// The header parser (SafetensorsFile::ParseHeader) is private and Open takes
// a path, so each input is written to one file per process in /dev/shm
// (tmpfs: no disk I/O; $TMPDIR or /tmp where /dev/shm is missing) and opened
// from there.
//
// Invariants checked on success, beyond "no crash": every tensor's size is
// numel * dtype size, the tensors tile the data section exactly in file
// order, each tensor's bytes are the input's bytes at its offset, and names
// are unique. A rejected file must be InvalidArgument (the documented code).
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "fuzz/fuzz_util.h"
#include "model/safetensors.h"

namespace {

using duet::fuzz::Check;

std::string* g_path = nullptr;

void RemoveFile() {
  if (g_path != nullptr) ::unlink(g_path->c_str());
}

std::string TempDir() {
  if (::access("/dev/shm", W_OK) == 0) return "/dev/shm";
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
}

void WriteInput(const uint8_t* data, size_t size) {
  const int fd =
      ::open(g_path->c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) duet::fuzz::Fail("cannot create", *g_path);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) duet::fuzz::Fail("cannot write", *g_path);
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  g_path = new std::string(absl::StrCat(TempDir(), "/duet-fuzz-safetensors-",
                                        ::getpid(), ".safetensors"));
  std::atexit(RemoveFile);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  WriteInput(data, size);
  auto file = duet::model::SafetensorsFile::Open(*g_path);
  if (!file.ok()) {
    duet::fuzz::Note("rejected", file.status().ToString());
    Check(absl::IsInvalidArgument(file.status()),
          "a malformed file must be InvalidArgument", file.status().ToString());
    return 0;
  }
  // Accepted: the file has a header length and a header.
  Check(size >= 8, "accepted a file shorter than 8 bytes");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) {
    header_len |= static_cast<uint64_t>(data[i]) << (8 * i);
  }
  Check(header_len <= size - 8, "header length beyond the file");
  const uint64_t data_start = 8 + header_len;

  const auto& tensors = (*file)->tensors();
  duet::fuzz::Note("accepted", absl::StrCat(tensors.size(), " tensors"));
  std::set<std::string> names;
  uint64_t cursor = data_start;
  const char* base = nullptr;  // start of the mapping
  for (const duet::model::TensorInfo& t : tensors) {
    Check(names.insert(t.name).second, "duplicate tensor name", t.name);
    Check(t.name != "__metadata__", "__metadata__ returned as a tensor");
    uint64_t numel_bytes = duet::DTypeSize(t.dtype);
    for (int64_t d : t.shape) {
      Check(d >= 0, "negative dimension", t.name);
      Check(!__builtin_mul_overflow(numel_bytes, static_cast<uint64_t>(d),
                                    &numel_bytes),
            "tensor size overflows", t.name);
    }
    Check(numel_bytes == t.nbytes, "nbytes != numel * dtype size", t.name);
    if (base == nullptr) {
      base = static_cast<const char*>(t.data) - data_start;
    }
    Check(static_cast<const char*>(t.data) == base + cursor,
          "tensors do not tile the data section in file order", t.name);
    Check(t.nbytes <= size - cursor, "tensor runs past the end of the file",
          t.name);
    // Reads every byte of the mapping the tensor claims.
    Check(std::memcmp(t.data, data + cursor, t.nbytes) == 0,
          "tensor bytes differ from the file's", t.name);
    cursor += t.nbytes;
  }
  Check(cursor == size, "data section not fully covered by tensors");
  return 0;
}
