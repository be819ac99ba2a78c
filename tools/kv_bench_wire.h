// duet-kv-bench's wire between its two processes (sender = prefill side,
// receiver = decode side): length-prefixed messages over a stream socket, a
// byte writer / reader for their fields, and a self-made encoding of
// KvDescriptor (the nodes use proto; the bench does not depend on it).
#ifndef DUET_TOOLS_KV_BENCH_WIRE_H_
#define DUET_TOOLS_KV_BENCH_WIRE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::tools::kv_bench {

// Appends fixed-width little-endian fields.
class WireWriter {
 public:
  WireWriter& U64(uint64_t v);
  WireWriter& I64(int64_t v) { return U64(static_cast<uint64_t>(v)); }
  WireWriter& F64(double v);
  WireWriter& Str(absl::string_view s);
  // Code and message.
  WireWriter& Status(const absl::Status& s);
  const std::string& bytes() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// Reads what WireWriter wrote; every read fails (false) past the end.
class WireReader {
 public:
  explicit WireReader(absl::string_view in) : in_(in) {}
  bool U64(uint64_t& v);
  bool I64(int64_t& v);
  bool I32(int32_t& v);
  bool F64(double& v);
  bool Str(std::string& s);
  bool Status(absl::Status& s);
  bool done() const { return in_.empty(); }

 private:
  absl::string_view in_;
};

std::string SerializeDescriptor(const kv_transfer::KvDescriptor& d);
// InvalidArgument for truncated or trailing bytes.
absl::StatusOr<kv_transfer::KvDescriptor> ParseDescriptor(
    absl::string_view bytes);

// One end of a connected stream socket; closes it on destruction.
class Channel {
 public:
  explicit Channel(int fd) : fd_(fd) {}
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // UNAVAILABLE when the peer is gone.
  absl::Status Send(absl::string_view message);
  // OUT_OF_RANGE at a clean end of stream (the peer closed its end between
  // messages), UNAVAILABLE on an error or a message cut short.
  absl::StatusOr<std::string> Receive();
  // Send then Receive.
  absl::StatusOr<std::string> Call(absl::string_view message);

 private:
  int fd_;
};

}  // namespace duet::tools::kv_bench

#endif  // DUET_TOOLS_KV_BENCH_WIRE_H_
