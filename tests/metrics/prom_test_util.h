// Test helpers for /metrics: a plain HTTP GET over loopback, promtool's
// verdict on a scrape, and a parser of the text format's samples.
#ifndef DUET_TESTS_METRICS_PROM_TEST_UTIL_H_
#define DUET_TESTS_METRICS_PROM_TEST_UTIL_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace duet::testing {

struct HttpReply {
  int status = 0;
  std::string content_type;
  std::string body;
};

// GET http://127.0.0.1:<port><path> with Connection: close; the whole
// reply (Content-Length bodies only). Unavailable when nothing listens,
// DeadlineExceeded past `timeout`.
absl::StatusOr<HttpReply> HttpGet(int port, const std::string& path,
                                  absl::Duration timeout = absl::Seconds(10));

// A free TCP port on 127.0.0.1 (bound, read, closed: another process may
// take it before the caller does, which loopback tests accept).
int FreePort();

// The promtool binary ("" when not installed: Debian's `prometheus`).
std::string PromtoolPath();

struct PromtoolVerdict {
  bool ok = false;
  std::string output;  // what promtool printed, for the failure message
};
// `promtool check metrics` on `text`. OK when promtool parses it and finds
// no lint problem other than "metric names should not contain ':'": duet
// names its metrics as vLLM does (duet:...), which that one rule flags
// (colons are meant for recording rules) and which Prometheus scrapes
// without complaint.
PromtoolVerdict PromtoolCheck(const std::string& promtool,
                              const std::string& text);

// Every sample of an exposition text: the series as written (name and
// label text, e.g. `duet:x_bucket{le="0.5"}`) -> value. Comments skipped.
std::map<std::string, double> ParseSamples(const std::string& text);

}  // namespace duet::testing

#endif  // DUET_TESTS_METRICS_PROM_TEST_UTIL_H_
