// A node's side of the registry: registers with the router, then sends a
// heartbeat with its current load every interval the router asked for. When
// the router does not know the node (it restarted, or it dropped the node
// after missed heartbeats) the node registers again. Runs on its own thread.
#ifndef DUET_SERVING_REGISTRY_CLIENT_H_
#define DUET_SERVING_REGISTRY_CLIENT_H_

#include <grpcpp/security/credentials.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "duet/v1/registry.grpc.pb.h"

namespace duet::serving {

class RegistryClient {
 public:
  using LoadFn = std::function<v1::NodeLoad()>;

  // `credentials`: of the channel to the router (null: plaintext).
  RegistryClient(
      std::string router_address, v1::RegisterRequest registration, LoadFn load,
      std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);
  ~RegistryClient();  // stops the thread
  RegistryClient(const RegistryClient&) = delete;
  RegistryClient& operator=(const RegistryClient&) = delete;

  void Start();
  // Blocks until the first successful registration or `timeout`.
  bool WaitRegistered(absl::Duration timeout);
  uint64_t node_id() const { return node_id_.load(); }

 private:
  void Loop();

  const std::string router_address_;
  const v1::RegisterRequest registration_;
  const LoadFn load_;
  std::unique_ptr<v1::Registry::Stub> stub_;
  std::atomic<uint64_t> node_id_{0};
  absl::Notification first_registration_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace duet::serving

#endif  // DUET_SERVING_REGISTRY_CLIENT_H_
