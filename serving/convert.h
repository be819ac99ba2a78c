// Conversions at the gRPC edge: duet.v1 messages <-> the C++ types the
// engine and kv_transfer use, and grpc::Status <-> absl::Status. Everything
// that a peer sends is validated here or by the callee, never trusted.
#ifndef DUET_SERVING_CONVERT_H_
#define DUET_SERVING_CONVERT_H_

#include <grpcpp/support/status.h>

#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "duet/v1/common.pb.h"
#include "duet/v1/node.pb.h"
#include "kv_transfer/kv_transfer.h"
#include "model/sampler.h"

namespace duet::serving {

grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

v1::KvLayout ToProto(const kv_transfer::KvLayout& layout);
absl::StatusOr<kv_transfer::KvLayout> FromProto(const v1::KvLayout& layout);

v1::KvTransferDescriptor ToProto(const kv_transfer::KvDescriptor& desc);
// InvalidArgument when the descriptor is malformed (unknown transport, no
// rank endpoint, rkeys/bases not one per layer, num_blocks <= 0 or a block
// id outside [0, num_blocks)).
absl::StatusOr<kv_transfer::KvDescriptor> FromProto(
    const v1::KvTransferDescriptor& desc);

v1::KvTransport ToProto(kv_transfer::Transport transport);
// The transport a Reserve asks for: nullopt for UNSPECIFIED (the node's
// default), InvalidArgument for NCCL or an unknown value.
absl::StatusOr<std::optional<kv_transfer::Transport>> FromProto(
    v1::KvTransport transport);

// Proto sampling params -> engine params. top_p and repetition_penalty 0
// (unset in proto3) mean 1.0; an unset seed must have been filled in by the
// router (InvalidArgument otherwise, so prefill and decode can never
// disagree on it). The penalties, min_p and logprobs fields are range
// checked here (InvalidArgument naming the field and range), the rest by
// the engine (model::ValidateSamplingParams, which knows the vocabulary).
absl::StatusOr<model::SamplingParams> FromProto(const v1::SamplingParams& p);

// A token's logprobs on the wire (only num_top of the top entries).
v1::TokenLogprobs ToProto(const kernels::TokenLogprobs& logprobs);
// InvalidArgument for more than kMaxTopLogprobs top entries or top lists of
// different lengths.
absl::StatusOr<kernels::TokenLogprobs> FromProto(const v1::TokenLogprobs& p);

}  // namespace duet::serving

#endif  // DUET_SERVING_CONVERT_H_
