#include "common/device_status.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

#ifdef DUET_TEST_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif
#ifdef DUET_TEST_HAVE_NCCL
#include <nccl.h>
#endif
#ifdef DUET_TEST_HAVE_UCX
#include <ucs/type/status.h>
#endif

namespace duet {
namespace {

using ::absl::StatusCode;
using ::testing::HasSubstr;

// --- Mapping, written with the numeric ABI values -------------------------

TEST(DeviceErrorCodeTest, CudaMapping) {
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCuda, 2),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCuda, 702),
            StatusCode::kDeadlineExceeded);
  for (int code : {1, 3, 4, 98, 100, 700, 701, 999}) {
    EXPECT_EQ(DeviceErrorCode(DeviceLib::kCuda, code), StatusCode::kInternal)
        << code;
  }
}

TEST(DeviceErrorCodeTest, CublasMapping) {
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCublas, 3),
            StatusCode::kResourceExhausted);
  for (int code : {1, 2, 7, 8, 11, 13, 14, 15, 16}) {
    EXPECT_EQ(DeviceErrorCode(DeviceLib::kCublas, code), StatusCode::kInternal)
        << code;
  }
}

TEST(DeviceErrorCodeTest, NcclMapping) {
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kNccl, 2), StatusCode::kUnavailable);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kNccl, 6), StatusCode::kUnavailable);
  for (int code : {1, 3, 4, 5, 7}) {
    EXPECT_EQ(DeviceErrorCode(DeviceLib::kNccl, code), StatusCode::kInternal)
        << code;
  }
}

TEST(DeviceErrorCodeTest, UcxMapping) {
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, -4),
            StatusCode::kResourceExhausted);
  for (int code : {-6, -23, -24, -25}) {
    EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, code), StatusCode::kUnavailable)
        << code;
  }
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, -16), StatusCode::kCancelled);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, -20),
            StatusCode::kDeadlineExceeded);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, -80),
            StatusCode::kDeadlineExceeded);
  for (int code : {-1, -2, -3, -5, -15, -100}) {
    EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, code), StatusCode::kInternal)
        << code;
  }
}

TEST(DeviceErrorCodeTest, CodesAreLibrarySpecific) {
  // The same number means different things in different libraries.
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCuda, 3), StatusCode::kInternal);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCublas, 2), StatusCode::kInternal);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kNccl, 3), StatusCode::kInternal);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, 2), StatusCode::kInternal);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, -6), StatusCode::kUnavailable);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCuda, -6), StatusCode::kInternal);
}

TEST(DeviceErrorToStatusTest, MessageFormat) {
  const absl::Status s = DeviceErrorToStatus(DeviceLib::kUcx, -25,
                                             "Connection reset by remote peer",
                                             "ucp_put(ep)", "a/b/x.cc", 17);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(s.message(),
            "UCX error -25 (Connection reset by remote peer) in `ucp_put(ep)` "
            "at a/b/x.cc:17");
  EXPECT_THAT(std::string(DeviceErrorToStatus(DeviceLib::kCuda, 1, "m", "e",
                                              "f.cc", 1)
                              .message()),
              HasSubstr("CUDA error 1"));
  EXPECT_THAT(std::string(DeviceErrorToStatus(DeviceLib::kCublas, 1, "m", "e",
                                              "f.cc", 1)
                              .message()),
              HasSubstr("cuBLAS error 1"));
  EXPECT_THAT(std::string(DeviceErrorToStatus(DeviceLib::kNccl, 1, "m", "e",
                                              "f.cc", 1)
                              .message()),
              HasSubstr("NCCL error 1"));
}

// Checks a status produced by one of the *_RETURN_IF_ERROR macros.
void ExpectDeviceError(const absl::Status& s, StatusCode code,
                       const std::string& lib, int numeric,
                       const std::string& lib_message,
                       const std::string& expr) {
  EXPECT_EQ(s.code(), code) << s;
  const std::string msg(s.message());
  EXPECT_THAT(msg, HasSubstr(absl::StrCat(lib, " error ", numeric, " (",
                                          lib_message, ")")));
  EXPECT_THAT(msg, HasSubstr(absl::StrCat("in `", expr, "`")));
  EXPECT_THAT(msg, HasSubstr("device_status_test.cc:"));
}

// --- CUDA / cuBLAS against the real headers --------------------------------

