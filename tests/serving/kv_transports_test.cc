#include "serving/kv_transports.h"

#include "gtest/gtest.h"

namespace duet::serving {
namespace {

// UCX listens only where the node was told to: the loopback device for a
// loopback --listen, anywhere for a wildcard or a name.
TEST(UcxNetDeviceForTest, MapsTheListenAddressToItsInterface) {
  auto lo = UcxNetDeviceFor("127.0.0.1:0");
  ASSERT_TRUE(lo.ok()) << lo.status();
  EXPECT_EQ(*lo, "lo");
  EXPECT_EQ(*UcxNetDeviceFor("0.0.0.0:7001"), "");
  EXPECT_EQ(*UcxNetDeviceFor("[::]:7001"), "");
  EXPECT_EQ(*UcxNetDeviceFor("decode-host:7001"), "");
  // TEST-NET-3: never a local address.
  EXPECT_EQ(UcxNetDeviceFor("203.0.113.7:7001").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::serving
