// Helpers shared by the CPU kernel tests: seeded random inputs that are never
// zero, NaN poisoning, and element-wise comparison against double references.
#ifndef DUET_TESTS_KERNELS_KERNEL_TEST_UTIL_H_
#define DUET_TESTS_KERNELS_KERNEL_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace duet::kernels::testing {

inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Uniform magnitude in [lo, hi] with a random sign: never zero.
inline float RandomNonZero(std::mt19937& rng, float lo = 0.05f,
                           float hi = 1.0f) {
  std::uniform_real_distribution<float> mag(lo, hi);
  const float m = mag(rng);
  return (rng() & 1u) ? m : -m;
}

inline std::vector<float> RandomVector(std::mt19937& rng, size_t n,
                                       float lo = 0.05f, float hi = 1.0f) {
  std::vector<float> v(n);
  for (float& x : v) x = RandomNonZero(rng, lo, hi);
  return v;
}

// Checks every element: got[i] finite and |got[i] - want[i]| <= rtol *
// scale[i], where scale[i] is the magnitude of the terms that produced
// want[i] (so cancellation does not demand impossible relative accuracy).
// Stops after the first few mismatches; returns whether all matched.
inline ::testing::AssertionResult AllClose(const std::vector<float>& got,
                                           const std::vector<double>& want,
                                           const std::vector<double>& scale,
                                           double rtol) {
  if (got.size() != want.size() || want.size() != scale.size()) {
    return ::testing::AssertionFailure()
           << "size mismatch " << got.size() << " vs " << want.size();
  }
  int bad = 0;
  std::string msg;
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double tol = rtol * scale[i] + 1e-30;
    worst = std::max(worst, err / tol);
    if (!std::isfinite(got[i]) || !(err <= tol)) {
      if (++bad <= 5) {
        msg += "\n  [" + std::to_string(i) + "] got " +
               std::to_string(got[i]) + " want " + std::to_string(want[i]) +
               " err " + std::to_string(err) + " tol " + std::to_string(tol);
      }
    }
  }
  if (bad > 0) {
    return ::testing::AssertionFailure()
           << bad << " of " << got.size() << " elements differ" << msg;
  }
  return ::testing::AssertionSuccess() << "worst err/tol " << worst;
}

}  // namespace duet::kernels::testing

#endif  // DUET_TESTS_KERNELS_KERNEL_TEST_UTIL_H_
