#include "http/server.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <optional>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"

namespace duet::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

std::string ReasonPhrase(int status) {
  const beast::string_view r =
      bhttp::obsolete_reason(static_cast<bhttp::status>(status));
  return std::string(r.data(), r.size());
}

absl::string_view Request::Header(absl::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (absl::EqualsIgnoreCase(k, name)) return v;
  }
  return {};
}

// Shared by the server and every connection: connections (and Responders
// the application still holds) keep the event loop alive after Server is
// gone.
struct Server::Core {
  explicit Core(const ServerOptions& o, Handler h)
      : options(o), handler(std::move(h)), acceptor(net::make_strand(ioc)) {}

  const ServerOptions options;
  const Handler handler;
  net::io_context ioc;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
  std::atomic<bool> stopping{false};

  absl::Mutex mu;
  uint64_t next_id ABSL_GUARDED_BY(mu) = 1;
  absl::flat_hash_map<uint64_t, std::weak_ptr<Connection>> connections
      ABSL_GUARDED_BY(mu);
};

namespace {

std::string FormatHead(int status, const Responder::Headers& headers,
                       bool keep_alive) {
  std::string out =
      absl::StrCat("HTTP/1.1 ", status, " ", ReasonPhrase(status), "\r\n");
  for (const auto& [k, v] : headers) absl::StrAppend(&out, k, ": ", v, "\r\n");
  absl::StrAppend(&out, "Connection: ", keep_alive ? "keep-alive" : "close",
                  "\r\n\r\n");
  return out;
}

// A response the transport itself gives (errors before any handler ran).
std::string PlainResponse(int status, absl::string_view message) {
  const std::string body = absl::StrCat(message, "\n");
  return FormatHead(status,
                    {{"Content-Type", "text/plain; charset=utf-8"},
                     {"Content-Length", std::to_string(body.size())}},
                    /*keep_alive=*/false) +
         body;
}

}  // namespace

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<Server::Core> core, tcp::socket socket,
             uint64_t id)
      : core_(std::move(core)), stream_(std::move(socket)), id_(id) {}

  ~Connection() {
    absl::MutexLock lock(&core_->mu);
    core_->connections.erase(id_);
  }

  void Start() {
    net::dispatch(stream_.get_executor(),
                  [self = shared_from_this()] { self->ReadIdle(); });
  }

  // Answers with `response` and closes (connection cap, limits).
  void RejectAndClose(std::string response) {
    net::dispatch(stream_.get_executor(),
                  [self = shared_from_this(), r = std::move(response)] {
                    self->keep_alive_ = false;
                    self->BeginResponse();
                    self->head_sent_ = true;
                    self->Enqueue(self->generation_, std::move(r), {},
                                  /*last=*/true);
                  });
  }

  // Server::Stop: idle connections close now, busy ones after their
  // response (or at once when `force`).
  void Stop(bool force) {
    net::dispatch(stream_.get_executor(), [self = shared_from_this(), force] {
      self->keep_alive_ = false;
      if (force || !self->handling_) self->Close();
    });
  }

  // Responder operations, posted to the strand.
  void Post(std::function<void(Connection&)> fn) {
    net::post(stream_.get_executor(),
              [self = shared_from_this(), fn = std::move(fn)] { fn(*self); });
  }
  void Enqueue(uint64_t generation, std::string data,
               std::function<void()> on_written, bool last) {
    if (generation != generation_ || closed_ || response_complete_) return;
    out_.push_back({std::move(data), std::move(on_written), last});
    WriteNext();
  }
  void AddOnClose(uint64_t generation, std::function<void()> cb) {
    if (generation != generation_ || response_complete_) return;
    if (closed_) {
      cb();
      return;
    }
    on_close_.push_back(std::move(cb));
  }
  bool keep_alive() const { return keep_alive_; }
  uint64_t generation() const { return generation_; }
  std::atomic<bool> closed_flag{false};
  // Set on the strand by Send/StartStream: the head is queued.
  bool head_sent_ = false;

 private:
  struct Out {
    std::string data;
    std::function<void()> on_written;
    bool last;  // the response is complete after this
  };

  void BeginResponse() {
    handling_ = true;
    response_complete_ = false;
    head_sent_ = false;
  }

  void ReadIdle() {
    handling_ = false;
    if (closed_) return;
    if (core_->stopping) return Close();
    if (!keep_alive_) return Linger();
    if (buffer_.size() > 0) return ReadHeader();  // pipelined request
    stream_.expires_after(
        absl::ToChronoNanoseconds(core_->options.idle_timeout));
    stream_.async_read_some(
        buffer_.prepare(4096),
        [self = shared_from_this()](beast::error_code ec, size_t n) {
          if (ec) return self->Close();
          self->buffer_.commit(n);
          self->ReadHeader();
        });
  }

  void ReadHeader() {
    parser_.emplace();
    parser_->header_limit(
        static_cast<std::uint32_t>(core_->options.max_header_bytes));
    parser_->body_limit(core_->options.max_body_bytes);
    stream_.expires_after(
        absl::ToChronoNanoseconds(core_->options.header_timeout));
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) {
          self->OnHeader(ec);
        });
  }

  // Maps a read error to the answer the client gets, if any.
  void FailRead(beast::error_code ec, bool header) {
    if (ec == bhttp::error::header_limit) {
      return Reject(431,
                    absl::StrCat("request header larger than ",
                                 core_->options.max_header_bytes, " bytes"));
    }
    if (ec == bhttp::error::body_limit) {
      return Reject(413, absl::StrCat("request body larger than ",
                                      core_->options.max_body_bytes, " bytes"));
    }
    // A timeout (Beast has closed the socket), a reset, or the client
    // closing mid-request: nothing to answer.
    const bool parse_error =
        ec.category() ==
            bhttp::make_error_code(bhttp::error::bad_target).category() &&
        ec != bhttp::error::end_of_stream &&
        ec != bhttp::error::partial_message;
    if (parse_error) {
      return Reject(
          400, absl::StrCat("malformed HTTP request (",
                            header ? "header" : "body", "): ", ec.message()));
    }
    Close();
  }

  void Reject(int status, const std::string& message) {
    keep_alive_ = false;
    BeginResponse();
    head_sent_ = true;
    Enqueue(generation_, PlainResponse(status, message), {}, /*last=*/true);
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return FailRead(ec, /*header=*/true);
    const auto& h = parser_->get();
    if (const auto length = parser_->content_length();
        length.has_value() && *length > core_->options.max_body_bytes) {
      return Reject(
          413, absl::StrCat("request body of ", *length, " bytes; at most ",
                            core_->options.max_body_bytes));
    }
    if (parser_->is_done()) return Dispatch();
    if (absl::EqualsIgnoreCase(
            absl::string_view(h[bhttp::field::expect].data(),
                              h[bhttp::field::expect].size()),
            "100-continue")) {
      // curl waits up to a second for this before sending a large body.
      stream_.expires_after(
          absl::ToChronoNanoseconds(core_->options.write_timeout));
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(
          stream_, net::buffer(kContinue),
          [self = shared_from_this()](beast::error_code ec, size_t) {
            if (ec) return self->Close();
            self->ReadBody();
          });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    stream_.expires_after(
        absl::ToChronoNanoseconds(core_->options.body_timeout));
    bhttp::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) {
          if (ec) return self->FailRead(ec, /*header=*/false);
          self->Dispatch();
        });
  }

  void Dispatch() {
    bhttp::request<bhttp::string_body> msg = parser_->release();
    parser_.reset();
    Request req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    req.path = req.target.substr(0, req.target.find('?'));
    for (const auto& field : msg) {
      req.headers.emplace_back(std::string(field.name_string()),
                               std::string(field.value()));
    }
    req.body = std::move(msg.body());
    req.keep_alive = msg.keep_alive();
    keep_alive_ = req.keep_alive && !core_->stopping;
    BeginResponse();
    ++generation_;
    // No timeout while the application works; Watch notices a client that
    // leaves meanwhile.
    stream_.expires_never();
    Watch();
    auto responder =
        std::make_shared<Responder>(shared_from_this(), generation_);
    core_->handler(std::move(req), std::move(responder));
  }

  // A read while a response is in progress: EOF or an error means the
  // client went away (OnClose); bytes are a pipelined next request, kept.
  void Watch() {
    if (watching_ || closed_) return;
    if (buffer_.size() >= core_->options.max_header_bytes) return;
    watching_ = true;
    stream_.async_read_some(
        buffer_.prepare(1024),
        [self = shared_from_this()](beast::error_code ec, size_t n) {
          self->watching_ = false;
          if (ec == net::error::operation_aborted && !self->closed_) {
            // Cancelled by Complete(): on to the next request.
            if (self->response_complete_) self->ReadIdle();
            return;
          }
          if (ec) return self->Close();
          self->buffer_.commit(n);
          if (self->response_complete_) return self->ReadIdle();
          self->Watch();
        });
  }

  void WriteNext() {
    if (writing_ || out_.empty() || closed_) return;
    writing_ = true;
    stream_.expires_after(
        absl::ToChronoNanoseconds(core_->options.write_timeout));
    net::async_write(
        stream_, net::buffer(out_.front().data),
        [self = shared_from_this()](beast::error_code ec, size_t) {
          self->writing_ = false;
          if (ec || self->closed_) {
            self->out_.clear();  // no write holds its buffer any more
            return self->Close();
          }
          Out done = std::move(self->out_.front());
          self->out_.pop_front();
          if (done.last) return self->Complete();
          if (done.on_written) done.on_written();
          self->WriteNext();
        });
  }

  void Complete() {
    response_complete_ = true;
    on_close_.clear();
    out_.clear();   // called from the write handler: nothing in flight
    ++generation_;  // stale Responder calls are ignored from here
    if (core_->stopping) keep_alive_ = false;
    if (!keep_alive_) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      linger_until_ =
          std::chrono::steady_clock::now() + std::chrono::seconds(1);
    }
    stream_.expires_never();
    if (watching_) {
      // Watch's handler goes on (next request, or Linger).
      stream_.socket().cancel();
    } else {
      ReadIdle();
    }
  }

  // Before closing after a response: reads (and drops) what the client still
  // sends for up to a second, so that closing with unread bytes (a body we
  // refused with 413) does not reset the connection before the client has
  // read the answer.
  void Linger() {
    if (closed_) return;
    buffer_.consume(buffer_.size());
    stream_.expires_at(linger_until_);
    stream_.async_read_some(
        buffer_.prepare(16 * 1024),
        [self = shared_from_this()](beast::error_code ec, size_t) {
          if (ec) return self->Close();
          self->Linger();
        });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    closed_flag = true;
    {
      absl::MutexLock lock(&core_->mu);
      core_->connections.erase(id_);
    }
    beast::error_code ignored;
    stream_.socket().close(ignored);
    // A write in flight still reads its buffer; its handler clears.
    if (!writing_) out_.clear();
    std::vector<std::function<void()>> callbacks = std::move(on_close_);
    on_close_.clear();
    if (!response_complete_) {
      for (auto& cb : callbacks) cb();
    }
  }

  std::shared_ptr<Server::Core> core_;
  beast::tcp_stream stream_;
  const uint64_t id_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  uint64_t generation_ = 0;
  bool keep_alive_ = true;
  bool handling_ = false;  // a request is being answered
  bool response_complete_ = true;
  bool watching_ = false;
  bool writing_ = false;
  bool closed_ = false;
  std::chrono::steady_clock::time_point linger_until_;
  std::deque<Out> out_;
  std::vector<std::function<void()>> on_close_;
};

