// Backend on the host CPU: fp32 everywhere, ops from kernels/cpu/ops.h.
// Used by tests, the no-GPU demo, and as the reference for other backends.
#ifndef DUET_KERNELS_CPU_CPU_BACKEND_H_
#define DUET_KERNELS_CPU_CPU_BACKEND_H_

#include <memory>

#include "kernels/backend.h"

namespace duet::kernels {

std::unique_ptr<Backend> MakeCpuBackend();

}  // namespace duet::kernels

#endif  // DUET_KERNELS_CPU_CPU_BACKEND_H_
