#include "common/device_status.h"

#include "absl/strings/str_cat.h"

namespace duet {
namespace {

// The numeric values are the libraries' stable ABI values; common/ does not
// include their headers (see device_status.h). tests/common/device_status_test
// checks every constant below against the real enums.
constexpr int kCudaErrorMemoryAllocation = 2;
constexpr int kCudaErrorLaunchTimeout = 702;
constexpr int kCublasStatusAllocFailed = 3;
constexpr int kNcclSystemError = 2;
constexpr int kNcclRemoteError = 6;
constexpr int kUcsErrNoMemory = -4;
constexpr int kUcsErrUnreachable = -6;
constexpr int kUcsErrCanceled = -16;
constexpr int kUcsErrTimedOut = -20;
constexpr int kUcsErrRejected = -23;
constexpr int kUcsErrNotConnected = -24;
constexpr int kUcsErrConnectionReset = -25;
constexpr int kUcsErrEndpointTimeout = -80;

absl::string_view LibName(DeviceLib lib) {
  switch (lib) {
    case DeviceLib::kCuda:
      return "CUDA";
    case DeviceLib::kCublas:
      return "cuBLAS";
    case DeviceLib::kNccl:
      return "NCCL";
    case DeviceLib::kUcx:
      return "UCX";
  }
  return "device";
}

}  // namespace

absl::StatusCode DeviceErrorCode(DeviceLib lib, int code) {
  switch (lib) {
    case DeviceLib::kCuda:
      if (code == kCudaErrorMemoryAllocation) {
        return absl::StatusCode::kResourceExhausted;
      }
      if (code == kCudaErrorLaunchTimeout) {
        return absl::StatusCode::kDeadlineExceeded;
      }
      break;
    case DeviceLib::kCublas:
      if (code == kCublasStatusAllocFailed) {
        return absl::StatusCode::kResourceExhausted;
      }
      break;
    case DeviceLib::kNccl:
      if (code == kNcclSystemError || code == kNcclRemoteError) {
        return absl::StatusCode::kUnavailable;
      }
      break;
    case DeviceLib::kUcx:
      switch (code) {
        case kUcsErrNoMemory:
          return absl::StatusCode::kResourceExhausted;
        case kUcsErrUnreachable:
        case kUcsErrRejected:
        case kUcsErrNotConnected:
        case kUcsErrConnectionReset:
          return absl::StatusCode::kUnavailable;
        case kUcsErrCanceled:
          return absl::StatusCode::kCancelled;
        case kUcsErrTimedOut:
        case kUcsErrEndpointTimeout:
          return absl::StatusCode::kDeadlineExceeded;
        default:
          break;
      }
      break;
  }
  return absl::StatusCode::kInternal;
}

absl::Status DeviceErrorToStatus(DeviceLib lib, int code,
                                 absl::string_view message,
                                 absl::string_view expr, const char* file,
                                 int line) {
  return absl::Status(
      DeviceErrorCode(lib, code),
      absl::StrCat(LibName(lib), " error ", code, " (", message, ") in `",
                   expr, "` at ", file, ":", line));
}

}  // namespace duet