Responder::Responder(std::shared_ptr<Connection> connection,
                     uint64_t generation)
    : connection_(std::move(connection)), generation_(generation) {}

Responder::~Responder() = default;

void Responder::Send(int status, absl::string_view content_type,
                     std::string body, Headers extra) {
  connection_->Post([g = generation_, status, ct = std::string(content_type),
                     body = std::move(body),
                     extra = std::move(extra)](Connection& c) mutable {
    if (g != c.generation() || c.head_sent_) return;
    c.head_sent_ = true;
    extra.emplace_back("Content-Type", ct);
    extra.emplace_back("Content-Length", std::to_string(body.size()));
    c.Enqueue(g, FormatHead(status, extra, c.keep_alive()) + body, {},
              /*last=*/true);
  });
}

void Responder::StartStream(int status, absl::string_view content_type,
                            Headers extra) {
  connection_->Post([g = generation_, status, ct = std::string(content_type),
                     extra = std::move(extra)](Connection& c) mutable {
    if (g != c.generation() || c.head_sent_) return;
    c.head_sent_ = true;
    extra.emplace_back("Content-Type", ct);
    extra.emplace_back("Cache-Control", "no-cache");
    extra.emplace_back("Transfer-Encoding", "chunked");
    c.Enqueue(g, FormatHead(status, extra, c.keep_alive()), {},
              /*last=*/false);
  });
}