#ifdef DUET_TEST_HAVE_CUDA
TEST(DeviceErrorCodeTest, CudaConstantsMatchRealEnums) {
  static_assert(static_cast<int>(cudaErrorMemoryAllocation) == 2);
  static_assert(static_cast<int>(cudaErrorLaunchTimeout) == 702);
  static_assert(static_cast<int>(CUBLAS_STATUS_ALLOC_FAILED) == 3);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCuda, cudaErrorMemoryAllocation),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCuda, cudaErrorLaunchTimeout),
            StatusCode::kDeadlineExceeded);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCuda, cudaErrorInvalidValue),
            StatusCode::kInternal);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCuda, cudaErrorIllegalAddress),
            StatusCode::kInternal);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCublas, CUBLAS_STATUS_ALLOC_FAILED),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCublas, CUBLAS_STATUS_EXECUTION_FAILED),
            StatusCode::kInternal);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kCublas, CUBLAS_STATUS_NOT_INITIALIZED),
            StatusCode::kInternal);
}

int cuda_calls = 0;
cudaError_t CountedCudaCall(cudaError_t rc) {
  ++cuda_calls;
  return rc;
}

absl::Status CudaOom() {
  DUET_CUDA_RETURN_IF_ERROR(cudaSuccess);
  DUET_CUDA_RETURN_IF_ERROR(cudaErrorMemoryAllocation);
  return absl::OkStatus();
}
absl::Status CudaTimeout() {
  DUET_CUDA_RETURN_IF_ERROR(CountedCudaCall(cudaErrorLaunchTimeout));
  return absl::OkStatus();
}
absl::Status CudaAllOk() {
  DUET_CUDA_RETURN_IF_ERROR(CountedCudaCall(cudaSuccess));
  DUET_CUDA_RETURN_IF_ERROR(CountedCudaCall(cudaSuccess));
  return absl::UnknownError("reached the end");
}

TEST(DeviceMacrosTest, CudaReturnIfError) {
  ExpectDeviceError(CudaOom(), StatusCode::kResourceExhausted, "CUDA", 2,
                    cudaGetErrorString(cudaErrorMemoryAllocation),
                    "cudaErrorMemoryAllocation");
  cuda_calls = 0;
  ExpectDeviceError(CudaTimeout(), StatusCode::kDeadlineExceeded, "CUDA", 702,
                    cudaGetErrorString(cudaErrorLaunchTimeout),
                    "CountedCudaCall(cudaErrorLaunchTimeout)");
  EXPECT_EQ(cuda_calls, 1) << "expression must be evaluated exactly once";
  cuda_calls = 0;
  const absl::Status ok = CudaAllOk();
  EXPECT_EQ(ok.code(), StatusCode::kUnknown);  // fell through both macros
  EXPECT_EQ(cuda_calls, 2);
}

absl::Status CublasAllocFailed() {
  DUET_CUBLAS_RETURN_IF_ERROR(CUBLAS_STATUS_SUCCESS);
  DUET_CUBLAS_RETURN_IF_ERROR(CUBLAS_STATUS_ALLOC_FAILED);
  return absl::OkStatus();
}
absl::Status CublasExecFailed() {
  DUET_CUBLAS_RETURN_IF_ERROR(CUBLAS_STATUS_EXECUTION_FAILED);
  return absl::OkStatus();
}

TEST(DeviceMacrosTest, CublasReturnIfError) {
  ExpectDeviceError(CublasAllocFailed(), StatusCode::kResourceExhausted,
                    "cuBLAS", 3,
                    cublasGetStatusString(CUBLAS_STATUS_ALLOC_FAILED),
                    "CUBLAS_STATUS_ALLOC_FAILED");
  ExpectDeviceError(CublasExecFailed(), StatusCode::kInternal, "cuBLAS",
                    static_cast<int>(CUBLAS_STATUS_EXECUTION_FAILED),
                    cublasGetStatusString(CUBLAS_STATUS_EXECUTION_FAILED),
                    "CUBLAS_STATUS_EXECUTION_FAILED");
}
#endif  // DUET_TEST_HAVE_CUDA

// --- NCCL against the real header ------------------------------------------

#ifdef DUET_TEST_HAVE_NCCL
TEST(DeviceErrorCodeTest, NcclConstantsMatchRealEnums) {
  static_assert(static_cast<int>(ncclSystemError) == 2);
  static_assert(static_cast<int>(ncclRemoteError) == 6);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kNccl, ncclSystemError),
            StatusCode::kUnavailable);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kNccl, ncclRemoteError),
            StatusCode::kUnavailable);
  for (ncclResult_t rc : {ncclUnhandledCudaError, ncclInternalError,
                          ncclInvalidArgument, ncclInvalidUsage,
                          ncclInProgress}) {
    EXPECT_EQ(DeviceErrorCode(DeviceLib::kNccl, rc), StatusCode::kInternal)
        << rc;
  }
}

absl::Status NcclSystem() {
  DUET_NCCL_RETURN_IF_ERROR(ncclSuccess);
  DUET_NCCL_RETURN_IF_ERROR(ncclSystemError);
  return absl::OkStatus();
}
absl::Status NcclRemote() {
  DUET_NCCL_RETURN_IF_ERROR(ncclRemoteError);
  return absl::OkStatus();
}
absl::Status NcclInvalid() {
  DUET_NCCL_RETURN_IF_ERROR(ncclInvalidArgument);
  return absl::OkStatus();
}

