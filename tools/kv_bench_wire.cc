#include "tools/kv_bench_wire.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace duet::tools::kv_bench {

using kv_transfer::KvDescriptor;
using kv_transfer::KvLayout;
using kv_transfer::Transport;

WireWriter& WireWriter::U64(uint64_t v) {
  for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  return *this;
}

WireWriter& WireWriter::F64(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return U64(bits);
}

WireWriter& WireWriter::Str(absl::string_view s) {
  U64(s.size());
  out_.append(s.data(), s.size());
  return *this;
}

WireWriter& WireWriter::Status(const absl::Status& s) {
  U64(static_cast<uint64_t>(s.code()));
  return Str(s.message());
}

bool WireReader::U64(uint64_t& v) {
  if (in_.size() < 8) return false;
  v = 0;
  for (int i = 0; i < 8; ++i) {
    v |= uint64_t{static_cast<uint8_t>(in_[i])} << (8 * i);
  }
  in_.remove_prefix(8);
  return true;
}

bool WireReader::I64(int64_t& v) {
  uint64_t u;
  if (!U64(u)) return false;
  v = static_cast<int64_t>(u);
  return true;
}

bool WireReader::I32(int32_t& v) {
  int64_t w;
  if (!I64(w) || w < INT32_MIN || w > INT32_MAX) return false;
  v = static_cast<int32_t>(w);
  return true;
}

bool WireReader::F64(double& v) {
  uint64_t bits;
  if (!U64(bits)) return false;
  std::memcpy(&v, &bits, sizeof(v));
  return true;
}

bool WireReader::Str(std::string& s) {
  uint64_t n;
  if (!U64(n) || n > in_.size()) return false;
  s.assign(in_.data(), n);
  in_.remove_prefix(n);
  return true;
}

bool WireReader::Status(absl::Status& s) {
  uint64_t code;
  std::string message;
  if (!U64(code) || !Str(message) || code > 16) return false;
  s = absl::Status(static_cast<absl::StatusCode>(code), message);
  return true;
}

std::string SerializeDescriptor(const KvDescriptor& d) {
  WireWriter w;
  w.U64(static_cast<uint64_t>(d.transport));
  const KvLayout& l = d.layout;
  for (int32_t v : {l.num_layers, l.num_kv_heads, l.head_dim, l.block_size,
                    static_cast<int32_t>(l.dtype), l.tp_rank, l.tp_size}) {
    w.I64(v);
  }
  w.U64(d.block_ids.size());
  for (int32_t b : d.block_ids) w.I64(b);
  w.I64(d.num_blocks);
  w.Str(d.endpoint_name).Str(d.ucx_worker_address);
  w.U64(d.ucx_rkeys.size());
  for (const std::string& r : d.ucx_rkeys) w.Str(r);
  w.U64(d.remote_layer_base.size());
  for (uint64_t b : d.remote_layer_base) w.U64(b);
  w.U64(d.cuda_ipc_handles.size());
  for (const std::string& h : d.cuda_ipc_handles) w.Str(h);
  w.Str(d.host_id).Str(d.gpu_uuid);
  return w.Take();
}

absl::StatusOr<KvDescriptor> ParseDescriptor(absl::string_view bytes) {
  WireReader r(bytes);
  KvDescriptor d;
  uint64_t transport = 0;
  bool ok = r.U64(transport) && transport <= 2;
  d.transport = static_cast<Transport>(transport);
  int32_t f[7] = {};
  for (int32_t& v : f) ok = ok && r.I32(v);
  d.layout =
      KvLayout{f[0], f[1], f[2], f[3], static_cast<DType>(f[4]), f[5], f[6]};
  uint64_t n = 0;
  ok = ok && r.U64(n) && n <= bytes.size();
  for (uint64_t i = 0; ok && i < n; ++i) ok = r.I32(d.block_ids.emplace_back());
  ok = ok && r.I32(d.num_blocks) && r.Str(d.endpoint_name) &&
       r.Str(d.ucx_worker_address) && r.U64(n) && n <= bytes.size();
  for (uint64_t i = 0; ok && i < n; ++i) ok = r.Str(d.ucx_rkeys.emplace_back());
  ok = ok && r.U64(n) && n <= bytes.size();
  for (uint64_t i = 0; ok && i < n; ++i) {
    ok = r.U64(d.remote_layer_base.emplace_back());
  }
  ok = ok && r.U64(n) && n <= bytes.size();
  for (uint64_t i = 0; ok && i < n; ++i) {
    ok = r.Str(d.cuda_ipc_handles.emplace_back());
  }
  ok = ok && r.Str(d.host_id) && r.Str(d.gpu_uuid);
  if (!ok || !r.done()) {
    return absl::InvalidArgumentError("truncated or oversized KV descriptor");
  }
  return d;
}

namespace {

// false on EOF before any byte (*eof set) or on an error.
bool ReadAll(int fd, char* data, size_t n, bool* eof) {
  size_t got = 0;
  *eof = false;
  while (got < n) {
    const ssize_t r = read(fd, data + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      *eof = r == 0 && got == 0;
      return false;
    }
    got += static_cast<size_t>(r);
  }
  return true;
}

}  // namespace

Channel::~Channel() {
  if (fd_ >= 0) close(fd_);
}

absl::Status Channel::Send(absl::string_view message) {
  WireWriter header;
  header.U64(message.size());
  for (absl::string_view part : {absl::string_view(header.bytes()), message}) {
    size_t sent = 0;
    while (sent < part.size()) {
      const ssize_t w =
          send(fd_, part.data() + sent, part.size() - sent, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        return absl::UnavailableError(
            absl::StrCat("kv-bench peer: send failed: ", std::strerror(errno)));
      }
      sent += static_cast<size_t>(w);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Channel::Receive() {
  char header[8];
  bool eof = false;
  if (!ReadAll(fd_, header, sizeof(header), &eof)) {
    if (eof) return absl::OutOfRangeError("kv-bench peer closed the channel");
    return absl::UnavailableError("kv-bench peer: connection lost");
  }
  uint64_t n = 0;
  WireReader(absl::string_view(header, sizeof(header))).U64(n);
  if (n > (uint64_t{1} << 30)) {
    return absl::UnavailableError("kv-bench peer: oversized message");
  }
  std::string message(n, '\0');
  if (n > 0 && !ReadAll(fd_, message.data(), n, &eof)) {
    return absl::UnavailableError("kv-bench peer: message cut short");
  }
  return message;
}

absl::StatusOr<std::string> Channel::Call(absl::string_view message) {
  if (absl::Status s = Send(message); !s.ok()) return s;
  return Receive();
}

}  // namespace duet::tools::kv_bench
