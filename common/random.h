// SplitMix64: a stateless, well-mixed 64-bit hash. duet uses it wherever a
// random-looking value must be a pure function of its inputs (sampling draws,
// synthetic weights, fault plans, benchmark workloads), so results do not
// depend on thread interleaving, batch composition or the machine.
#ifndef DUET_COMMON_RANDOM_H_
#define DUET_COMMON_RANDOM_H_

#include <cstdint>

// Callable from CUDA device code too (kernels/sampling.h draws on the GPU).
#if defined(__CUDACC__)
#define DUET_RANDOM_HD __host__ __device__
#else
#define DUET_RANDOM_HD
#endif

namespace duet {

DUET_RANDOM_HD constexpr uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace duet

#undef DUET_RANDOM_HD

#endif  // DUET_COMMON_RANDOM_H_