TEST(DeviceMacrosTest, NcclReturnIfError) {
  ExpectDeviceError(NcclSystem(), StatusCode::kUnavailable, "NCCL", 2,
                    ncclGetErrorString(ncclSystemError), "ncclSystemError");
  ExpectDeviceError(NcclRemote(), StatusCode::kUnavailable, "NCCL", 6,
                    ncclGetErrorString(ncclRemoteError), "ncclRemoteError");
  ExpectDeviceError(NcclInvalid(), StatusCode::kInternal, "NCCL",
                    static_cast<int>(ncclInvalidArgument),
                    ncclGetErrorString(ncclInvalidArgument),
                    "ncclInvalidArgument");
}
#endif  // DUET_TEST_HAVE_NCCL

// --- UCX against the real header -------------------------------------------

#ifdef DUET_TEST_HAVE_UCX
TEST(DeviceErrorCodeTest, UcxConstantsMatchRealEnums) {
  static_assert(UCS_ERR_NO_MEMORY == -4);
  static_assert(UCS_ERR_UNREACHABLE == -6);
  static_assert(UCS_ERR_CANCELED == -16);
  static_assert(UCS_ERR_TIMED_OUT == -20);
  static_assert(UCS_ERR_REJECTED == -23);
  static_assert(UCS_ERR_NOT_CONNECTED == -24);
  static_assert(UCS_ERR_CONNECTION_RESET == -25);
  static_assert(UCS_ERR_ENDPOINT_TIMEOUT == -80);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, UCS_ERR_NO_MEMORY),
            StatusCode::kResourceExhausted);
  for (ucs_status_t rc : {UCS_ERR_UNREACHABLE, UCS_ERR_REJECTED,
                          UCS_ERR_NOT_CONNECTED, UCS_ERR_CONNECTION_RESET}) {
    EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, rc), StatusCode::kUnavailable)
        << ucs_status_string(rc);
  }
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, UCS_ERR_CANCELED),
            StatusCode::kCancelled);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, UCS_ERR_TIMED_OUT),
            StatusCode::kDeadlineExceeded);
  EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, UCS_ERR_ENDPOINT_TIMEOUT),
            StatusCode::kDeadlineExceeded);
  for (ucs_status_t rc : {UCS_ERR_NO_MESSAGE, UCS_ERR_IO_ERROR,
                          UCS_ERR_INVALID_PARAM, UCS_ERR_UNSUPPORTED,
                          UCS_ERR_BUSY}) {
    EXPECT_EQ(DeviceErrorCode(DeviceLib::kUcx, rc), StatusCode::kInternal)
        << ucs_status_string(rc);
  }
}

absl::Status UcxNoMemory() {
  DUET_UCX_RETURN_IF_ERROR(UCS_OK);
  DUET_UCX_RETURN_IF_ERROR(UCS_ERR_NO_MEMORY);
  return absl::OkStatus();
}
absl::Status UcxStatus(ucs_status_t rc) {
  DUET_UCX_RETURN_IF_ERROR(rc);
  return absl::OkStatus();
}

TEST(DeviceMacrosTest, UcxReturnIfError) {
  ExpectDeviceError(UcxNoMemory(), StatusCode::kResourceExhausted, "UCX", -4,
                    ucs_status_string(UCS_ERR_NO_MEMORY), "UCS_ERR_NO_MEMORY");
  struct Case {
    ucs_status_t rc;
    StatusCode code;
  };
  for (const Case& c :
       {Case{UCS_ERR_UNREACHABLE, StatusCode::kUnavailable},
        Case{UCS_ERR_CANCELED, StatusCode::kCancelled},
        Case{UCS_ERR_TIMED_OUT, StatusCode::kDeadlineExceeded},
        Case{UCS_ERR_REJECTED, StatusCode::kUnavailable},
        Case{UCS_ERR_NOT_CONNECTED, StatusCode::kUnavailable},
        Case{UCS_ERR_CONNECTION_RESET, StatusCode::kUnavailable},
        Case{UCS_ERR_ENDPOINT_TIMEOUT, StatusCode::kDeadlineExceeded},
        Case{UCS_ERR_IO_ERROR, StatusCode::kInternal}}) {
    ExpectDeviceError(UcxStatus(c.rc), c.code, "UCX", static_cast<int>(c.rc),
                      ucs_status_string(c.rc), "rc");
  }
  EXPECT_TRUE(UcxStatus(UCS_OK).ok());
}
#endif  // DUET_TEST_HAVE_UCX

}  // namespace
}  // namespace duet
