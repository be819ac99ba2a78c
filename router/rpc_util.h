// Small helpers for the router's outgoing calls, shared by
// router_service.cc and relay.cc (internal to router/).
#ifndef DUET_ROUTER_RPC_UTIL_H_
#define DUET_ROUTER_RPC_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace duet::router::internal {

inline grpc::Status Error(grpc::StatusCode code, const std::string& msg) {
  return grpc::Status(code, msg);
}

inline void SetDeadline(grpc::ClientContext& ctx, absl::Time deadline) {
  ctx.set_deadline(absl::ToChronoTime(deadline));
}

// Milliseconds left until `deadline`, at least 1 (a relative deadline of 0
// would mean "none" to the nodes).
inline uint32_t MsUntil(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return static_cast<uint32_t>(std::clamp<int64_t>(ms, 1, UINT32_MAX));
}

}  // namespace duet::router::internal

#endif  // DUET_ROUTER_RPC_UTIL_H_
