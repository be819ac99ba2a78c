// In-process KV transport: the receiver's pool is found by name in a
// registry object and Send is a memcpy per (layer, run of blocks). For tests
// and single-process demos; both pools must be host memory.
//
//   InProcessRegistry registry;
//   auto receiver = MakeInProcessReceiver(registry, "decode0", decode_pool);
//   auto sender = MakeInProcessSender(registry, prefill_pool);
//   KvDescriptor d = *(*receiver)->Describe(request_id, block_ids);
//   sender->Send(d, copies, absl::Seconds(1));
//   (*receiver)->Land(request_id);  // nothing to copy: the pool was written
#ifndef DUET_KV_TRANSFER_IN_PROCESS_H_
#define DUET_KV_TRANSFER_IN_PROCESS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kv_transfer {

// Where in-process receivers are found by name. An explicit object (no global
// state) passed to the factories; receivers and senders share its state, so
// it may be destroyed before them. Thread-safe.
class InProcessRegistry {
 public:
  InProcessRegistry();
  ~InProcessRegistry();
  InProcessRegistry(const InProcessRegistry&) = delete;
  InProcessRegistry& operator=(const InProcessRegistry&) = delete;

  // Whether a receiver is registered under `name` now.
  bool Contains(const std::string& name) const;

  struct State;  // Defined in in_process.cc.

 private:
  friend absl::StatusOr<std::unique_ptr<KvReceiver>> MakeInProcessReceiver(
      InProcessRegistry&, std::string, const KvPoolView&);
  friend std::unique_ptr<KvSender> MakeInProcessSender(InProcessRegistry&,
                                                       const KvPoolView&);
  std::shared_ptr<State> state_;
};

// Registers `pool` under `name` until the receiver is destroyed. The
// destructor waits for Sends that are copying into the pool, so once it
// returns the pool memory is no longer touched. InvalidArgument for an
// invalid or non-host pool, AlreadyExists when `name` is taken.
absl::StatusOr<std::unique_ptr<KvReceiver>> MakeInProcessReceiver(
    InProcessRegistry& registry, std::string name, const KvPoolView& pool);

// A sender from host pool `local` (validated on every Send: an invalid pool
// fails each Send with InvalidArgument). Send returns UNAVAILABLE when no
// receiver is registered under dest.endpoint_name. The copy is synchronous
// and cannot stall, so `timeout` only matters when it is already <= 0
// (DEADLINE_EXCEEDED). Thread-safe; Sends run concurrently.
std::unique_ptr<KvSender> MakeInProcessSender(InProcessRegistry& registry,
                                              const KvPoolView& local);

}  // namespace duet::kv_transfer

#endif  // DUET_KV_TRANSFER_IN_PROCESS_H_
