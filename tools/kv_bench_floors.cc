#include "tools/kv_bench_floors.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#ifdef DUET_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace duet::tools::kv_bench {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since)
      .count();
}

// GB/s of `run` (one transfer of `bytes`), median of `reps` after a warm-up.
absl::StatusOr<double> TimeHost(int64_t bytes, int reps,
                                const std::function<absl::Status()>& run) {
  if (absl::Status s = run(); !s.ok()) return s;
  std::vector<double> gbps;
  for (int i = 0; i < std::max(reps, 1); ++i) {
    const auto start = std::chrono::steady_clock::now();
    if (absl::Status s = run(); !s.ok()) return s;
    gbps.push_back(static_cast<double>(bytes) / Seconds(start) / 1e9);
  }
  return Median(std::move(gbps));
}

absl::Status Errno(absl::string_view what) {
  return absl::UnavailableError(
      absl::StrCat("TCP floor: ", what, ": ", std::strerror(errno)));
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<double> HostCopyGbps(int64_t bytes, int reps) {
  std::vector<char> a(static_cast<size_t>(bytes), 1);
  std::vector<char> b(static_cast<size_t>(bytes), 0);
  return TimeHost(bytes, reps, [&] {
    std::memcpy(b.data(), a.data(), a.size());
    return absl::OkStatus();
  });
}

absl::StatusOr<double> TcpLoopbackGbps(int64_t bytes, int reps) {
  Fd listener(socket(AF_INET, SOCK_STREAM, 0));
  if (listener.get() < 0) return Errno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    return Errno("bind 127.0.0.1");
  }
  if (listen(listener.get(), 1) != 0) return Errno("listen");
  if (getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) !=
      0) {
    return Errno("getsockname");
  }
  Fd out(socket(AF_INET, SOCK_STREAM, 0));
  if (out.get() < 0) return Errno("socket");
  if (connect(out.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) !=
      0) {
    return Errno("connect 127.0.0.1");
  }
  Fd in(accept(listener.get(), nullptr, nullptr));
  if (in.get() < 0) return Errno("accept");
  const int one = 1;
  setsockopt(out.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  std::vector<char> src(static_cast<size_t>(bytes), 1);
  std::vector<char> dst(static_cast<size_t>(bytes), 0);
  constexpr size_t kChunk = size_t{4} << 20;
  return TimeHost(bytes, reps, [&]() -> absl::Status {
    bool read_ok = true;
    std::thread reader([&] {
      size_t got = 0;
      while (got < dst.size()) {
        const ssize_t r = read(in.get(), dst.data() + got,
                               std::min(kChunk, dst.size() - got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          read_ok = false;
          return;
        }
        got += static_cast<size_t>(r);
      }
    });
    size_t sent = 0;
    absl::Status status;
    while (sent < src.size()) {
      const ssize_t w = send(out.get(), src.data() + sent,
                             std::min(kChunk, src.size() - sent), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        status = Errno("send");
        shutdown(out.get(), SHUT_WR);  // ends the reader
        break;
      }
      sent += static_cast<size_t>(w);
    }
    reader.join();
    if (status.ok() && !read_ok) status = Errno("read");
    return status;
  });
}

#ifdef DUET_HAVE_CUDA
namespace {

absl::Status Cuda(cudaError_t rc, absl::string_view what) {
  if (rc == cudaSuccess) return absl::OkStatus();
  (void)cudaGetLastError();
  return absl::InternalError(
      absl::StrCat("CUDA floor: ", what, ": ", cudaGetErrorString(rc)));
}

// GB/s of cudaMemcpyAsync(dst, src, bytes, kind), timed with events.
absl::StatusOr<double> TimeCopy(void* dst, const void* src, int64_t bytes,
                                cudaMemcpyKind kind, int reps) {
  cudaStream_t stream;
  if (absl::Status s = Cuda(cudaStreamCreate(&stream), "stream"); !s.ok()) {
    return s;
  }
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  absl::Status status;
  std::vector<double> gbps;
  for (int i = 0; i <= std::max(reps, 1) && status.ok(); ++i) {
    cudaEventRecord(start, stream);
    status = Cuda(
        cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), kind, stream),
        "cudaMemcpyAsync");
    cudaEventRecord(stop, stream);
    if (status.ok()) status = Cuda(cudaEventSynchronize(stop), "copy");
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    if (i > 0) gbps.push_back(static_cast<double>(bytes) / (ms * 1e-3) / 1e9);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaStreamDestroy(stream);
  if (!status.ok()) return status;
  return Median(std::move(gbps));
}

struct DeviceFree {
  void operator()(void* p) const { cudaFree(p); }
};
struct HostFree {
  void operator()(void* p) const { cudaFreeHost(p); }
};

absl::StatusOr<std::unique_ptr<void, DeviceFree>> DeviceAlloc(int64_t bytes) {
  void* p = nullptr;
  if (absl::Status s =
          Cuda(cudaMalloc(&p, static_cast<size_t>(bytes)), "cudaMalloc");
      !s.ok()) {
    return s;
  }
  return std::unique_ptr<void, DeviceFree>(p);
}

}  // namespace

absl::StatusOr<double> DeviceCopyGbps(int device, int64_t bytes, int reps) {
  if (absl::Status s = Cuda(cudaSetDevice(device), "cudaSetDevice"); !s.ok()) {
    return s;
  }
  auto a = DeviceAlloc(bytes);
  if (!a.ok()) return a.status();
  auto b = DeviceAlloc(bytes);
  if (!b.ok()) return b.status();
  cudaMemset(a->get(), 1, static_cast<size_t>(bytes));
  return TimeCopy(b->get(), a->get(), bytes, cudaMemcpyDeviceToDevice, reps);
}

absl::StatusOr<PinnedCopy> PinnedCopyGbps(int device, int64_t bytes, int reps) {
  if (absl::Status s = Cuda(cudaSetDevice(device), "cudaSetDevice"); !s.ok()) {
    return s;
  }
  auto d = DeviceAlloc(bytes);
  if (!d.ok()) return d.status();
  void* h = nullptr;
  if (absl::Status s = Cuda(
          cudaHostAlloc(&h, static_cast<size_t>(bytes), cudaHostAllocDefault),
          "cudaHostAlloc");
      !s.ok()) {
    return s;
  }
  std::unique_ptr<void, HostFree> host(h);
  std::memset(h, 1, static_cast<size_t>(bytes));
  PinnedCopy out;
  auto h2d = TimeCopy(d->get(), h, bytes, cudaMemcpyHostToDevice, reps);
  if (!h2d.ok()) return h2d.status();
  auto d2h = TimeCopy(h, d->get(), bytes, cudaMemcpyDeviceToHost, reps);
  if (!d2h.ok()) return d2h.status();
  out.host_to_device_gbps = *h2d;
  out.device_to_host_gbps = *d2h;
  return out;
}

#else  // !DUET_HAVE_CUDA

absl::StatusOr<double> DeviceCopyGbps(int, int64_t, int) {
  return absl::UnimplementedError("built without CUDA");
}

absl::StatusOr<PinnedCopy> PinnedCopyGbps(int, int64_t, int) {
  return absl::UnimplementedError("built without CUDA");
}

#endif  // DUET_HAVE_CUDA

}  // namespace duet::tools::kv_bench