void Responder::Write(std::string data, std::function<void()> on_written) {
  if (data.empty()) return;  // a zero-size chunk would end the stream
  connection_->Post([g = generation_, data = std::move(data),
                     cb = std::move(on_written)](Connection& c) mutable {
    if (!c.head_sent_) return;
    std::string framed = absl::StrCat(absl::Hex(data.size()), "\r\n");
    framed += data;
    framed += "\r\n";
    c.Enqueue(g, std::move(framed), std::move(cb), /*last=*/false);
  });
}

void Responder::EndStream() {
  connection_->Post([g = generation_](Connection& c) {
    if (!c.head_sent_) return;
    c.Enqueue(g, "0\r\n\r\n", {}, /*last=*/true);
  });
}

void Responder::OnClose(std::function<void()> cb) {
  connection_->Post([g = generation_, cb = std::move(cb)](Connection& c) {
    c.AddOnClose(g, cb);
  });
}

bool Responder::closed() const { return connection_->closed_flag; }

namespace {

void Accept(const std::shared_ptr<Server::Core>& core) {
  core->acceptor.async_accept(
      net::make_strand(core->ioc),
      [core](beast::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || core->stopping) return;
        if (!ec) {
          std::shared_ptr<Connection> conn;
          bool over_cap = false;
          {
            absl::MutexLock lock(&core->mu);
            over_cap = static_cast<int>(core->connections.size()) >=
                       core->options.max_connections;
            const uint64_t id = core->next_id++;
            conn = std::make_shared<Connection>(core, std::move(socket), id);
            core->connections[id] = conn;
          }
          if (over_cap) {
            conn->RejectAndClose(PlainResponse(
                503, absl::StrCat("too many connections (at most ",
                                  core->options.max_connections, ")")));
          } else {
            conn->Start();
          }
        } else {
          // EMFILE and the like: keep accepting once resources return.
          DUET_LOG(WARNING) << "http accept: " << ec.message();
        }
        Accept(core);
      });
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(
    const ServerOptions& options, Handler handler) {
  if (options.threads <= 0 || options.max_connections <= 0) {
    return absl::InvalidArgumentError(
        "http server: threads and max_connections must be > 0");
  }
  auto core = std::make_shared<Core>(options, std::move(handler));
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(options.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("http server: '", options.host, "' is not an IP address"));
  }
  const tcp::endpoint endpoint(address,
                               static_cast<unsigned short>(options.port));
  core->acceptor.open(endpoint.protocol(), ec);
  if (!ec) core->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) core->acceptor.bind(endpoint, ec);
  if (!ec) core->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("http server: cannot listen on ",
                                               options.host, ":", options.port,
                                               ": ", ec.message()));
  }
  const int port = core->acceptor.local_endpoint().port();
  Accept(core);
  for (int i = 0; i < options.threads; ++i) {
    core->threads.emplace_back([c = core.get()] { c->ioc.run(); });
  }
  return std::unique_ptr<Server>(new Server(core, port));
}

