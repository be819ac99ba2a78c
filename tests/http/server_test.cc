// The HTTP/1.1 server over real loopback sockets: keep-alive, chunked
// streaming with backpressure callbacks, the size limits (413, 431), bad
// requests (400), the idle and header timeouts, the connection cap (503),
// a client leaving mid-response (OnClose), Expect: 100-continue, and a
// graceful stop.
#include "http/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::http {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class Client {
 public:
  explicit Client(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ =
        connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Client() { Close(); }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  bool connected() const { return connected_; }
  bool Send(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      const ssize_t n =
          send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads until `pred(buffer)` holds, EOF or `timeout`; returns whether
  // pred held.
  template <typename Pred>
  bool ReadUntil(Pred pred, absl::Duration timeout = absl::Seconds(5)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!pred(buffer_)) {
      if (eof_) return false;
      const int ms =
          static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
      if (ms <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, ms) <= 0) return false;
      char buf[4096];
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) {
        eof_ = true;
      } else {
        buffer_.append(buf, static_cast<size_t>(n));
      }
    }
    return true;
  }
  // Whether the server closes the connection within `timeout`.
  bool WaitEof(absl::Duration timeout) {
    ReadUntil([](const std::string&) { return false; }, timeout);
    return eof_;
  }

  struct Response {
    int status = 0;
    std::string head;
    std::string body;
  };
  // One response (Content-Length or chunked), consumed from the buffer.
  std::optional<Response> ReadResponse(
      absl::Duration timeout = absl::Seconds(5)) {
    Response r;
    if (!ReadUntil(
            [](const std::string& b) {
              return b.find("\r\n\r\n") != std::string::npos;
            },
            timeout)) {
      return std::nullopt;
    }
    const size_t head_end = buffer_.find("\r\n\r\n") + 4;
    r.head = buffer_.substr(0, head_end);
    buffer_.erase(0, head_end);
    if (!absl::SimpleAtoi(r.head.substr(9, 3), &r.status)) return std::nullopt;
    if (r.head.find("Transfer-Encoding: chunked") != std::string::npos) {
      while (true) {
        if (!ReadUntil([](const std::string& b) {
              return b.find("\r\n") != std::string::npos;
            })) {
          return std::nullopt;
        }
        const size_t eol = buffer_.find("\r\n");
        size_t size = 0;
        if (!absl::SimpleHexAtoi(buffer_.substr(0, eol), &size)) {
          return std::nullopt;
        }
        if (!ReadUntil([&](const std::string& b) {
              return b.size() >= eol + 2 + size + 2;
            })) {
          return std::nullopt;
        }
        r.body += buffer_.substr(eol + 2, size);
        buffer_.erase(0, eol + 2 + size + 2);
        if (size == 0) return r;
      }
    }
    size_t length = 0;
    const size_t cl = r.head.find("Content-Length: ");
    if (cl != std::string::npos) {
      const size_t e = r.head.find("\r\n", cl);
      if (!absl::SimpleAtoi(r.head.substr(cl + 16, e - cl - 16), &length)) {
        return std::nullopt;
      }
    }
    if (!ReadUntil([&](const std::string& b) { return b.size() >= length; })) {
      return std::nullopt;
    }
    r.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
    return r;
  }
  const std::string& buffer() const { return buffer_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
  std::string buffer_;
};

std::string Post(const std::string& path, const std::string& body) {
  return absl::StrCat("POST ", path,
                      " HTTP/1.1\r\nHost: x\r\nContent-Length: ", body.size(),
                      "\r\n\r\n", body);
}

// Echoes "METHOD PATH BODY".
void Echo(Request req, std::shared_ptr<Responder> r) {
  r->Send(200, "text/plain", req.method + " " + req.path + " " + req.body);
}

