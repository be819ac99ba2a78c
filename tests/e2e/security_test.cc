// Security of a running cluster (issue 22), against real processes: mutual
// TLS between roles, API keys for clients. Each attack gets its expected
// status, and the cluster keeps serving with every block free.
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "duet/v1/registry.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/local_cluster.h"
#include "tests/testing/scratch.h"
#include "tests/testing/test_model.h"

namespace duet::testing {
namespace {

using ::testing::HasSubstr;

ClusterOptions Tiny() {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.prefill_args = {"--num-kv-blocks", "64"};
  o.decode_args = {"--num-kv-blocks", "64", "--release-quarantine-ms", "500"};
  return o;
}

// TLS that trusts the test CA but presents no certificate (a client).
std::shared_ptr<grpc::ChannelCredentials> NoCertificate() {
  return TestCredentials(/*member=*/false);
}

// A certificate of another CA (an outsider's own PKI).
std::shared_ptr<grpc::ChannelCredentials> ForeignCertificate() {
  static const std::string dir = [] {
    const std::string d =
        absl::StrCat(::duet::testing::ScratchDir(), "/duet_foreign_", getpid());
    std::string script =
        std::string(DUET_SOURCE_DIR) + "/scripts/make_certs.sh";
    EXPECT_EQ(
        std::system(absl::StrCat(script, " ", d, " x >/dev/null").c_str()), 0);
    return d;
  }();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs =
      ReadWholeFile(CertDir() + "/ca.pem");  // trusts the real router
  o.pem_cert_chain = ReadWholeFile(dir + "/x.pem");
  o.pem_private_key = ReadWholeFile(dir + "/x-key.pem");
  return grpc::SslCredentials(o);
}

v1::GenerateRequest Request(int max_tokens) {
  v1::GenerateRequest r;
  for (int i = 1; i <= 12; ++i) r.add_prompt_token_ids(100 + i);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_ignore_eos(true);
  return r;
}

grpc::Status Generate(v1::Duet::Stub& stub, const std::string& api_key,
                      int* tokens) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  if (!api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + api_key);
  auto reader = stub.Generate(&ctx, Request(4));
  v1::GenerateResponse msg;
  *tokens = 0;
  while (reader->Read(&msg)) {
    if (msg.has_chunk()) *tokens += msg.chunk().token_ids_size();
  }
  return reader->Finish();
}

v1::RegisterRequest Impostor() {
  v1::RegisterRequest r;
  r.set_role(v1::NODE_ROLE_DECODE);
  r.set_address("127.0.0.1:1");
  r.set_model_name("made-up");
  r.mutable_kv_layout()->set_num_layers(2);
  r.mutable_kv_layout()->set_num_kv_heads(2);
  r.mutable_kv_layout()->set_head_dim(16);
  r.mutable_kv_layout()->set_block_size(16);
  r.mutable_kv_layout()->set_tp_size(1);
  r.set_total_kv_blocks(1 << 20);
  r.set_max_model_len(4096);
  return r;
}

TEST(SecurityTest, OnlyMembersRegisterOrCallNodes) {
  auto cluster = LocalCluster::Start(Tiny());
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;

  // Register without a certificate: UNAUTHENTICATED, nothing registered.
  auto no_cert = v1::Registry::NewStub(
      grpc::CreateChannel(c.router_address(), NoCertificate()));
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::RegisterResponse reply;
    const grpc::Status s = no_cert->Register(&ctx, Impostor(), &reply);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("certificate"));
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::HeartbeatRequest hb;
    hb.set_node_id(1);
    v1::HeartbeatResponse reply;
    EXPECT_EQ(no_cert->Heartbeat(&ctx, hb, &reply).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // A certificate of another CA fails the handshake.
  auto foreign = v1::Registry::NewStub(
      grpc::CreateChannel(c.router_address(), ForeignCertificate()));
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::RegisterResponse reply;
    EXPECT_EQ(foreign->Register(&ctx, Impostor(), &reply).error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }
  // Plaintext to a TLS port fails too.
  auto plain = v1::Registry::NewStub(grpc::CreateChannel(
      c.router_address(), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::RegisterResponse reply;
    EXPECT_NE(plain->Register(&ctx, Impostor(), &reply).error_code(),
              grpc::StatusCode::OK);
  }

  // A node's port takes no caller without a member's certificate: the
  // forged Reserve / Prefill / Release of the issue never reach a handler.
  for (Process* node : {&c.prefill(0), &c.decode(0)}) {
    for (const auto& creds : {NoCertificate(), ForeignCertificate(),
                              grpc::InsecureChannelCredentials()}) {
      auto stub =
          v1::Node::NewStub(grpc::CreateChannel(node->address(), creds));
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
      v1::ReleaseRequest release;
      release.set_request_id(1);
      v1::ReleaseResponse reply;
      EXPECT_EQ(stub->Release(&ctx, release, &reply).error_code(),
                grpc::StatusCode::UNAVAILABLE)
          << node->address();
    }
  }
  // The router still counts only the real nodes, and serves (a client
  // needs no certificate, only the CA to check the router).
  grpc::ClientContext ctx;
  v1::HealthResponse health;
  ASSERT_TRUE(c.client().Health(&ctx, v1::HealthRequest(), &health).ok());
  EXPECT_EQ(health.num_decode_nodes(), 1u);
  int tokens = 0;
  const grpc::Status s = Generate(c.client(), "", &tokens);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(tokens, 4);
  EXPECT_TRUE(c.WaitAllBlocksFree(absl::Seconds(5)).ok());
}

// A reservation is a capability: Decode and Release must present the
// token Reserve returned, even from a member.
TEST(SecurityTest, ReservationTokenGuardsDecodeAndRelease) {
  auto cluster = LocalCluster::Start(Tiny());
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;
  auto decode = v1::Node::NewStub(
      grpc::CreateChannel(c.decode(0).address(), c.MemberCredentials()));
  v1::ReserveRequest reserve;
  reserve.set_request_id(424242);
  reserve.set_num_prompt_tokens(20);
  reserve.set_max_new_tokens(4);
  v1::StatsResponse stats;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(decode->Stats(&ctx, v1::StatsRequest(), &stats).ok());
  }
  *reserve.mutable_expected_layout() = stats.layout();
  v1::ReserveResponse reserved;
  {
    grpc::ClientContext ctx;
    const grpc::Status s = decode->Reserve(&ctx, reserve, &reserved);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(reserved.reservation_token().size(), 16u);
  // Someone else's guess: refused, the reservation stays.
  for (const std::string& guess : {std::string(), std::string(16, 'x')}) {
    v1::ReleaseRequest release;
    release.set_request_id(424242);
    release.set_reservation_token(guess);
    v1::ReleaseResponse reply;
    grpc::ClientContext ctx;
    EXPECT_EQ(decode->Release(&ctx, release, &reply).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    v1::DecodeRequest d;
    d.set_request_id(424242);
    d.set_reservation_token("wrong");
    grpc::ClientContext ctx;
    auto reader = decode->Decode(&ctx, d);
    v1::DecodeResponse msg;
    while (reader->Read(&msg)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  v1::ReleaseRequest release;
  release.set_request_id(424242);
  release.set_reservation_token(reserved.reservation_token());
  v1::ReleaseResponse reply;
  grpc::ClientContext ctx;
  ASSERT_TRUE(decode->Release(&ctx, release, &reply).ok());
  EXPECT_TRUE(reply.released());
  EXPECT_TRUE(c.WaitAllBlocksFree(absl::Seconds(5)).ok());
}

// Where a prefill node writes KV comes only from the decode node that holds
// the reservation (Describe, with its token): a Prefill call, even from a
// member, cannot aim the writes at another request's blocks, nor name an
// address. The reservation's own Prefill + Decode still equals the router's
// output for the same prompt.
TEST(SecurityTest, PrefillWritesOnlyWhereTheReservationSays) {
  auto cluster = LocalCluster::Start(Tiny());
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;
  v1::GenerateRequest request = Request(6);
  request.mutable_sampling()->set_seed(7);  // nodes take only seeded params
  std::vector<int32_t> expected;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    auto reader = c.client().Generate(&ctx, request);
    v1::GenerateResponse msg;
    while (reader->Read(&msg)) {
      if (msg.has_chunk()) {
        expected.insert(expected.end(), msg.chunk().token_ids().begin(),
                        msg.chunk().token_ids().end());
      }
    }
    ASSERT_TRUE(reader->Finish().ok());
  }
  ASSERT_EQ(expected.size(), 6u);

  auto decode = v1::Node::NewStub(
      grpc::CreateChannel(c.decode(0).address(), c.MemberCredentials()));
  auto prefill = v1::Node::NewStub(
      grpc::CreateChannel(c.prefill(0).address(), c.MemberCredentials()));
  v1::StatsResponse stats;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(decode->Stats(&ctx, v1::StatsRequest(), &stats).ok());
  }
  constexpr uint64_t kId = 515151;
  v1::ReserveRequest reserve;
  reserve.set_request_id(kId);
  reserve.set_num_prompt_tokens(request.prompt_token_ids_size());
  reserve.set_max_new_tokens(6);
  *reserve.mutable_expected_layout() = stats.layout();
  v1::ReserveResponse reserved;
  {
    grpc::ClientContext ctx;
    const grpc::Status s = decode->Reserve(&ctx, reserve, &reserved);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(reserved.reserved_blocks(), 1u);  // 12 prompt tokens, 16 a block

  auto describe = [&](uint64_t id, const std::string& token,
                      v1::DescribeResponse* out) {
    v1::DescribeRequest d;
    d.set_request_id(id);
    d.set_reservation_token(token);
    grpc::ClientContext ctx;
    return decode->Describe(&ctx, d, out);
  };
  v1::DescribeResponse described;
  EXPECT_EQ(describe(kId, "guess", &described).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(
      describe(kId + 1, reserved.reservation_token(), &described).error_code(),
      grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(describe(kId, reserved.reservation_token(), &described).ok());
  EXPECT_EQ(described.kv_transfer().block_ids_size(), 1);

  auto run_prefill = [&](const std::string& address, const std::string& token,
                         v1::PrefillResponse* out) {
    v1::PrefillRequest p;
    p.set_request_id(kId);
    *p.mutable_prompt_token_ids() = request.prompt_token_ids();
    *p.mutable_sampling() = request.sampling();
    p.set_decode_node_address(address);
    p.set_reservation_token(token);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    return prefill->Prefill(&ctx, p, out);
  };
  v1::PrefillResponse first;
  // Without the token: the decode node refuses to say where; nothing moves.
  grpc::Status s = run_prefill(c.decode(0).address(), "guess", &first);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("reservation token does not match"));
  s = run_prefill("", reserved.reservation_token(), &first);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("decode_node_address"));
  // A listener that is not a decode node of this cluster (the router's
  // port answers no Node service).
  s = run_prefill(c.router_address(), reserved.reservation_token(), &first);
  EXPECT_FALSE(s.ok());

  ASSERT_TRUE(
      run_prefill(c.decode(0).address(), reserved.reservation_token(), &first)
          .ok());
  EXPECT_EQ(first.first_token(), expected[0]);
  v1::DecodeRequest d;
  d.set_request_id(kId);
  d.set_reservation_token(reserved.reservation_token());
  d.set_first_token(first.first_token());
  *d.mutable_sampling() = request.sampling();
  *d.mutable_prompt_token_ids() = request.prompt_token_ids();
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  auto reader = decode->Decode(&ctx, d);
  // The stream starts at token 2 (the router sends token 1 itself).
  std::vector<int32_t> got = {first.first_token()};
  v1::DecodeResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_chunk()) {
      got.insert(got.end(), msg.chunk().token_ids().begin(),
                 msg.chunk().token_ids().end());
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(got, expected);
  // Decode consumed the token: the reservation can no longer be described.
  EXPECT_FALSE(describe(kId, reserved.reservation_token(), &described).ok());
  EXPECT_TRUE(c.WaitAllBlocksFree(absl::Seconds(5)).ok());
}

TEST(SecurityTest, ApiKeysGateGenerateAndListNodes) {
  const std::string keys =
      absl::StrCat(::duet::testing::ScratchDir(), "/duet_keys_", getpid());
  {
    std::ofstream out(keys);
    out << "# test keys\n\nkey-0123456789abcdef\nkey-fedcba9876543210\n";
  }
  ClusterOptions o = Tiny();
  o.router_args = {"--api-key-file", keys};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;
  int tokens = 0;
  grpc::Status s = Generate(c.client(), "", &tokens);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("Bearer"));
  s = Generate(c.client(), "key-0123456789abcdeX", &tokens);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(tokens, 0);
  s = Generate(c.client(), "key-fedcba9876543210", &tokens);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(tokens, 4);
  {
    grpc::ClientContext ctx;
    v1::ListNodesResponse nodes;
    EXPECT_EQ(
        c.client().ListNodes(&ctx, v1::ListNodesRequest(), &nodes).error_code(),
        grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_TRUE(c.WaitAllBlocksFree(absl::Seconds(5)).ok());
}

// Oversized or ill-formed client fields get INVALID_ARGUMENT saying which
// field and what to fix; nothing reaches a node, nothing crashes.
TEST(SecurityTest, ClientFieldsAreBoundedAndUtf8Checked) {
  ClusterOptions o = Tiny();
  o.router_args = {"--tokenizer", std::string(DUET_SOURCE_DIR) +
                                      "/assets/qwen3/tokenizer.json"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;
  auto call = [&](const v1::GenerateRequest& r) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    auto reader = c.client().Generate(&ctx, r);
    v1::GenerateResponse msg;
    while (reader->Read(&msg)) {
    }
    return reader->Finish();
  };
  struct Case {
    std::string name;
    v1::GenerateRequest request;
    std::string says;
  };
  std::vector<Case> cases;
  {
    v1::GenerateRequest r = Request(2);
    r.clear_prompt_token_ids();
    r.set_prompt(std::string("hello \xC3\x28 world"));
    cases.push_back({"invalid UTF-8 prompt", r, "byte 6"});
  }
  {
    v1::GenerateRequest r = Request(2);
    r.set_request_id(std::string(1 << 20, 'x'));
    cases.push_back({"1 MB request_id", r, "request_id is 1048576 bytes"});
  }
  {
    v1::GenerateRequest r = Request(2);
    for (int i = 0; i < 10000; ++i) r.mutable_sampling()->add_stop("s");
    cases.push_back({"10,000 stop strings", r, "at most 16"});
  }
  {
    v1::GenerateRequest r = Request(2);
    r.mutable_sampling()->add_stop(std::string(1 << 20, 's'));
    cases.push_back({"1 MB stop string", r, "sampling.stop[0]"});
  }
  {
    v1::GenerateRequest r = Request(2);
    r.mutable_sampling()->add_stop(std::string("\xFF"));
    cases.push_back({"invalid UTF-8 stop string", r, "not valid UTF-8"});
  }
  {
    v1::GenerateRequest r = Request(2);
    r.clear_prompt_token_ids();
    r.set_prompt(std::string(2 << 20, 'a'));
    cases.push_back({"2 MB prompt", r, "prompt is 2097152 bytes"});
  }
  for (const Case& k : cases) {
    const grpc::Status s = call(k.request);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << k.name;
    EXPECT_THAT(s.error_message(), HasSubstr(k.says)) << k.name;
  }
  int tokens = 0;
  EXPECT_TRUE(Generate(c.client(), "", &tokens).ok());
  EXPECT_TRUE(c.WaitAllBlocksFree(absl::Seconds(5)).ok());
}

// Plaintext only when asked for; then it works as before.
TEST(SecurityTest, InsecureClusterServesWhenAskedFor) {
  ClusterOptions o = Tiny();
  o.insecure = true;
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  int tokens = 0;
  const grpc::Status s = Generate((*cluster)->client(), "", &tokens);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(tokens, 4);
}

}  // namespace
}  // namespace duet::testing
