#include "client/client.h"

#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "duet/v1/client.grpc.pb.h"

namespace duet::client {
namespace {

// gRPC and absl share the canonical status codes (same names, same numbers),
// so the conversion is a cast; this is the only place it happens.
absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

std::chrono::system_clock::time_point DeadlineAfter(absl::Duration timeout) {
  // gRPC deadlines are wall-clock points; steady_clock is only for measuring.
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout);
}

// Drops the enum's type prefix: FINISH_REASON_MAX_TOKENS -> MAX_TOKENS.
std::string StripPrefix(const std::string& name, absl::string_view prefix) {
  if (name.rfind(std::string(prefix), 0) == 0)
    return name.substr(prefix.size());
  return name;
}

}  // namespace

double MsBetween(SteadyTime from, SteadyTime to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const std::string& tls_ca_pem) {
  grpc::ChannelArguments args;
  // Token streams are small; a large limit only matters for ListNodes on a
  // big cluster, where the default 4 MiB could be reached by long tables.
  args.SetMaxReceiveMessageSize(64 << 20);
  std::shared_ptr<grpc::ChannelCredentials> creds =
      grpc::InsecureChannelCredentials();
  if (!tls_ca_pem.empty()) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = tls_ca_pem;
    creds = grpc::SslCredentials(o);
  }
  return grpc::CreateCustomChannel(address, creds, args);
}

struct DuetClient::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Duet::Stub> stub;
};

DuetClient::DuetClient(std::unique_ptr<Impl> impl, std::string address)
    : impl_(std::move(impl)), address_(std::move(address)) {}

DuetClient::~DuetClient() = default;

absl::StatusOr<std::unique_ptr<DuetClient>> DuetClient::Create(
    const std::string& address, const ConnectOptions& options) {
  if (address.empty()) {
    return absl::InvalidArgumentError("router address is empty");
  }
  std::unique_ptr<DuetClient> c =
      FromChannel(MakeChannel(address, options.tls_ca_pem), address);
  c->api_key_ = options.api_key;
  return c;
}

void DuetClient::Authorize(grpc::ClientContext& context) const {
  if (!api_key_.empty()) {
    context.AddMetadata("authorization", "Bearer " + api_key_);
  }
}

std::unique_ptr<DuetClient> DuetClient::FromChannel(
    std::shared_ptr<grpc::Channel> channel, std::string address) {
  auto impl = std::make_unique<Impl>();
  impl->stub = v1::Duet::NewStub(channel);
  impl->channel = std::move(channel);
  return std::unique_ptr<DuetClient>(
      new DuetClient(std::move(impl), std::move(address)));
}

absl::Status DuetClient::WaitForConnected(absl::Duration timeout) {
  if (impl_->channel->WaitForConnected(DeadlineAfter(timeout))) {
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError(
      absl::StrCat("could not connect to ", address_, " within ",
                   absl::FormatDuration(timeout)));
}

GenerateResult DuetClient::Generate(const v1::GenerateRequest& request,
                                    const GenerateOptions& options,
                                    const ChunkCallback& on_chunk) {
  GenerateResult result;
  if (options.timeout <= absl::ZeroDuration()) {
    result.status = absl::InvalidArgumentError("Generate timeout must be > 0");
    return result;
  }
  grpc::ClientContext context;
  Authorize(context);
  context.set_deadline(DeadlineAfter(options.timeout));
  context.set_wait_for_ready(options.wait_for_ready);

  result.start = std::chrono::steady_clock::now();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      impl_->stub->Generate(&context, request);
  v1::GenerateResponse response;
  SteadyTime last_chunk;
  bool keep_calling = static_cast<bool>(on_chunk);
  while (reader->Read(&response)) {
    // Timestamp first: everything after this line is our own overhead.
    const SteadyTime now = std::chrono::steady_clock::now();
    if (result.request_id.empty()) result.request_id = response.request_id();
    if (response.has_finished()) {
      const v1::GenerationFinished& f = response.finished();
      result.got_finished = true;
      result.finish_reason = f.finish_reason();
      result.usage = f.usage();
      result.server_timings = f.timings();
      result.matched_stop = f.matched_stop();
      if (f.finish_reason() == v1::FINISH_REASON_ERROR) {
        result.status = absl::InternalError(
            absl::StrCat("server reported an error: ", f.error_message()));
      }
      continue;
    }
    if (!response.has_chunk()) continue;
    const auto& ids = response.chunk().token_ids();
    const std::string& text = response.chunk().text();
    result.text += text;
    if (ids.empty()) {
      // A text-only chunk (the detokenizer's held-back tail at the end):
      // no token timing, but the caller still sees the text.
      if (keep_calling && !text.empty()) {
        ChunkEvent event;
        event.text = text;
        event.tokens_before = result.tokens.size();
        event.arrival = now;
        event.ms_since_start = MsBetween(result.start, now);
        keep_calling = on_chunk(event);
        if (!keep_calling) context.TryCancel();
      }
      continue;
    }
    if (result.num_chunks == 0) {
      result.ttft_ms = MsBetween(result.start, now);
    } else {
      result.itl_ms.push_back(MsBetween(last_chunk, now));
    }
    last_chunk = now;
    ++result.num_chunks;
    const size_t before = result.tokens.size();
    result.tokens.insert(result.tokens.end(), ids.begin(), ids.end());
    if (keep_calling) {
      ChunkEvent event;
      event.token_ids = absl::MakeConstSpan(ids.data(), ids.size());
      event.text = text;
      event.tokens_before = before;
      event.arrival = now;
      event.ms_since_start = MsBetween(result.start, now);
      if (!on_chunk(event)) {
        keep_calling = false;
        // Read then drains and Finish reports CANCELLED.
        context.TryCancel();
      }
    }
  }
  const grpc::Status status = reader->Finish();
  result.e2e_ms = MsBetween(result.start, std::chrono::steady_clock::now());
  if (!status.ok()) {
    result.status = FromGrpc(status);
  } else if (!result.got_finished) {
    result.status = absl::DataLossError(
        "Generate stream ended OK without a GenerationFinished message");
  }
  return result;
}

absl::StatusOr<v1::HealthResponse> DuetClient::Health(absl::Duration timeout) {
  grpc::ClientContext context;
  Authorize(context);
  context.set_deadline(DeadlineAfter(timeout));
  v1::HealthResponse response;
  const grpc::Status status =
      impl_->stub->Health(&context, v1::HealthRequest(), &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

absl::StatusOr<v1::ListNodesResponse> DuetClient::ListNodes(
    v1::NodeRole role, absl::Duration timeout) {
  grpc::ClientContext context;
  Authorize(context);
  context.set_deadline(DeadlineAfter(timeout));
  v1::ListNodesRequest request;
  request.set_role(role);
  v1::ListNodesResponse response;
  const grpc::Status status =
      impl_->stub->ListNodes(&context, request, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

std::string FinishReasonName(v1::FinishReason reason) {
  return StripPrefix(v1::FinishReason_Name(reason), "FINISH_REASON_");
}

std::string NodeRoleName(v1::NodeRole role) {
  return StripPrefix(v1::NodeRole_Name(role), "NODE_ROLE_");
}

}  // namespace duet::client
