// duet-decode: a decode node. Loads the model on the chosen backend, owns
// the paged KV pool that prefill nodes write into over UCX, runs continuous
// batched decode in the engine loop, registers with the router and serves
// duet.v1.Node (Reserve, Decode, Release, Stats).
#include <algorithm>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "common/flags.h"
#include "common/logging.h"
#include "decode_node/decode_engine.h"
#include "decode_node/decode_service.h"
#include "kv_transfer/cuda_ipc.h"
#include "kv_transfer/ucx_transport.h"
#include "serving/convert.h"
#include "serving/kv_transports.h"
#include "serving/node_flags.h"
#include "serving/node_main.h"
#include "serving/node_metrics.h"
#include "serving/server_util.h"

ABSL_FLAG(int32_t, reservation_ttl_ms, 60000,
          "free a reservation that gets no Decode call within this time");
ABSL_FLAG(int32_t, max_reservation_ttl_ms, 600000,
          "refuse a Reserve that asks for a longer TTL (INVALID_ARGUMENT)");
ABSL_FLAG(bool, kv_staged, false,
          "receive KV through host staging even into a host pool (tests; a "
          "GPU pool is always staged)");
ABSL_FLAG(int32_t, kv_staging_blocks, 0,
          "staging slots (one block of every layer each, pinned host memory) "
          "for KV received and not yet landed in a GPU pool; 0 = enough for "
          "one prompt of the model's whole context, at least 1024");
ABSL_FLAG(int32_t, release_quarantine_ms, 12000,
          "blocks of a reservation released before decoding are reused only "
          "after this long; keep it above the prefill nodes' "
          "--kv-transfer-timeout-ms, since a transfer under way may still "
          "write them");

ABSL_FLAG(std::string, role, "decode",
          "decode (KV arrives from prefill nodes) or colocated (also runs "
          "whole requests itself, prefill piggybacked on the decodes: one "
          "GPU serves on its own; the router's --policy decides which "
          "requests go where)");
