// A bare HTTP/1.1 client for the OpenAI gateway's end-to-end tests (as curl
// would speak it), and the server-sent-events framing check. Header-only:
// shared by the tests of tests/e2e/openai_http_test.cc.
#ifndef DUET_TESTS_E2E_OPENAI_HTTP_CLIENT_H_
#define DUET_TESTS_E2E_OPENAI_HTTP_CLIENT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace duet::testing::openai_http {

using json = nlohmann::ordered_json;

inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// A bare HTTP/1.1 client on a socket, as curl would speak it.
class Http {
 public:
  explicit Http(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~Http() { Close(); }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  bool Send(const std::string& method, const std::string& path,
            const std::string& body, const std::string& key = "") {
    std::string req = absl::StrCat(method, " ", path,
                                   " HTTP/1.1\r\nHost: localhost\r\n"
                                   "Content-Type: application/json\r\n"
                                   "Content-Length: ",
                                   body.size(), "\r\n");
    if (!key.empty())
      absl::StrAppend(&req, "Authorization: Bearer ", key, "\r\n");
    req += "\r\n" + body;
    size_t off = 0;
    while (ok_ && off < req.size()) {
      const ssize_t n =
          send(fd_, req.data() + off, req.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return ok_;
  }
  // Reads more bytes; false on EOF or timeout.
  bool Fill(absl::Duration timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) <=
        0) {
      return false;
    }
    char buf[16384];
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    in_.append(buf, static_cast<size_t>(n));
    return true;
  }
  bool FillUntil(const std::string& marker, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (in_.find(marker) == std::string::npos) {
      if (absl::Now() > deadline || !Fill(deadline - absl::Now())) return false;
    }
    return true;
  }

  struct Response {
    int status = 0;
    std::string head;
    std::string body;  // de-chunked
    json Json() const { return json::parse(body, nullptr, false); }
  };
  std::optional<Response> Read(absl::Duration timeout = absl::Seconds(60)) {
    const absl::Time deadline = absl::Now() + timeout;
    if (!FillUntil("\r\n\r\n", timeout)) return std::nullopt;
    Response r;
    const size_t end = in_.find("\r\n\r\n") + 4;
    r.head = in_.substr(0, end);
    in_.erase(0, end);
    if (!absl::SimpleAtoi(r.head.substr(9, 3), &r.status)) return std::nullopt;
    if (r.head.find("Transfer-Encoding: chunked") != std::string::npos) {
      while (true) {
        if (!FillUntil("\r\n", deadline - absl::Now())) return std::nullopt;
        const size_t eol = in_.find("\r\n");
        size_t size = 0;
        if (!absl::SimpleHexAtoi(in_.substr(0, eol), &size))
          return std::nullopt;
        while (in_.size() < eol + 2 + size + 2) {
          if (!Fill(deadline - absl::Now())) return std::nullopt;
        }
        r.body += in_.substr(eol + 2, size);
        in_.erase(0, eol + 2 + size + 2);
        if (size == 0) return r;
      }
    }
    const size_t cl = r.head.find("Content-Length: ");
    size_t length = 0;
    if (cl != std::string::npos) {
      absl::SimpleAtoi(
          r.head.substr(cl + 16, r.head.find("\r\n", cl) - cl - 16), &length);
    }
    while (in_.size() < length) {
      if (!Fill(deadline - absl::Now())) return std::nullopt;
    }
    r.body = in_.substr(0, length);
    in_.erase(0, length);
    return r;
  }

  const std::string& buffered() const { return in_; }

 private:
  int fd_ = -1;
  bool ok_ = false;
  std::string in_;
};

// The `data:` payloads of a server-sent-events body, in order; checks the
// framing (every event is one "data: ..." line and a blank line).
inline std::vector<std::string> SseEvents(const std::string& body) {
  std::vector<std::string> out;
  EXPECT_TRUE(absl::EndsWith(body, "\n\n")) << body;
  for (absl::string_view event :
       absl::StrSplit(body, "\n\n", absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StartsWith(event, "data: ")) << event;
    EXPECT_EQ(event.find('\n'), absl::string_view::npos) << event;
    out.emplace_back(event.substr(6));
  }
  return out;
}

}  // namespace duet::testing::openai_http

#endif  // DUET_TESTS_E2E_OPENAI_HTTP_CLIENT_H_
