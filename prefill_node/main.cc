// duet-prefill: a prefill node. Loads the model on the chosen backend, runs
// the chunked-prefill engine loop, pushes each chunk's KV blocks into the
// decode node's pool over UCX, registers with the router and serves
// duet.v1.Node Prefill and Stats.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "common/flags.h"
#include "common/logging.h"
#include "kv_transfer/cuda_ipc.h"
#include "kv_transfer/fault_injection.h"
#include "kv_transfer/ucx_transport.h"
#include "prefill_node/prefill_engine.h"
#include "prefill_node/prefill_service.h"
#include "security/tls.h"
#include "serving/convert.h"
#include "serving/kv_channel_rpc.h"
#include "serving/kv_transports.h"
#include "serving/node_flags.h"
#include "serving/node_main.h"
#include "serving/node_metrics.h"
#include "serving/server_util.h"

ABSL_FLAG(int32_t, kv_transfer_timeout_ms, 10000,
          "fail a request whose KV push takes longer");
ABSL_FLAG(std::string, kv_fault, "",
          "fault injection for tests: '', 'drop:every=N', 'delay:ms=N', "
          "'error:prob=P,seed=S'");
ABSL_FLAG(std::string, kv_push, "layer",
          "when KV leaves for the decode node: 'layer' (each layer of each "
          "chunk as soon as the forward pass has written it, overlapping "
          "the rest of the pass), 'chunk' (each chunk after its step) or "
          "'request' (all of it after the last chunk)");
ABSL_FLAG(bool, kv_staged, false,
          "move KV through host staging even from a host pool (tests; a GPU "
          "pool is always staged)");

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
      "[--listen HOST:PORT] [--backend auto|cpu|cuda] [--device N]");
  duet::ParseFlags(argc, argv);
  auto flags = duet::serving::ReadNodeFlags(/*default_max_num_seqs=*/256,
                                            /*default_cpu_blocks=*/1024);
  if (!flags.ok()) return Usage(std::string(flags.status().message()));
  duet::SetLogPrefix("prefill", flags->rank);
  duet::prefill_node::PrefillEngineOptions options;
  options.max_num_batched_tokens = flags->runner.max_num_batched_tokens;
  options.max_num_seqs = flags->max_num_seqs;
  options.scheduling = flags->scheduling;
  options.enable_prefix_caching = flags->enable_prefix_caching;
  options.transfer_timeout =
      absl::Milliseconds(absl::GetFlag(FLAGS_kv_transfer_timeout_ms));
  if (absl::GetFlag(FLAGS_kv_transfer_timeout_ms) <= 0) {
    return Usage("--kv-transfer-timeout-ms must be > 0");
  }
  auto push = duet::prefill_node::ParseKvPush(absl::GetFlag(FLAGS_kv_push));
  if (!push.ok()) return Usage(std::string(push.status().message()));
  options.push = *push;
  const std::string fault_spec = absl::GetFlag(FLAGS_kv_fault);
  auto fault = duet::kv_transfer::ParseFaultPlan(fault_spec);
  if (!fault.ok()) {
    return Usage("--kv-fault: " + std::string(fault.status().message()));
  }

  // Metrics (--metrics-port): the loop is read at each scrape, so the
  // engine is looked up through a pointer set once it exists (before the
  // metrics server starts in ServeNode).
  duet::metrics::Registry metrics;
  duet::prefill_node::PrefillEngine* engine_for_metrics = nullptr;
  auto node_metrics = duet::serving::NodeMetrics::Create(
      &metrics,
      [&engine_for_metrics] {
        return engine_for_metrics != nullptr ? engine_for_metrics->loop_load()
                                             : duet::runtime::LoopLoad{};
      },
      /*sends_kv=*/true);
  if (!node_metrics.ok()) {
    DUET_LOG(ERROR) << "metrics: " << node_metrics.status();
    return 1;
  }
  options.on_transfer =
      [m = node_metrics->get()](
          const duet::kv_transfer::AsyncKvSender::TransferReport& r) {
        m->RecordKvSent(r.bytes, r.elapsed);
      };

  auto runner = duet::serving::MakeNodeRunner(*flags);
  if (!runner.ok()) {
    DUET_LOG(ERROR) << "loading " << flags->addresses.model << ": "
                    << runner.status();
    return 1;
  }
  duet::kv_transfer::UcxOptions ucx;
  ucx.staged = absl::GetFlag(FLAGS_kv_staged);
  auto net_device = duet::serving::UcxNetDeviceFor(flags->addresses.listen);
  if (!net_device.ok())
    return Usage(std::string(net_device.status().message()));
  ucx.net_devices = *net_device;
  auto transports =
      duet::serving::ResolveKvTransports(flags->kv_transport, **runner);
  if (!transports.ok())
    return Usage(std::string(transports.status().message()));
  auto engine = duet::prefill_node::PrefillEngine::Create(
      std::move(*runner), options,
      [&](duet::runtime::ModelRunner& r)
          -> absl::StatusOr<std::unique_ptr<duet::kv_transfer::KvSender>> {
        auto sender = duet::serving::MakeNodeKvSender(
            *transports, r, ucx,
            std::make_shared<duet::serving::GrpcKvChannelClient>(
                duet::security::ChannelCredentials(flags->addresses.tls)));
        if (!sender.ok()) return sender.status();
        return duet::kv_transfer::MakeFaultInjectingSender(std::move(*sender),
                                                           *fault);
      });
  if (!engine.ok()) {
    DUET_LOG(ERROR) << "starting the prefill engine: " << engine.status();
    return 1;
  }
  engine_for_metrics = engine->get();
  const duet::runtime::ModelRunner& r = (*engine)->runner();
  duet::prefill_node::PrefillService service(
      engine->get(), duet::security::ChannelCredentials(flags->addresses.tls));
  duet::v1::RegisterRequest reg;
  reg.set_role(duet::v1::NODE_ROLE_PREFILL);
  *reg.mutable_kv_layout() = duet::serving::ToProto((*engine)->layout());
  reg.set_total_kv_blocks(r.num_blocks());
  reg.set_max_num_batched_tokens(options.max_num_batched_tokens);
  reg.set_max_model_len((*engine)->max_model_len());
  duet::serving::AddKvTransports(*transports, &reg);
  const auto& c = (*engine)->config();
  return duet::serving::ServeNode(
      flags->addresses, &service, std::move(reg),
      [&] { return service.Load(); }, "duet-prefill",
      absl::StrFormat("(%s, %d layers, vocab %d)", c.model_type, c.num_layers,
                      c.vocab_size),
      absl::StrFormat(
          "%s; %d tokens per step, %s, KV pushed per %s over %s%s",
          r.backend_description(), options.max_num_batched_tokens,
          r.PoolSummary(), duet::prefill_node::KvPushName(options.push),
          duet::serving::KvTransportsDescription(*transports, r, ucx),
          fault_spec.empty() ? "" : " (fault injection: " + fault_spec + ")"),
      &metrics);
}
