// Minimal leveled logging with a process-wide role/rank prefix.
//
// Hand-written because Debian 12's abseil (20220623) predates absl/log; when
// the minimum abseil moves to >= 20230125 this should become a thin wrapper
// over absl::log with the same prefix.
//
//   duet::SetLogPrefix("decode", 1);
//   DUET_LOG(INFO) << "serving on " << addr;
//   => I20261121 12:00:00.123456 decode:1 server.cc:42] serving on ...
#ifndef DUET_COMMON_LOGGING_H_
#define DUET_COMMON_LOGGING_H_

#include <sstream>
#include <string>
#include "absl/strings/string_view.h"

namespace duet {

enum class LogSeverity { kInfo = 0, kWarning = 1, kError = 2, kFatal = 3 };

// Role and rank shown on every line ("router", "prefill", "decode", ...).
// Thread-safe; usually called once at start-up.
void SetLogPrefix(absl::string_view role, int rank);
// Lines below this severity are dropped. Default kInfo.
void SetMinLogSeverity(LogSeverity severity);
// Formats one line exactly as LogMessage writes it (exposed for tests).
std::string FormatLogLine(LogSeverity severity, const char* file, int line,
                          absl::string_view message);

class LogMessage {
 public:
  LogMessage(LogSeverity severity, const char* file, int line);
  ~LogMessage();  // Writes the line; aborts after writing for kFatal.
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogSeverity severity_;
  const char* file_;
  int line_;
  std::ostringstream stream_;
};

}  // namespace duet

#define DUET_LOG_SEVERITY_INFO ::duet::LogSeverity::kInfo
#define DUET_LOG_SEVERITY_WARNING ::duet::LogSeverity::kWarning
#define DUET_LOG_SEVERITY_ERROR ::duet::LogSeverity::kError
#define DUET_LOG_SEVERITY_FATAL ::duet::LogSeverity::kFatal
#define DUET_LOG(severity)                                                 \
  ::duet::LogMessage(DUET_LOG_SEVERITY_##severity, __FILE__, __LINE__).stream()

#endif  // DUET_COMMON_LOGGING_H_
