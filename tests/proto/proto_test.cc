// Tests of the duet.v1 wire API: every message a request needs survives a
// serialize/parse round trip with all fields set, and the generated gRPC
// services work over a real channel (no mocks).

#include <arpa/inet.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "duet/v1/client.grpc.pb.h"
#include "duet/v1/client.pb.h"
#include "duet/v1/common.pb.h"
#include "duet/v1/node.grpc.pb.h"
#include "duet/v1/node.pb.h"
#include "duet/v1/registry.grpc.pb.h"
#include "duet/v1/registry.pb.h"

namespace duet::v1 {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using google::protobuf::util::MessageDifferencer;

// Fails for every field of `msg` (recursively) that holds its default value,
// so the fixtures below really exercise every field, including fields added
// later. For a oneof, exactly one member must be set.
void ExpectEveryFieldSet(const Message& msg, const std::string& path) {
  const auto* desc = msg.GetDescriptor();
  const Reflection* refl = msg.GetReflection();
  for (int i = 0; i < desc->oneof_decl_count(); ++i) {
    const auto* oneof = desc->oneof_decl(i);
    if (oneof->is_synthetic()) continue;  // proto3 `optional`
    EXPECT_TRUE(refl->HasOneof(msg, oneof))
        << path << "." << oneof->name() << " (oneof) is not set";
  }
  for (int i = 0; i < desc->field_count(); ++i) {
    const FieldDescriptor* field = desc->field(i);
    const std::string field_path = path + "." + field->name();
    const bool is_message =
        field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
    if (field->is_repeated()) {
      const int n = refl->FieldSize(msg, field);
      EXPECT_GT(n, 0) << field_path << " is empty";
      if (is_message) {
        for (int j = 0; j < n; ++j) {
          ExpectEveryFieldSet(refl->GetRepeatedMessage(msg, field, j),
                              field_path + "[" + std::to_string(j) + "]");
        }
      }
      continue;
    }
    if (field->real_containing_oneof() != nullptr &&
        !refl->HasField(msg, field)) {
      continue;  // another member of the oneof is the set one
    }
    // proto3 scalars without presence: HasField == "differs from default".
    EXPECT_TRUE(refl->HasField(msg, field)) << field_path << " is not set";
    if (is_message && refl->HasField(msg, field)) {
      ExpectEveryFieldSet(refl->GetMessage(msg, field), field_path);
    }
  }
}

template <typename T>
void ExpectRoundTrip(const T& original) {
  SCOPED_TRACE(T::descriptor()->full_name());
  ExpectEveryFieldSet(original, T::descriptor()->name());
  std::string wire;
  ASSERT_TRUE(original.SerializeToString(&wire));
  EXPECT_FALSE(wire.empty());
  T parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  std::string diff;
  MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(original, parsed)) << diff;
}

// ---- Fixtures: every field non-default. ------------------------------------

