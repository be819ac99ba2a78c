#include "serving/registry_client.h"

#include <grpcpp/grpcpp.h>

#include "common/logging.h"

namespace duet::serving {
namespace {

constexpr absl::Duration kRpcTimeout = absl::Seconds(2);
constexpr absl::Duration kRetryInterval = absl::Milliseconds(300);

void SetDeadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
}

}  // namespace

RegistryClient::RegistryClient(
    std::string router_address, v1::RegisterRequest registration, LoadFn load,
    std::shared_ptr<grpc::ChannelCredentials> credentials)
    : router_address_(std::move(router_address)),
      registration_(std::move(registration)),
      load_(std::move(load)),
      stub_(v1::Registry::NewStub(grpc::CreateChannel(
          router_address_, credentials != nullptr
                               ? std::move(credentials)
                               : grpc::InsecureChannelCredentials()))) {}

RegistryClient::~RegistryClient() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void RegistryClient::Start() {
  thread_ = std::thread([this] { Loop(); });
}

bool RegistryClient::WaitRegistered(absl::Duration timeout) {
  return first_registration_.WaitForNotificationWithTimeout(timeout);
}

void RegistryClient::Loop() {
  absl::Duration interval = kRetryInterval;
  bool registered = false;
  int failures = 0;
  while (true) {
    if (!registered) {
      grpc::ClientContext ctx;
      SetDeadline(ctx);
      v1::RegisterResponse reply;
      const grpc::Status s = stub_->Register(&ctx, registration_, &reply);
      if (s.ok()) {
        registered = true;
        failures = 0;
        node_id_.store(reply.node_id());
        interval = absl::Milliseconds(
            std::max<uint32_t>(reply.heartbeat_interval_ms(), 10));
        DUET_LOG(INFO) << "registered with router " << router_address_
                       << " as node " << reply.node_id();
        if (!first_registration_.HasBeenNotified()) {
          first_registration_.Notify();
        }
      } else if (failures++ % 20 == 0) {
        DUET_LOG(WARNING) << "cannot register with router " << router_address_
                          << ": " << s.error_message() << " (retrying)";
      }
    } else {
      v1::HeartbeatRequest req;
      req.set_node_id(node_id_.load());
      *req.mutable_load() = load_();
      grpc::ClientContext ctx;
      SetDeadline(ctx);
      v1::HeartbeatResponse reply;
      const grpc::Status s = stub_->Heartbeat(&ctx, req, &reply);
      if (s.ok() && !reply.known()) {
        DUET_LOG(WARNING) << "router no longer knows node " << node_id_.load()
                          << "; registering again";
        registered = false;
        continue;
      }
      if (!s.ok() && failures++ % 20 == 0) {
        DUET_LOG(WARNING) << "heartbeat to " << router_address_
                          << " failed: " << s.error_message();
      } else if (s.ok()) {
        failures = 0;
      }
    }
    if (stop_.WaitForNotificationWithTimeout(registered ? interval
                                                        : kRetryInterval)) {
      return;
    }
  }
}

}  // namespace duet::serving
