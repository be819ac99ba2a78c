#include "common/logging.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace duet {
namespace {

struct LogState {
  absl::Mutex mu;
  std::string prefix = "duet";
  std::atomic<int> min_severity{0};
};

LogState& State() {
  static LogState* state = new LogState();  // never destroyed: usable at exit
  return *state;
}

const char* Basename(const char* path) {
  const char* base = path;
  for (const char* p = path; *p != '\0'; ++p) {
    if (*p == '/') base = p + 1;
  }
  return base;
}

}  // namespace

void SetLogPrefix(absl::string_view role, int rank) {
  LogState& s = State();
  absl::MutexLock lock(&s.mu);
  s.prefix = absl::StrCat(role, ":", rank);
}

void SetMinLogSeverity(LogSeverity severity) {
  State().min_severity.store(static_cast<int>(severity));
}

std::string FormatLogLine(LogSeverity severity, const char* file, int line,
                          absl::string_view message) {
  static constexpr char kLetters[] = {'I', 'W', 'E', 'F'};
  std::string prefix;
  {
    LogState& s = State();
    absl::MutexLock lock(&s.mu);
    prefix = s.prefix;
  }
  return absl::StrCat(
      std::string(1, kLetters[static_cast<int>(severity)]),
      absl::FormatTime("%Y%m%d %H:%M:%E6S", absl::Now(), absl::LocalTimeZone()),
      " ", prefix, " ", Basename(file), ":", line, "] ", message, "\n");
}

LogMessage::LogMessage(LogSeverity severity, const char* file, int line)
    : severity_(severity), file_(file), line_(line) {}

LogMessage::~LogMessage() {
  if (static_cast<int>(severity_) >= State().min_severity.load() ||
      severity_ == LogSeverity::kFatal) {
    const std::string text =
        FormatLogLine(severity_, file_, line_, stream_.str());
    // One fwrite per line keeps lines from different threads whole.
    std::fwrite(text.data(), 1, text.size(), stderr);
    std::fflush(stderr);
  }
  if (severity_ == LogSeverity::kFatal) std::abort();
}

}  // namespace duet