std::unique_ptr<Server> StartServer(ServerOptions o, Handler h) {
  auto s = Server::Start(o, std::move(h));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  auto server = StartServer({}, Echo);
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.connected());
  // The second request is pipelined behind the first.
  ASSERT_TRUE(c.Send(Post("/a?x=1", "one") + Post("/b", "two")));
  auto r1 = c.ReadResponse();
  ASSERT_TRUE(r1.has_value());
  EXPECT_EQ(r1->status, 200);
  EXPECT_EQ(r1->body, "POST /a one");
  EXPECT_THAT(r1->head, HasSubstr("Connection: keep-alive"));
  auto r2 = c.ReadResponse();
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->body, "POST /b two");
  ASSERT_TRUE(c.Send("GET /c HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r3 = c.ReadResponse();
  ASSERT_TRUE(r3.has_value());
  EXPECT_EQ(r3->body, "GET /c ");
  // Connection: close is honoured.
  ASSERT_TRUE(
      c.Send("GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  auto r4 = c.ReadResponse();
  ASSERT_TRUE(r4.has_value());
  EXPECT_THAT(r4->head, HasSubstr("Connection: close"));
  EXPECT_TRUE(c.WaitEof(absl::Seconds(3)));
}

TEST(HttpServerTest, StreamsChunksWithBackpressureCallbacks) {
  std::vector<std::thread> producers;
  absl::Mutex mu;
  auto server = StartServer({}, [&](Request, std::shared_ptr<Responder> r) {
    r->StartStream(200, "text/event-stream");
    absl::MutexLock lock(&mu);
    // The next chunk is made only once the previous one is written.
    producers.emplace_back([r] {
      auto next = std::make_shared<std::function<void(int)>>();
      *next = [r, next](int i) {
        if (i == 5) {
          r->EndStream();
          return;
        }
        r->Write(absl::StrCat("data: ", i, "\n\n"),
                 [next, i] { (*next)(i + 1); });
      };
      (*next)(0);
    });
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.Send(Post("/s", "")));
  auto r = c.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->head, HasSubstr("Content-Type: text/event-stream"));
  EXPECT_EQ(r->body, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
  // The connection is reusable after a stream.
  ASSERT_TRUE(c.Send(Post("/s", "")));
  ASSERT_TRUE(c.ReadResponse().has_value());
  server->Stop(absl::Seconds(1));
  absl::MutexLock lock(&mu);
  for (auto& t : producers) t.join();
}

TEST(HttpServerTest, BodyOverTheLimitIs413) {
  ServerOptions o;
  o.max_body_bytes = 100;
  auto server = StartServer(o, Echo);
  ASSERT_NE(server, nullptr);
  {
    Client c(server->port());
    ASSERT_TRUE(c.Send(Post("/x", std::string(1000, 'a'))));
    auto r = c.ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 413);
    EXPECT_THAT(r->body, HasSubstr("100 bytes"));
    EXPECT_TRUE(c.WaitEof(absl::Seconds(3)));
  }
  {
    // Chunked, so the size is known only while reading.
    Client c(server->port());
    ASSERT_TRUE(c.Send(
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "64\r\n" +
        std::string(100, 'a') + "\r\n10\r\n" + std::string(16, 'b') +
        "\r\n0\r\n\r\n"));
    auto r = c.ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 413);
  }
  {
    Client c(server->port());
    ASSERT_TRUE(c.Send(Post("/x", std::string(100, 'a'))));
    auto r = c.ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 200);
  }
}

TEST(HttpServerTest, HeaderOverTheLimitIs431AndGarbageIs400) {
  ServerOptions o;
  o.max_header_bytes = 1024;
  auto server = StartServer(o, Echo);
  ASSERT_NE(server, nullptr);
  {
    Client c(server->port());
    ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\nX-Big: " + std::string(2000, 'a') +
                       "\r\n\r\n"));
    auto r = c.ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 431);
  }
  {
    Client c(server->port());
    ASSERT_TRUE(c.Send("NOT HTTP AT ALL\r\n\r\n"));
    auto r = c.ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 400);
    EXPECT_TRUE(c.WaitEof(absl::Seconds(3)));
  }
}

