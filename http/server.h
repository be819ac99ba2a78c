// An event-driven HTTP/1.1 server: Boost.Beast parses requests, Boost.Asio
// runs every connection on a few threads (a strand per connection, no thread
// per connection), so thousands of long-lived streaming responses cost
// memory, not threads.
//
// It owns the transport only: keep-alive, request size limits (431 for a
// header too large, 413 for a body over the limit), the idle, header-read,
// body-read and write timeouts, a cap on open connections (503 past it),
// whole and chunked (streaming, e.g. server-sent events) responses, telling
// the application when a client goes away mid-response, and a graceful
// stop. What a request means is the handler's business.
#ifndef DUET_HTTP_SERVER_H_
#define DUET_HTTP_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace duet::http {

struct ServerOptions {
  // Address to listen on; port 0 picks a free port (Server::port()).
  std::string host = "127.0.0.1";
  int port = 0;
  // Threads running the event loop (each connection stays on one strand).
  int threads = 2;
  // Request line plus headers; past it: 431 and the connection closes.
  size_t max_header_bytes = 16 * 1024;
  // Request body; past it: 413 and the connection closes.
  size_t max_body_bytes = 8 * 1024 * 1024;
  // Open connections; one more is answered 503 and closed.
  int max_connections = 4096;
  // A keep-alive connection with no request for this long is closed.
  absl::Duration idle_timeout = absl::Seconds(60);
  // From a request's first byte until its header is complete (a client
  // that sends its header slowly is disconnected).
  absl::Duration header_timeout = absl::Seconds(10);
  // Reading the body once the header is in (disconnected past it).
  absl::Duration body_timeout = absl::Seconds(30);
  // One write to the client; a client that reads nothing for this long is
  // disconnected (its request sees OnClose).
  absl::Duration write_timeout = absl::Seconds(30);
};

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: path and query
  std::string path;    // target without the query
  // Names as sent; Header() looks them up case-insensitively.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool keep_alive = true;

  // The first header named `name` (any case), or "" when absent.
  absl::string_view Header(absl::string_view name) const;
};

class Connection;

// The response to one request. Every method may be called from any thread
// and returns at once; the bytes go out on the connection's strand, in
// call order. Exactly one of Send or StartStream ... EndStream.
class Responder {
 public:
  using Headers = std::vector<std::pair<std::string, std::string>>;

  Responder(std::shared_ptr<Connection> connection, uint64_t generation);
  ~Responder();
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;

  // A whole response with Content-Length.
  void Send(int status, absl::string_view content_type, std::string body,
            Headers extra = {});
  // A streaming response (Transfer-Encoding: chunked).
  void StartStream(int status, absl::string_view content_type,
                   Headers extra = {});
  // One chunk; `on_written` (may be empty) runs on the connection's strand
  // once the socket has taken the bytes, so a producer can wait for it
  // before making more (backpressure). It never runs if the connection
  // closes first.
  void Write(std::string data, std::function<void()> on_written = {});
  void EndStream();
  // `cb` runs once if the connection closes before the response is
  // complete (the client went away, a write timed out, the server
  // stopped); at once when that has already happened. Never after a
  // complete response.
  void OnClose(std::function<void()> cb);
  // Whether the connection closed before the response completed.
  bool closed() const;

 private:
  std::shared_ptr<Connection> connection_;
  // Which request of the connection this answers: a Responder kept past
  // its response cannot touch the next one.
  const uint64_t generation_;
};

// Called on the connection's strand with each complete request; may answer
// at once or later from any thread through the Responder.
using Handler =
    std::function<void(Request request, std::shared_ptr<Responder> responder)>;

class Server {
 public:
  // Binds, listens and starts the threads. InvalidArgument for a bad host,
  // Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Server>> Start(
      const ServerOptions& options, Handler handler);
  ~Server();  // Stop(0) if not stopped

  int port() const { return port_; }
  int open_connections() const;

  // Stops accepting, closes idle connections, lets responses in progress
  // finish for up to `grace`, then closes the rest (their OnClose
  // callbacks run) and joins the threads.
  void Stop(absl::Duration grace);

  struct Core;

 private:
  explicit Server(std::shared_ptr<Core> core, int port)
      : core_(std::move(core)), port_(port) {}
  std::shared_ptr<Core> core_;
  int port_ = 0;
  bool stopped_ = false;
};

// Reason phrase of a status code ("Not Found").
std::string ReasonPhrase(int status);

}  // namespace duet::http

#endif  // DUET_HTTP_SERVER_H_
