// duet-prefill: a prefill node. Loads the model, runs the token-budget
// chunked-prefill scheduler, pushes each chunk's KV blocks into the decode
// node's pool over UCX, registers with the router and serves duet.v1.Node
// Prefill and Stats.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "common/flags.h"
#include "common/logging.h"
#include "kernels/cpu/cpu_backend.h"
#include "kv_transfer/fault_injection.h"
#include "kv_transfer/ucx_transport.h"
#include "prefill_node/prefill_engine.h"
#include "prefill_node/prefill_service.h"
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
ABSL_FLAG(int32_t, max_num_batched_tokens, 2048,
          "prompt tokens per forward pass (chunk budget)");
ABSL_FLAG(int32_t, num_kv_blocks, 1024, "KV cache blocks of this node");
ABSL_FLAG(int32_t, block_size, 16, "tokens per KV block");
ABSL_FLAG(int32_t, kv_transfer_timeout_ms, 10000,
          "fail a request whose KV push takes longer");
ABSL_FLAG(std::string, kv_fault, "",
          "fault injection for tests: '', 'drop:every=N', 'delay:ms=N', "
          "'error:prob=P,seed=S'");
ABSL_FLAG(int32_t, rank, 0, "rank shown in log lines");

namespace {

int Usage(const std::string& msg) {
  std::fprintf(stderr, "duet-prefill: %s\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  duet::serving::BlockShutdownSignals();
  absl::SetProgramUsageMessage(
      "Prefill node. Usage: duet-prefill --model DIR --router HOST:PORT "
      "[--listen HOST:PORT]");
  duet::ParseFlags(argc, argv);
  duet::SetLogPrefix("prefill", absl::GetFlag(FLAGS_rank));
  const duet::serving::NodeAddresses addresses{
      absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_router),
      absl::GetFlag(FLAGS_listen), absl::GetFlag(FLAGS_advertise)};
  if (auto s = duet::serving::ValidateNodeAddresses(addresses); !s.ok()) {
    return Usage(std::string(s.message()));
  }
  duet::prefill_node::PrefillEngineOptions options;
  options.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  options.num_blocks = absl::GetFlag(FLAGS_num_kv_blocks);
  options.block_size = absl::GetFlag(FLAGS_block_size);
  options.transfer_timeout =
      absl::Milliseconds(absl::GetFlag(FLAGS_kv_transfer_timeout_ms));
  if (options.max_num_batched_tokens <= 0 || options.num_blocks <= 0 ||
      options.block_size <= 0 ||
      absl::GetFlag(FLAGS_kv_transfer_timeout_ms) <= 0) {
    return Usage(
        "--max-num-batched-tokens, --num-kv-blocks, --block-size and "
        "--kv-transfer-timeout-ms must be > 0");
  }
  const std::string fault_spec = absl::GetFlag(FLAGS_kv_fault);
  auto fault = duet::kv_transfer::ParseFaultPlan(fault_spec);
  if (!fault.ok()) {
    return Usage("--kv-fault: " + std::string(fault.status().message()));
  }

  auto model = duet::model::Transformer::Load(addresses.model,
                                              duet::kernels::MakeCpuBackend());
  if (!model.ok()) {
    DUET_LOG(ERROR) << "loading " << addresses.model << ": " << model.status();
    return 1;
  }
  auto engine = duet::prefill_node::PrefillEngine::Create(
      std::move(*model), options,
      [&](const duet::kv_transfer::KvPoolView& view)
          -> absl::StatusOr<std::unique_ptr<duet::kv_transfer::KvSender>> {
        auto sender = duet::kv_transfer::MakeUcxSender(view, {});
        if (!sender.ok()) return sender.status();
        return duet::kv_transfer::MakeFaultInjectingSender(std::move(*sender),
                                                           *fault);
      });
  if (!engine.ok()) {
    DUET_LOG(ERROR) << "starting the prefill engine: " << engine.status();
    return 1;
  }
  duet::prefill_node::PrefillService service(engine->get());
  duet::v1::RegisterRequest reg;
  reg.set_role(duet::v1::NODE_ROLE_PREFILL);
  *reg.mutable_kv_layout() = duet::serving::ToProto((*engine)->layout());
  reg.set_total_kv_blocks(options.num_blocks);
  reg.set_max_num_batched_tokens(options.max_num_batched_tokens);
  reg.set_max_model_len((*engine)->max_model_len());
  reg.add_kv_transports(duet::v1::KV_TRANSPORT_UCX);
  const auto& c = (*engine)->config();
  return duet::serving::ServeNode(
      addresses, &service, std::move(reg), [&] { return service.Load(); },
      "duet-prefill",
      absl::StrFormat("(%s, %d layers, vocab %d)", c.model_type, c.num_layers,
                      c.vocab_size),
      absl::StrFormat("%d tokens per pass, %d KV blocks x %d tokens, KV over "
                      "UCX%s",
                      options.max_num_batched_tokens, options.num_blocks,
                      options.block_size,
                      fault_spec.empty()
                          ? ""
                          : " (fault injection: " + fault_spec + ")"));
}
