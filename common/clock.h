// Monotonic timing helpers for per-phase timings.
#ifndef DUET_COMMON_CLOCK_H_
#define DUET_COMMON_CLOCK_H_

#include <chrono>

namespace duet {

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  void Reset() { start_ = std::chrono::steady_clock::now(); }
  double ElapsedMs() const {
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now() - start_)
        .count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace duet

#endif  // DUET_COMMON_CLOCK_H_