TEST(HttpServerTest, IdleAndSlowHeaderConnectionsAreClosed) {
  ServerOptions o;
  o.idle_timeout = absl::Milliseconds(300);
  o.header_timeout = absl::Milliseconds(300);
  auto server = StartServer(o, Echo);
  ASSERT_NE(server, nullptr);
  Client idle(server->port());
  Client slow(server->port());
  ASSERT_TRUE(slow.Send("GET / HTTP/1.1\r\n"));
  const absl::Time start = absl::Now();
  EXPECT_TRUE(idle.WaitEof(absl::Seconds(3)));
  EXPECT_TRUE(slow.WaitEof(absl::Seconds(3)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  // A busy connection is not idle: a response that takes longer than the
  // idle timeout still arrives.
  auto slow_server = StartServer(o, [](Request, std::shared_ptr<Responder> r) {
    std::thread([r] {
      absl::SleepFor(absl::Milliseconds(800));
      r->Send(200, "text/plain", "late");
    }).detach();
  });
  ASSERT_NE(slow_server, nullptr);
  Client b(slow_server->port());
  ASSERT_TRUE(b.Send(Post("/", "")));
  auto r = b.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "late");
}

TEST(HttpServerTest, ConnectionsPastTheCapGet503) {
  ServerOptions o;
  o.max_connections = 2;
  auto server = StartServer(o, Echo);
  ASSERT_NE(server, nullptr);
  Client a(server->port());
  Client b(server->port());
  ASSERT_TRUE(a.Send(Post("/", "a")));
  ASSERT_TRUE(a.ReadResponse().has_value());
  ASSERT_TRUE(b.Send(Post("/", "b")));
  ASSERT_TRUE(b.ReadResponse().has_value());
  Client c(server->port());
  auto r = c.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  EXPECT_THAT(r->body, HasSubstr("too many connections"));
  a.Close();
  // Once one leaves, a new connection is served.
  const absl::Time deadline = absl::Now() + absl::Seconds(3);
  while (server->open_connections() > 1 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  Client d(server->port());
  ASSERT_TRUE(d.Send(Post("/", "d")));
  auto rd = d.ReadResponse();
  ASSERT_TRUE(rd.has_value());
  EXPECT_EQ(rd->status, 200);
}

TEST(HttpServerTest, ClientLeavingMidStreamRunsOnClose) {
  absl::Notification closed;
  std::shared_ptr<Responder> held;
  absl::Mutex mu;
  auto server = StartServer({}, [&](Request, std::shared_ptr<Responder> r) {
    r->StartStream(200, "text/event-stream");
    r->Write("data: first\n\n");
    r->OnClose([&] { closed.Notify(); });
    absl::MutexLock lock(&mu);
    held = r;  // never ends the stream
  });
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(c.Send(Post("/", "")));
  ASSERT_TRUE(c.ReadUntil([](const std::string& b) {
    return b.find("data: first") != std::string::npos;
  }));
  EXPECT_FALSE(closed.HasBeenNotified());
  c.Close();
  EXPECT_TRUE(closed.WaitForNotificationWithTimeout(absl::Seconds(5)));
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(held->closed());
  // OnClose after the fact runs at once.
  absl::Notification late;
  held->OnClose([&] { late.Notify(); });
  EXPECT_TRUE(late.WaitForNotificationWithTimeout(absl::Seconds(5)));
}

TEST(HttpServerTest, ExpectContinueGetsA100First) {
  auto server = StartServer({}, Echo);
  ASSERT_NE(server, nullptr);
  Client c(server->port());
  ASSERT_TRUE(
      c.Send("POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: "
             "100-continue\r\n\r\n"));
  ASSERT_TRUE(c.ReadUntil([](const std::string& b) {
    return b.find("\r\n\r\n") != std::string::npos;
  }));
  EXPECT_THAT(c.buffer(), StartsWith("HTTP/1.1 100 Continue\r\n\r\n"));
  ASSERT_TRUE(c.Send("hello"));
  auto cont = c.ReadResponse();
  ASSERT_TRUE(cont.has_value());
  EXPECT_EQ(cont->status, 100);
  auto r = c.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "POST /e hello");
}

TEST(HttpServerTest, StopLetsResponsesFinishThenClosesTheRest) {
  std::atomic<int> on_close_calls{0};
  std::vector<std::thread> threads;
  absl::Mutex mu;
  auto server = StartServer({}, [&](Request req, std::shared_ptr<Responder> r) {
    r->StartStream(200, "text/plain");
    r->Write("start;");
    r->OnClose([&] { ++on_close_calls; });
    if (req.path == "/finishes") {
      absl::MutexLock lock(&mu);
      threads.emplace_back([r] {
        absl::SleepFor(absl::Milliseconds(300));
        r->Write("end");
        r->EndStream();
      });
    }
  });
  ASSERT_NE(server, nullptr);
  Client finishes(server->port());
  Client stuck(server->port());
  Client idle(server->port());
  ASSERT_TRUE(finishes.Send(Post("/finishes", "")));
  ASSERT_TRUE(stuck.Send(Post("/stuck", "")));
  auto started = [](const std::string& b) {
    return b.find("start;") != std::string::npos;
  };
  ASSERT_TRUE(finishes.ReadUntil(started));
  ASSERT_TRUE(stuck.ReadUntil(started));
  const absl::Time start = absl::Now();
  server->Stop(absl::Seconds(1));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  auto r = finishes.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "start;end");
  EXPECT_TRUE(idle.WaitEof(absl::Seconds(1)));
  EXPECT_TRUE(stuck.WaitEof(absl::Seconds(1)));
  EXPECT_EQ(on_close_calls.load(), 1);  // the stuck one only
  Client late(server->port());
  EXPECT_FALSE(late.connected() && late.Send(Post("/", "")) &&
               late.ReadResponse(absl::Milliseconds(500)).has_value());
  absl::MutexLock lock(&mu);
  for (auto& t : threads) t.join();
}

}  // namespace
}  // namespace duet::http
