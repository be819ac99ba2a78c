#include "common/logging.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Redirects file descriptor 2 (stderr) to a temporary file for the lifetime
// of the object; Finish() restores it and returns what was written.
class StderrCapture {
 public:
  StderrCapture() {
    char path[] = "/tmp/duet_logging_test_XXXXXX";
    fd_ = mkstemp(path);
    path_ = path;
    std::fflush(stderr);
    saved_ = dup(2);
    dup2(fd_, 2);
  }
  ~StderrCapture() {
    Restore();
    if (!path_.empty()) unlink(path_.c_str());
  }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;

  std::string Finish() {
    Restore();
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  bool ok() const { return fd_ >= 0 && saved_ >= 0; }

 private:
  void Restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    dup2(saved_, 2);
    close(saved_);
    close(fd_);
    saved_ = -1;
  }

  int fd_ = -1;
  int saved_ = -1;
  std::string path_;
};

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

TEST(LoggingTest, FormatLogLineLayout) {
  SetLogPrefix("decode", 3);
  const std::string line =
      FormatLogLine(LogSeverity::kWarning, "/src/duet/decode_node/server.cc",
                    42, "serving on 0.0.0.0:50051");
  // W20261121 12:00:00.123456 decode:3 server.cc:42] serving on ...
  const std::regex re(
      R"(W\d{8} \d\d:\d\d:\d\d\.\d{6} decode:3 server\.cc:42\] serving on 0\.0\.0\.0:50051\n)");
  EXPECT_TRUE(std::regex_match(line, re)) << line;
  EXPECT_THAT(line, ::testing::Not(HasSubstr("decode_node/")));
}

TEST(LoggingTest, SeverityLetters) {
  SetLogPrefix("router", 0);
  EXPECT_THAT(FormatLogLine(LogSeverity::kInfo, "a.cc", 1, "x"),
              StartsWith("I"));
  EXPECT_THAT(FormatLogLine(LogSeverity::kWarning, "a.cc", 1, "x"),
              StartsWith("W"));
  EXPECT_THAT(FormatLogLine(LogSeverity::kError, "a.cc", 1, "x"),
              StartsWith("E"));
  EXPECT_THAT(FormatLogLine(LogSeverity::kFatal, "a.cc", 1, "x"),
              StartsWith("F"));
  // A file name without a directory is kept as is.
  EXPECT_THAT(FormatLogLine(LogSeverity::kInfo, "plain.cc", 7, "m"),
              HasSubstr(" router:0 plain.cc:7] m\n"));
}

TEST(LoggingTest, PrefixChangesApplyToLaterLines) {
  SetLogPrefix("prefill", 12);
  EXPECT_THAT(FormatLogLine(LogSeverity::kInfo, "x/y.cc", 5, "hi"),
              HasSubstr(" prefill:12 y.cc:5] hi\n"));
  SetLogPrefix("decode", 0);
  EXPECT_THAT(FormatLogLine(LogSeverity::kInfo, "x/y.cc", 5, "hi"),
              HasSubstr(" decode:0 y.cc:5] hi\n"));
}

TEST(LoggingTest, LogMacroWritesOneLineToStderr) {
  SetLogPrefix("router", 1);
  StderrCapture capture;
  ASSERT_TRUE(capture.ok());
  const int line = __LINE__ + 1;
  DUET_LOG(ERROR) << "value=" << 17 << " name=" << std::string("abc");
  const std::string out = capture.Finish();
  const std::regex re(R"(E\d{8} \d\d:\d\d:\d\d\.\d{6} router:1 logging_test\.cc:(\d+)\] value=17 name=abc\n)");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(out, m, re)) << out;
  EXPECT_EQ(std::stoi(m[1].str()), line);
}

TEST(LoggingTest, MinSeverityDropsLowerLines) {
  SetLogPrefix("router", 1);
  StderrCapture capture;
  ASSERT_TRUE(capture.ok());
  SetMinLogSeverity(LogSeverity::kWarning);
  DUET_LOG(INFO) << "dropped-info";
  DUET_LOG(WARNING) << "kept-warning";
  DUET_LOG(ERROR) << "kept-error";
  SetMinLogSeverity(LogSeverity::kInfo);
  DUET_LOG(INFO) << "kept-info";
  const std::string out = capture.Finish();
  EXPECT_THAT(out, ::testing::Not(HasSubstr("dropped-info")));
  const std::vector<std::string> lines = SplitLines(out);
  ASSERT_EQ(lines.size(), 3u) << out;
  EXPECT_THAT(lines[0], StartsWith("W"));
  EXPECT_THAT(lines[0], HasSubstr("kept-warning"));
  EXPECT_THAT(lines[1], StartsWith("E"));
  EXPECT_THAT(lines[2], StartsWith("I"));
  EXPECT_THAT(lines[2], HasSubstr("kept-info"));
}

TEST(LoggingTest, ConcurrentLinesStayWhole) {
  SetLogPrefix("decode", 7);
  SetMinLogSeverity(LogSeverity::kInfo);
  constexpr int kThreads = 8;
  constexpr int kLinesPerThread = 300;
  const std::string payload(500, 'x');  // long lines make tearing likely
  StderrCapture capture;
  ASSERT_TRUE(capture.ok());
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([t, &payload] {
        for (int i = 0; i < kLinesPerThread; ++i) {
          DUET_LOG(INFO) << "thread=" << t << " line=" << i << " " << payload
                         << " end";
        }
      });
    }
    for (std::thread& th : threads) th.join();
  }
  const std::string out = capture.Finish();
  const std::vector<std::string> lines = SplitLines(out);
  ASSERT_EQ(lines.size(), static_cast<size_t>(kThreads * kLinesPerThread));
  const std::regex re(
      R"(I\d{8} \d\d:\d\d:\d\d\.\d{6} decode:7 logging_test\.cc:\d+\] thread=(\d+) line=(\d+) x{500} end)");
  std::set<std::pair<int, int>> seen;
  std::vector<int> next_line(kThreads, 0);
  for (const std::string& line : lines) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, re)) << "torn line: " << line;
    const int t = std::stoi(m[1].str());
    const int i = std::stoi(m[2].str());
    ASSERT_LT(t, kThreads);
    EXPECT_TRUE(seen.emplace(t, i).second) << "duplicate " << line;
    // Lines of one thread appear in the order it wrote them.
    EXPECT_EQ(i, next_line[t]) << line;
    next_line[t] = i + 1;
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kThreads * kLinesPerThread));
}

TEST(LoggingDeathTest, FatalWritesLineThenAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  SetLogPrefix("router", 2);
  EXPECT_DEATH({ DUET_LOG(FATAL) << "boom " << 99; },
               R"(F[0-9]{8} .* router:2 logging_test\.cc:[0-9]+\] boom 99)");
  // Fatal lines are written even when the minimum severity is above fatal's
  // peers.
  EXPECT_DEATH(
      {
        SetMinLogSeverity(LogSeverity::kFatal);
        DUET_LOG(FATAL) << "still shown";
      },
      "still shown");
}

}  // namespace
}  // namespace duet