ABSL_FLAG(int32_t, max_colocated_waiting, 256,
          "colocated role: whole requests that may wait for a place in the "
          "batch; more are refused RESOURCE_EXHAUSTED (the router queues "
          "them)");

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
      "[--listen HOST:PORT] [--backend auto|cpu|cuda] [--device N]");
  duet::ParseFlags(argc, argv);
  auto flags = duet::serving::ReadNodeFlags(/*default_max_num_seqs=*/64,
                                            /*default_cpu_blocks=*/4096);
  if (!flags.ok()) return Usage(std::string(flags.status().message()));
  duet::SetLogPrefix("decode", flags->rank);
  duet::decode_node::DecodeEngineOptions options;
  options.max_num_seqs = flags->max_num_seqs;
  options.scheduling = flags->scheduling;
  options.enable_prefix_caching = flags->enable_prefix_caching;
  const std::string role = absl::GetFlag(FLAGS_role);
  if (role != "decode" && role != "colocated") {
    return Usage("--role must be decode or colocated, got '" + role + "'");
  }
  if (role == "colocated") {
    options.max_colocated_waiting = absl::GetFlag(FLAGS_max_colocated_waiting);
    if (options.max_colocated_waiting <= 0) {
      return Usage("--max-colocated-waiting must be > 0");
    }
  }
  options.max_num_batched_tokens = flags->runner.max_num_batched_tokens;
  options.default_reservation_ttl =
      absl::Milliseconds(absl::GetFlag(FLAGS_reservation_ttl_ms));
  options.max_reservation_ttl =
      absl::Milliseconds(absl::GetFlag(FLAGS_max_reservation_ttl_ms));
  if (options.max_reservation_ttl < options.default_reservation_ttl) {
    return Usage("--max-reservation-ttl-ms must be >= --reservation-ttl-ms");
  }
  if (options.max_num_batched_tokens < options.max_num_seqs) {
    // A decode step takes one token of every running request.
    return Usage(
        "--max-num-batched-tokens must be >= --max-num-seqs on a decode node");
  }
  options.release_quarantine =
      absl::Milliseconds(absl::GetFlag(FLAGS_release_quarantine_ms));
  if (absl::GetFlag(FLAGS_reservation_ttl_ms) <= 0 ||
      absl::GetFlag(FLAGS_release_quarantine_ms) < 0 ||
      absl::GetFlag(FLAGS_kv_staging_blocks) < 0) {
    return Usage(
        "--reservation-ttl-ms must be > 0, --release-quarantine-ms and "
        "--kv-staging-blocks >= 0");
  }

  // Metrics (--metrics-port): the loop is read at each scrape, so the
  // engine is looked up through a pointer set once it exists (before the
  // metrics server starts in ServeNode).
  duet::metrics::Registry metrics;
  duet::decode_node::DecodeEngine* engine_for_metrics = nullptr;
  auto node_metrics = duet::serving::NodeMetrics::Create(
      &metrics,
      [&engine_for_metrics] {
        return engine_for_metrics != nullptr ? engine_for_metrics->loop_load()
                                             : duet::runtime::LoopLoad{};
      },
      /*sends_kv=*/false);
  if (!node_metrics.ok()) {
    DUET_LOG(ERROR) << "metrics: " << node_metrics.status();
    return 1;
  }
  options.on_kv_received = [m = node_metrics->get()](int64_t bytes) {
    m->RecordKvReceived(bytes);
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
  ucx.staging_blocks = absl::GetFlag(FLAGS_kv_staging_blocks);
  if (ucx.staging_blocks == 0) {
    ucx.staging_blocks =
        std::max(duet::kv_transfer::kDefaultStagingBlocks,
                 duet::model::BlocksForTokens(
                     (*runner)->config().max_position_embeddings,
                     flags->runner.block_size));
  }
  ucx.staging_quarantine = options.release_quarantine;
  auto transports =
      duet::serving::ResolveKvTransports(flags->kv_transport, **runner);
  if (!transports.ok())
    return Usage(std::string(transports.status().message()));
  std::vector<duet::kv_transfer::KvChannelServer*> kv_channels;
  auto engine = duet::decode_node::DecodeEngine::Create(
      std::move(*runner), options, [&](duet::runtime::ModelRunner& r) {
        return duet::serving::MakeNodeKvReceiver(*transports, r, ucx,
                                                 &kv_channels);
      });
  if (!engine.ok()) {
    DUET_LOG(ERROR) << "starting the decode engine: " << engine.status();
    return 1;
  }
  engine_for_metrics = engine->get();
  const duet::runtime::ModelRunner& r = (*engine)->runner();
  duet::decode_node::DecodeService service(engine->get(), kv_channels);
  duet::v1::RegisterRequest reg;
  reg.set_role(role == "colocated" ? duet::v1::NODE_ROLE_COLOCATED
                                   : duet::v1::NODE_ROLE_DECODE);
  *reg.mutable_kv_layout() = duet::serving::ToProto((*engine)->layout());
  reg.set_total_kv_blocks(r.num_blocks());
  reg.set_max_running_requests(options.max_num_seqs);
  reg.set_max_model_len((*engine)->max_model_len());
  duet::serving::AddKvTransports(*transports, &reg);
  const auto& c = (*engine)->config();
  return duet::serving::ServeNode(
      flags->addresses, &service, std::move(reg),
      [&] { return service.Load(); }, "duet-decode",
      absl::StrFormat("(%s, %d layers, vocab %d)", c.model_type, c.num_layers,
                      c.vocab_size),
      absl::StrFormat(
          "%s%s; %s, batch %d, %s scheduling, KV over %s",
          role == "colocated" ? "colocated (whole requests too), " : "",
          r.backend_description(), r.PoolSummary(), options.max_num_seqs,
          duet::runtime::SchedulingPolicyName(options.scheduling),
          duet::serving::KvTransportsDescription(*transports, r, ucx)),
      &metrics);
}
