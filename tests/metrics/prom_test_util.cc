#include "tests/metrics/prom_test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace duet::testing {

absl::StatusOr<HttpReply> HttpGet(int port, const std::string& path,
                                  absl::Duration timeout) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("nothing listens on 127.0.0.1:", port));
  }
  const std::string request =
      absl::StrCat("GET ", path,
                   " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError("send failed");
  }
  const absl::Time deadline = absl::Now() + timeout;
  std::string raw;
  while (true) {
    const int ms =
        static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd p{fd, POLLIN, 0};
    if (ms <= 0 || poll(&p, 1, ms) <= 0) {
      close(fd);
      return absl::DeadlineExceededError(
          absl::StrCat("no complete reply to GET ", path, " on port ", port,
                       " (got ", raw.size(), " bytes)"));
    }
    char buf[8192];
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos || !absl::StartsWith(raw, "HTTP/1.1 ")) {
    return absl::DataLossError(absl::StrCat("not an HTTP reply: ", raw));
  }
  HttpReply reply;
  if (!absl::SimpleAtoi(raw.substr(9, 3), &reply.status)) {
    return absl::DataLossError(absl::StrCat("bad status line: ", raw));
  }
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(raw).substr(0, head_end), "\r\n")) {
    if (absl::StartsWithIgnoreCase(line, "content-type:")) {
      reply.content_type = std::string(
          absl::StripAsciiWhitespace(line.substr(strlen("content-type:"))));
    }
  }
  reply.body = raw.substr(head_end + 4);
  return reply;
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t len = sizeof(addr);
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string PromtoolPath() {
  for (const char* p : {"/usr/bin/promtool", "/usr/local/bin/promtool"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "";
}

PromtoolVerdict PromtoolCheck(const std::string& promtool,
                              const std::string& text) {
  PromtoolVerdict v;
  char path[] = "/tmp/duet_metrics_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) {
    v.output = "mkstemp failed";
    return v;
  }
  close(fd);
  std::ofstream(path) << text;
  const std::string cmd =
      absl::StrCat(promtool, " check metrics < ", path, " 2>&1");
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    unlink(path);
    v.output = "popen failed";
    return v;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) v.output.append(buf, n);
  const int status = pclose(pipe);
  unlink(path);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code == 0) {
    v.ok = true;
    return v;
  }
  // 3: lint problems only (the text parsed). Accept the colon rule alone.
  if (code != 3) return v;
  bool other = false;
  for (absl::string_view line : absl::StrSplit(v.output, '\n')) {
    if (line.empty()) continue;
    if (!absl::EndsWith(line, "metric names should not contain ':'")) {
      other = true;
    }
  }
  v.ok = !other;
  return v;
}

std::map<std::string, double> ParseSamples(const std::string& text) {
  std::map<std::string, double> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line.front() == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == absl::string_view::npos) continue;
    double v = 0;
    const absl::string_view value = line.substr(space + 1);
    if (value == "+Inf") {
      v = HUGE_VAL;
    } else if (value == "-Inf") {
      v = -HUGE_VAL;
    } else if (!absl::SimpleAtod(value, &v)) {
      continue;
    }
    out[std::string(line.substr(0, space))] = v;
  }
  return out;
}

}  // namespace duet::testing
