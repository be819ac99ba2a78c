// Test helpers for kv_transfer: host pools filled with random non-zero bytes
// or a poison byte, random copy plans, and a byte-exact check that copied
// blocks match and every other destination block is untouched.
#ifndef DUET_TESTS_KV_TRANSFER_KV_TEST_UTIL_H_
#define DUET_TESTS_KV_TRANSFER_KV_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kv_transfer::testing {

// Bytes that random fills never produce, so an untouched block is provable.
inline constexpr uint8_t kPoison = 0;

// 4 layers x 8 kv heads x 16 tokens x 64 dims, bf16: 32 KiB per block, big
// enough that UCX uses its zero-copy / rendezvous paths for runs of blocks.
KvLayout TestLayout();

class TestPool {
 public:
  TestPool(const KvLayout& layout, int32_t num_blocks);
  KvPoolView view() const;
  // Deterministic random bytes in [1, 255].
  void FillRandom(uint64_t seed);
  void Fill(uint8_t byte);
  const uint8_t* block(int32_t layer, int32_t block) const;

 private:
  KvLayout layout_;
  int32_t num_blocks_;
  std::vector<std::vector<uint8_t>> layers_;
};

// A transfer: which destination blocks the receiver hands out (in logical
// order) and which source block goes to which logical block. Contains a run
// of consecutive source and destination blocks (exercises coalescing) and
// randomly scattered ones.
struct CopyPlan {
  std::vector<int32_t> dest_block_ids;
  std::vector<BlockCopy> copies;
};
CopyPlan MakeCopyPlan(uint64_t seed, int32_t src_blocks, int32_t dst_blocks);

// Copied blocks equal their source blocks, all other blocks of `dst` hold
// kPoison only, on every layer.
::testing::AssertionResult BlocksCopied(const TestPool& src,
                                        const TestPool& dst,
                                        const std::vector<int32_t>& block_ids,
                                        const std::vector<BlockCopy>& copies);
// Every byte of `dst` is kPoison.
::testing::AssertionResult AllPoison(const TestPool& dst);

// Self-made wire format for passing a descriptor between test processes
// (the nodes use proto; tests must not depend on it).
std::string SerializeDescriptor(const KvDescriptor& d);
absl::StatusOr<KvDescriptor> ParseDescriptor(absl::string_view bytes);

}  // namespace duet::kv_transfer::testing

#endif  // DUET_TESTS_KV_TRANSFER_KV_TEST_UTIL_H_
