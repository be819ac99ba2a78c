// One node, several KV transports (--kv-transport auto): a decode node
// describes each request's blocks over the transport the router chose for
// the pair (CUDA IPC when the prefill node shares its host and GPU memory
// can be mapped, UCX otherwise); a prefill node sends over whichever
// transport the descriptor names.
#ifndef DUET_KV_TRANSFER_MULTI_TRANSPORT_H_
#define DUET_KV_TRANSFER_MULTI_TRANSPORT_H_

#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kv_transfer {

// Receivers of one pool, each with its transport; the first is the default
// (Describe). DescribeFor picks by transport; Land, Drop and Discard go to
// the receiver that described the key (which transport wrote the KV is
// known by the key alone). max_blocks_per_request is the smallest of
// theirs. InvalidArgument for none, a null one or a transport listed twice.
absl::StatusOr<std::unique_ptr<KvReceiver>> MakeMultiReceiver(
    std::vector<std::pair<Transport, std::unique_ptr<KvReceiver>>> receivers);

// Senders of one pool, each with its transport: a send goes to the one of
// the descriptor's transport (InvalidArgument naming it when there is
// none). InvalidArgument for none, a null one or a transport listed twice.
absl::StatusOr<std::unique_ptr<KvSender>> MakeMultiSender(
    std::vector<std::pair<Transport, std::unique_ptr<KvSender>>> senders);

}  // namespace duet::kv_transfer

#endif  // DUET_KV_TRANSFER_MULTI_TRANSPORT_H_
