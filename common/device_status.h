// Conversion of CUDA runtime, cuBLAS, NCCL and UCX error codes to absl::Status.
//
// This header includes no CUDA/NCCL/UCX header on purpose (common/ must not
// leak them): the macros below name library symbols (cudaSuccess,
// cudaGetErrorString, ...) that resolve in the .cc/.cu file that expands them,
// which includes the library header itself. The mapping from code to
// absl::StatusCode lives in device_status.cc and is unit tested.
#ifndef DUET_COMMON_DEVICE_STATUS_H_
#define DUET_COMMON_DEVICE_STATUS_H_

#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace duet {

enum class DeviceLib { kCuda, kCublas, kNccl, kUcx };

// Which absl::StatusCode a library error code maps to. Out-of-memory codes map
// to RESOURCE_EXHAUSTED, peer/network failures to UNAVAILABLE, timeouts to
// DEADLINE_EXCEEDED, cancellation to CANCELLED, everything else to INTERNAL.
absl::StatusCode DeviceErrorCode(DeviceLib lib, int code);

// Builds "<lib> error <code> (<message>) in `<expr>` at file:line".
absl::Status DeviceErrorToStatus(DeviceLib lib, int code,
                                 absl::string_view message,
                                 absl::string_view expr, const char* file,
                                 int line);

}  // namespace duet

#define DUET_CUDA_RETURN_IF_ERROR(expr)                                     \
  do {                                                                      \
    const auto duet_cuda_rc_ = (expr);                                      \
    if (duet_cuda_rc_ != cudaSuccess) {                                     \
      return ::duet::DeviceErrorToStatus(                                   \
          ::duet::DeviceLib::kCuda, static_cast<int>(duet_cuda_rc_),        \
          cudaGetErrorString(duet_cuda_rc_), #expr, __FILE__, __LINE__);    \
    }                                                                       \
  } while (0)

#define DUET_CUBLAS_RETURN_IF_ERROR(expr)                                   \
  do {                                                                      \
    const auto duet_cublas_rc_ = (expr);                                    \
    if (duet_cublas_rc_ != CUBLAS_STATUS_SUCCESS) {                         \
      return ::duet::DeviceErrorToStatus(                                   \
          ::duet::DeviceLib::kCublas, static_cast<int>(duet_cublas_rc_),    \
          cublasGetStatusString(duet_cublas_rc_), #expr, __FILE__,          \
          __LINE__);                                                        \
    }                                                                       \
  } while (0)

#define DUET_NCCL_RETURN_IF_ERROR(expr)                                     \
  do {                                                                      \
    const auto duet_nccl_rc_ = (expr);                                      \
    if (duet_nccl_rc_ != ncclSuccess) {                                     \
      return ::duet::DeviceErrorToStatus(                                   \
          ::duet::DeviceLib::kNccl, static_cast<int>(duet_nccl_rc_),        \
          ncclGetErrorString(duet_nccl_rc_), #expr, __FILE__, __LINE__);    \
    }                                                                       \
  } while (0)

#define DUET_UCX_RETURN_IF_ERROR(expr)                                      \
  do {                                                                      \
    const auto duet_ucx_rc_ = (expr);                                       \
    if (duet_ucx_rc_ != UCS_OK) {                                           \
      return ::duet::DeviceErrorToStatus(                                   \
          ::duet::DeviceLib::kUcx, static_cast<int>(duet_ucx_rc_),          \
          ucs_status_string(duet_ucx_rc_), #expr, __FILE__, __LINE__);      \
    }                                                                       \
  } while (0)

#endif  // DUET_COMMON_DEVICE_STATUS_H_