int Server::open_connections() const {
  absl::MutexLock lock(&core_->mu);
  return static_cast<int>(core_->connections.size());
}

void Server::Stop(absl::Duration grace) {
  if (stopped_) return;
  stopped_ = true;
  core_->stopping = true;
  net::post(core_->acceptor.get_executor(), [c = core_] {
    beast::error_code ignored;
    c->acceptor.close(ignored);
  });
  auto for_each = [&](bool force) {
    std::vector<std::shared_ptr<Connection>> live;
    {
      absl::MutexLock lock(&core_->mu);
      for (auto& [id, weak] : core_->connections) {
        if (auto c = weak.lock()) live.push_back(std::move(c));
      }
    }
    for (auto& c : live) c->Stop(force);
  };
  auto none_left = [this] { return core_->connections.empty(); };
  for_each(/*force=*/false);
  {
    absl::MutexLock lock(&core_->mu);
    core_->mu.AwaitWithTimeout(absl::Condition(&none_left), grace);
  }
  for_each(/*force=*/true);
  {
    // Connections still held by the application (a Responder it keeps)
    // are closed; they need not be destroyed for the loop to stop.
    absl::MutexLock lock(&core_->mu);
    core_->mu.AwaitWithTimeout(absl::Condition(&none_left), absl::Seconds(1));
  }
  core_->ioc.stop();
  for (std::thread& t : core_->threads) t.join();
  core_->threads.clear();
}

Server::~Server() { Stop(absl::ZeroDuration()); }

}  // namespace duet::http
