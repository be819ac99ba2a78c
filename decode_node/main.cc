// duet-decode: a decode node. Loads the model, owns the paged KV pool that
// prefill nodes write into over UCX, registers with the router and serves
// duet.v1.Node (Reserve, Decode, Release, Stats).
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "common/flags.h"
#include "common/logging.h"
#include "decode_node/decode_engine.h"
#include "decode_node/decode_service.h"
#include "kernels/cpu/cpu_backend.h"
#include "kv_transfer/ucx_transport.h"
#include "serving/convert.h"
#include "serving/node_main.h"
#include "serving/server_util.h"
#include "absl/strings/str_format.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (required)");
ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "host:port to serve on (port 0 picks a free port)");
ABSL_FLAG(std::string, advertise, "",
          "host:port other processes use to reach this node (default: the "
          "bound listen address)");
ABSL_FLAG(std::string, router, "", "router host:port (required)");
ABSL_FLAG(int32_t, num_kv_blocks, 4096, "KV cache blocks in the pool");
ABSL_FLAG(int32_t, block_size, 16, "tokens per KV block");
ABSL_FLAG(int32_t, max_batch_size, 64, "running requests per decode step");
ABSL_FLAG(int32_t, reservation_ttl_ms, 60000,
          "free a reservation that gets no Decode call within this time");
ABSL_FLAG(int32_t, rank, 0, "rank shown in log lines");

namespace {

int Usage(const std::string& msg) {
  std::fprintf(stderr, "duet-decode: %s\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  duet::serving::BlockShutdownSignals();
  absl::SetProgramUsageMessage(
      "Decode node. Usage: duet-decode --model DIR --router HOST:PORT "
      "[--listen HOST:PORT]");
  duet::ParseFlags(argc, argv);
  duet::SetLogPrefix("decode", absl::GetFlag(FLAGS_rank));
  const duet::serving::NodeAddresses addresses{
      absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_router),
      absl::GetFlag(FLAGS_listen), absl::GetFlag(FLAGS_advertise)};
  if (auto s = duet::serving::ValidateNodeAddresses(addresses); !s.ok()) {
    return Usage(std::string(s.message()));
  }
  duet::decode_node::DecodeEngineOptions options;
  options.num_blocks = absl::GetFlag(FLAGS_num_kv_blocks);
  options.block_size = absl::GetFlag(FLAGS_block_size);
  options.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  options.default_reservation_ttl =
      absl::Milliseconds(absl::GetFlag(FLAGS_reservation_ttl_ms));
  if (options.num_blocks <= 0 || options.block_size <= 0 ||
      options.max_batch_size <= 0 ||
      absl::GetFlag(FLAGS_reservation_ttl_ms) <= 0) {
    return Usage(
        "--num-kv-blocks, --block-size, --max-batch-size and "
        "--reservation-ttl-ms must be > 0");
  }

  auto model = duet::model::Transformer::Load(addresses.model,
                                              duet::kernels::MakeCpuBackend());
  if (!model.ok()) {
    DUET_LOG(ERROR) << "loading " << addresses.model << ": " << model.status();
    return 1;
  }
  auto engine = duet::decode_node::DecodeEngine::Create(
      std::move(*model), options,
      [](const duet::kv_transfer::KvPoolView& view) {
        return duet::kv_transfer::MakeUcxReceiver(view, {});
      });
  if (!engine.ok()) {
    DUET_LOG(ERROR) << "starting the decode engine: " << engine.status();
    return 1;
  }
  duet::decode_node::DecodeService service(engine->get());
  duet::v1::RegisterRequest reg;
  reg.set_role(duet::v1::NODE_ROLE_DECODE);
  *reg.mutable_kv_layout() = duet::serving::ToProto((*engine)->layout());
  reg.set_total_kv_blocks(options.num_blocks);
  reg.set_max_running_requests(options.max_batch_size);
  reg.set_max_model_len((*engine)->max_model_len());
  reg.add_kv_transports(duet::v1::KV_TRANSPORT_UCX);
  const auto& c = (*engine)->config();
  return duet::serving::ServeNode(
      addresses, &service, std::move(reg), [&] { return service.Load(); },
      "duet-decode",
      absl::StrFormat("(%s, %d layers, vocab %d)", c.model_type, c.num_layers,
                      c.vocab_size),
      absl::StrFormat("%d KV blocks x %d tokens, batch %d, KV over UCX",
                      options.num_blocks, options.block_size,
                      options.max_batch_size));
}