SamplingParams MakeSamplingParams() {
  SamplingParams p;
  p.set_temperature(0.7f);
  p.set_top_k(40);
  p.set_top_p(0.95f);
  p.set_seed(0x1234'5678'9abc'def0ULL);
  p.set_max_tokens(256);
  p.add_stop_token_ids(151643);
  p.add_stop_token_ids(151645);
  p.set_ignore_eos(true);
  p.add_stop("\n\nUser:");
  p.set_presence_penalty(0.5f);
  p.set_frequency_penalty(-0.25f);
  p.set_repetition_penalty(1.1f);
  p.set_min_p(0.05f);
  p.set_logprobs(true);
  p.set_top_logprobs(5);
  return p;
}

KvLayout MakeKvLayout(uint32_t tp_rank, uint32_t tp_size) {
  KvLayout l;
  l.set_num_layers(36);
  l.set_num_kv_heads(8);
  l.set_head_dim(128);
  l.set_block_size(16);
  l.set_dtype(DTYPE_BF16);
  l.set_tp_rank(tp_rank);
  l.set_tp_size(tp_size);
  return l;
}

Timings MakeTimings() {
  Timings t;
  t.set_queue_ms(0.25);
  t.set_prefill_ms(41.5);
  t.set_transfer_ms(1.75);
  t.set_ttft_ms(44.0);
  t.set_decode_ms(700.0);
  t.set_mean_itl_ms(2.75);
  return t;
}

NodeLoad MakeNodeLoad() {
  NodeLoad load;
  load.set_queued_prefill_tokens(12'345);
  load.set_free_kv_blocks(9000);
  load.set_total_kv_blocks(10'000);
  load.set_running_requests(17);
  load.set_prefix_cache_query_tokens(4096);
  load.set_prefix_cache_hit_tokens(2048);
  return load;
}

TokenLogprobs MakeLogprobs(float lp) {
  TokenLogprobs t;
  t.set_logprob(lp);
  t.add_top_token_ids(7);
  t.add_top_token_ids(9);
  t.add_top_logprobs(-0.25f);
  t.add_top_logprobs(-1.5f);
  return t;
}

GenerationFinished MakeFinished() {
  GenerationFinished f;
  f.set_finish_reason(FINISH_REASON_ERROR);
  f.mutable_usage()->set_prompt_tokens(3);
  f.mutable_usage()->set_completion_tokens(256);
  f.mutable_usage()->set_cached_prompt_tokens(2);
  *f.mutable_timings() = MakeTimings();
  f.set_error_message("decode node lost");
  f.set_matched_stop("\n\nUser:");
  return f;
}

KvTransferDescriptor MakeDescriptor() {
  KvTransferDescriptor d;
  for (int32_t b : {7, 3, 1024}) d.add_block_ids(b);
  *d.mutable_layout() = MakeKvLayout(/*tp_rank=*/1, /*tp_size=*/2);
  d.set_transport(KV_TRANSPORT_UCX);
  for (uint32_t rank = 0; rank < 2; ++rank) {
    KvRankEndpoint* ep = d.add_ranks();
    ep->set_tp_rank(rank + 1);  // non-default on both entries
    ep->set_ucx_worker_address(std::string("\x00\x01ucx-worker\xff", 13));
    ep->add_rkeys(std::string("\x00rkey-layer0", 12));
    ep->add_rkeys("rkey-layer1");
    ep->add_remote_base_addresses(0x7f00'0000'0000ULL);
    ep->add_remote_base_addresses(0x7f00'1000'0000ULL);
    ep->set_channel_pool_id("pool-1");
    ep->set_channel_secret(std::string(16, '\x5a'));
    ep->add_cuda_ipc_handles(std::string(64, '\x01'));
    ep->add_cuda_ipc_handles(std::string(64, '\x02'));
    ep->set_host_id("8f1c2d3e-boot");
    ep->set_gpu_uuid(std::string(16, '\x07'));
  }
  d.set_decode_node_address("10.0.0.2:50052");
  d.set_num_blocks(2048);
  d.set_first_block(3);
  return d;
}

GenerateRequest MakeGenerateRequest() {
  GenerateRequest r;
  r.set_request_id("client-req-42");
  for (int32_t t : {151644, 872, 198, 9707, 0, -1}) r.add_prompt_token_ids(t);
  *r.mutable_sampling() = MakeSamplingParams();
  r.set_prompt("Hello, 世界");
  r.set_return_text(true);
  return r;
}

PrefillRequest MakePrefillRequest() {
  PrefillRequest r;
  r.set_request_id(0xfeed'0000'0001ULL);
  for (int32_t t : {151644, 872, 198, 9707}) r.add_prompt_token_ids(t);
  *r.mutable_sampling() = MakeSamplingParams();
  r.set_decode_node_address("10.0.0.2:50052");
  r.set_reservation_token(std::string("\x01\xff token", 8));
  r.set_deadline_ms(30'000);
  return r;
}

// ---- Round trips. ----------------------------------------------------------

TEST(ProtoRoundTrip, GenerateRequest) {
  ExpectRoundTrip(MakeGenerateRequest());
}

TEST(ProtoRoundTrip, PrefillRequest) { ExpectRoundTrip(MakePrefillRequest()); }

TEST(ProtoRoundTrip, GenerateResponseBothEvents) {
  GenerateResponse chunk;
  chunk.set_request_id("client-req-42");
  for (int32_t t : {11, 12, 13}) {
    chunk.mutable_chunk()->add_token_ids(t);
    *chunk.mutable_chunk()->add_logprobs() = MakeLogprobs(-0.1f * t);
  }
  chunk.mutable_chunk()->set_text(" wor");
  ExpectRoundTrip(chunk);

  GenerateResponse finished;
  finished.set_request_id("client-req-42");
  *finished.mutable_finished() = MakeFinished();
  ExpectRoundTrip(finished);
}

TEST(ProtoRoundTrip, NodeMessages) {
  ReserveRequest reserve;
  reserve.set_request_id(99);
  reserve.set_num_prompt_tokens(4096);
  reserve.set_max_new_tokens(512);
  *reserve.mutable_expected_layout() = MakeKvLayout(1, 2);
  reserve.set_reservation_ttl_ms(5000);
  reserve.set_kv_transport(KV_TRANSPORT_CUDA_IPC);
  reserve.add_prompt_token_ids(9707);
  reserve.add_prompt_token_ids(11);
  ExpectRoundTrip(reserve);

  ReserveResponse reserved;
  reserved.set_reservation_token(std::string("\x01\xff token", 8));
  reserved.set_reserved_blocks(257);
  reserved.set_cached_blocks(12);
  ExpectRoundTrip(reserved);

  DescribeRequest describe;
  describe.set_request_id(99);
  describe.set_reservation_token(std::string("\x01\xff token", 8));
  ExpectRoundTrip(describe);
  DescribeResponse described;
  *described.mutable_kv_transfer() = MakeDescriptor();
  ExpectRoundTrip(described);

  PrefillResponse prefilled;
  prefilled.set_first_token(9707);
  *prefilled.mutable_timings() = MakeTimings();
  *prefilled.mutable_first_token_logprobs() = MakeLogprobs(-0.5f);
  prefilled.set_cached_prompt_tokens(2000);
  ExpectRoundTrip(prefilled);

  DecodeRequest decode;
  decode.set_request_id(99);
  decode.set_first_token(9707);
  *decode.mutable_sampling() = MakeSamplingParams();
  decode.set_deadline_ms(60'000);
  decode.set_reservation_token("token");
  decode.add_prompt_token_ids(9707);
  decode.add_prompt_token_ids(11);
  ExpectRoundTrip(decode);

  DecodeResponse decode_chunk;
  decode_chunk.mutable_chunk()->add_token_ids(5);
  *decode_chunk.mutable_chunk()->add_logprobs() = MakeLogprobs(-2.0f);
  decode_chunk.mutable_chunk()->set_text("x");
  *decode_chunk.mutable_timings() = MakeTimings();  // a colocated first chunk
  ExpectRoundTrip(decode_chunk);
  DecodeResponse decode_done;
  *decode_done.mutable_finished() = MakeFinished();
  *decode_done.mutable_timings() = MakeTimings();
  ExpectRoundTrip(decode_done);

  ReleaseRequest release;
  release.set_request_id(99);
  release.set_reason(RELEASE_REASON_CANCELLED);
  release.set_reservation_token("token");
  ExpectRoundTrip(release);
  ReleaseResponse released;
  released.set_released(true);
  ExpectRoundTrip(released);

  StatsResponse stats;
  *stats.mutable_load() = MakeNodeLoad();
  *stats.mutable_layout() = MakeKvLayout(1, 4);
  ExpectRoundTrip(stats);
}

TEST(ProtoRoundTrip, ClientAndRegistryMessages) {
  HealthResponse health;
  health.set_serving(true);
  health.set_num_prefill_nodes(2);
  health.set_num_decode_nodes(3);
  health.set_num_colocated_nodes(2);
  health.set_model_name("Qwen/Qwen3-4B");
  health.mutable_routing()->set_mode("prefix-aware");
  health.mutable_routing()->set_prompt_tokens(10000);
  health.mutable_routing()->set_predicted_cached_tokens(6000);
  health.mutable_routing()->set_prefill_cached_tokens(5900);
  health.mutable_routing()->set_decode_cached_tokens(5000);
  ExpectRoundTrip(health);

  ListNodesRequest list;
  list.set_role(NODE_ROLE_DECODE);
  ExpectRoundTrip(list);

  ListNodesResponse nodes;
  NodeInfo* info = nodes.add_nodes();
  info->set_node_id(5);
  info->set_role(NODE_ROLE_PREFILL);
  info->set_address("10.0.0.1:50051");
  info->set_model_name("Qwen/Qwen3-4B");
  *info->mutable_kv_layout() = MakeKvLayout(1, 2);
  *info->mutable_load() = MakeNodeLoad();
  info->set_ms_since_heartbeat(120);
  ExpectRoundTrip(nodes);

  RegisterRequest reg;
  reg.set_role(NODE_ROLE_DECODE);
  reg.set_address("10.0.0.2:50052");
  *reg.mutable_kv_layout() = MakeKvLayout(1, 2);
  reg.set_model_name("Qwen/Qwen3-4B");
  reg.set_total_kv_blocks(10'000);
  reg.set_max_num_batched_tokens(8192);
  reg.set_max_running_requests(256);
  reg.set_max_model_len(40'960);
  reg.add_kv_transports(KV_TRANSPORT_NCCL);
  reg.add_kv_transports(KV_TRANSPORT_CUDA_IPC);
  reg.set_host_id("0f3c9d2e-boot-id");
  ExpectRoundTrip(reg);

  RegisterResponse registered;
  registered.set_node_id(5);
  registered.set_heartbeat_interval_ms(1000);
  ExpectRoundTrip(registered);

  HeartbeatRequest beat;
  beat.set_node_id(5);
  *beat.mutable_load() = MakeNodeLoad();
  ExpectRoundTrip(beat);
  HeartbeatResponse known;
  known.set_known(true);
  ExpectRoundTrip(known);
}

// The round-trip check is not vacuous: a changed field is a difference.
TEST(ProtoRoundTrip, DifferencerSeesChangedField) {
  DescribeResponse a;
  *a.mutable_kv_transfer() = MakeDescriptor();
  DescribeResponse b = a;
  b.mutable_kv_transfer()->mutable_ranks(1)->set_rkeys(0, "other");
  EXPECT_FALSE(MessageDifferencer::Equals(a, b));
}

// proto3 defaults are what the documented "unset" semantics rely on.
TEST(ProtoDefaults, UnsetSamplingParams) {
  SamplingParams p;
  EXPECT_EQ(p.temperature(), 0.0f);  // greedy
  EXPECT_EQ(p.top_k(), 0);           // off
  EXPECT_EQ(p.top_p(), 0.0f);        // read as 1.0
  EXPECT_FALSE(p.has_seed());        // node picks
  EXPECT_EQ(p.max_tokens(), 0);      // invalid: must be > 0
  EXPECT_EQ(p.ByteSizeLong(), 0u);
  p.set_seed(0);  // an explicit 0 seed is distinguishable from unset
  EXPECT_TRUE(p.has_seed());
  SamplingParams parsed;
  ASSERT_TRUE(parsed.ParseFromString(p.SerializeAsString()));
  EXPECT_TRUE(parsed.has_seed());
}

// ---- Real gRPC. -------------------------------------------------------------

// A TCP port on 127.0.0.1 that refuses connections: bound (so nobody else
// takes it) but never listening.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (fd_ >= 0 &&
        ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      socklen_t len = sizeof(addr);
      if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
        port_ = ntohs(addr.sin_port);
      }
    }
  }
  ~ClosedPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  ClosedPort(const ClosedPort&) = delete;
  ClosedPort& operator=(const ClosedPort&) = delete;

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

void SetDeadline(grpc::ClientContext& ctx, std::chrono::milliseconds d) {
  ctx.set_deadline(std::chrono::system_clock::now() + d);
}

void ExpectUnreachable(const grpc::Status& status) {
  EXPECT_TRUE(status.error_code() == grpc::StatusCode::UNAVAILABLE ||
              status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
      << "code " << status.error_code() << ": " << status.error_message();
}

TEST(ProtoGrpc, StubsFailCleanlyAgainstClosedPort) {
  ClosedPort closed;
  ASSERT_GT(closed.port(), 0);
  auto channel =
      grpc::CreateChannel(closed.address(), grpc::InsecureChannelCredentials());

  {
    std::unique_ptr<Node::Stub> node = Node::NewStub(channel);
    grpc::ClientContext ctx;
    SetDeadline(ctx, std::chrono::milliseconds(200));
    StatsResponse resp;
    ExpectUnreachable(node->Stats(&ctx, StatsRequest(), &resp));
  }
  {
    std::unique_ptr<Node::Stub> node = Node::NewStub(channel);
    grpc::ClientContext ctx;
    SetDeadline(ctx, std::chrono::milliseconds(200));
    PrefillResponse resp;
    ExpectUnreachable(node->Prefill(&ctx, MakePrefillRequest(), &resp));
  }
  {
    std::unique_ptr<Registry::Stub> registry = Registry::NewStub(channel);
    grpc::ClientContext ctx;
    SetDeadline(ctx, std::chrono::milliseconds(200));
    HeartbeatRequest req;
    req.set_node_id(1);
    HeartbeatResponse resp;
    ExpectUnreachable(registry->Heartbeat(&ctx, req, &resp));
  }
  {
    std::unique_ptr<Duet::Stub> duet = Duet::NewStub(channel);
    grpc::ClientContext ctx;
    SetDeadline(ctx, std::chrono::milliseconds(200));
    auto reader = duet->Generate(&ctx, MakeGenerateRequest());
    GenerateResponse resp;
    EXPECT_FALSE(reader->Read(&resp));
    ExpectUnreachable(reader->Finish());
  }
}

// Minimal in-process services: enough to see requests and streams cross a
// real HTTP/2 connection intact.
class FakeDuet final : public Duet::Service {
 public:
  grpc::Status Generate(grpc::ServerContext*, const GenerateRequest* req,
                        grpc::ServerWriter<GenerateResponse>* writer) override {
    last_request_ = *req;
    GenerateResponse msg;
    msg.set_request_id(req->request_id());
    msg.mutable_chunk()->add_token_ids(100);
    writer->Write(msg);
    msg.mutable_chunk()->clear_token_ids();
    msg.mutable_chunk()->add_token_ids(101);
    msg.mutable_chunk()->add_token_ids(102);
    writer->Write(msg);
    *msg.mutable_finished() = MakeFinished();
    writer->Write(msg);
    return grpc::Status::OK;
  }
  GenerateRequest last_request_;
};

class FakeNode final : public Node::Service {
 public:
  grpc::Status Prefill(grpc::ServerContext*, const PrefillRequest* req,
                       PrefillResponse* resp) override {
    last_request_ = *req;
    resp->set_first_token(req->prompt_token_ids(0) + 1);
    *resp->mutable_timings() = MakeTimings();
    return grpc::Status::OK;
  }
  PrefillRequest last_request_;
};

TEST(ProtoGrpc, RequestsCrossARealServer) {
  FakeDuet duet_service;
  FakeNode node_service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&duet_service);
  builder.RegisterService(&node_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                     grpc::InsecureChannelCredentials());

  // Unary call with the full PrefillRequest.
  {
    auto node = Node::NewStub(channel);
    grpc::ClientContext ctx;
    SetDeadline(ctx, std::chrono::seconds(10));
    const PrefillRequest req = MakePrefillRequest();
    PrefillResponse resp;
    grpc::Status status = node->Prefill(&ctx, req, &resp);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(MessageDifferencer::Equals(node_service.last_request_, req));
    EXPECT_EQ(resp.first_token(), req.prompt_token_ids(0) + 1);
    EXPECT_TRUE(MessageDifferencer::Equals(resp.timings(), MakeTimings()));

    // A service the server does not implement answers UNIMPLEMENTED.
    grpc::ClientContext ctx2;
    SetDeadline(ctx2, std::chrono::seconds(10));
    StatsResponse stats;
    EXPECT_EQ(node->Stats(&ctx2, StatsRequest(), &stats).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }

  // Server stream: chunks then one finished message.
  {
    auto duet = Duet::NewStub(channel);
    grpc::ClientContext ctx;
    SetDeadline(ctx, std::chrono::seconds(10));
    const GenerateRequest req = MakeGenerateRequest();
    auto reader = duet->Generate(&ctx, req);
    std::vector<int32_t> tokens;
    std::vector<GenerateResponse> finished;
    GenerateResponse msg;
    while (reader->Read(&msg)) {
      EXPECT_EQ(msg.request_id(), req.request_id());
      if (msg.has_chunk()) {
        tokens.insert(tokens.end(), msg.chunk().token_ids().begin(),
                      msg.chunk().token_ids().end());
      } else {
        ASSERT_TRUE(msg.has_finished());
        finished.push_back(msg);
      }
    }
    grpc::Status status = reader->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(MessageDifferencer::Equals(duet_service.last_request_, req));
    EXPECT_EQ(tokens, (std::vector<int32_t>{100, 101, 102}));
    ASSERT_EQ(finished.size(), 1u);
    EXPECT_TRUE(
        MessageDifferencer::Equals(finished[0].finished(), MakeFinished()));
  }

  server->Shutdown();
}

}  // namespace
}  // namespace duet::v1
