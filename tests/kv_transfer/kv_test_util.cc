#include "tests/kv_transfer/kv_test_util.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"

namespace duet::kv_transfer::testing {

KvLayout TestLayout() {
  KvLayout layout;
  layout.num_layers = 4;
  layout.num_kv_heads = 8;
  layout.head_dim = 64;
  layout.block_size = 16;
  layout.dtype = DType::kBF16;
  return layout;
}

TestPool::TestPool(const KvLayout& layout, int32_t num_blocks)
    : layout_(layout), num_blocks_(num_blocks) {
  const size_t bytes = static_cast<size_t>(num_blocks) *
                       static_cast<size_t>(layout.block_bytes());
  layers_.assign(static_cast<size_t>(layout.num_layers),
                 std::vector<uint8_t>(bytes, kPoison));
}

KvPoolView TestPool::view() const {
  KvPoolView v;
  v.layout = layout_;
  v.num_blocks = num_blocks_;
  for (const auto& layer : layers_) {
    // The pool is written by transports, never through a const TestPool in
    // the tests; the view type has no const flavour.
    v.layer_base.push_back(const_cast<uint8_t*>(layer.data()));
  }
  return v;
}

void TestPool::FillRandom(uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (auto& layer : layers_) {
    for (size_t i = 0; i < layer.size(); i += 8) {
      uint64_t word = rng();
      for (size_t j = 0; j < 8 && i + j < layer.size(); ++j) {
        layer[i + j] = static_cast<uint8_t>(1 + (word & 0xff) % 255);
        word >>= 8;
      }
    }
  }
}

void TestPool::Fill(uint8_t byte) {
  for (auto& layer : layers_) std::fill(layer.begin(), layer.end(), byte);
}

const uint8_t* TestPool::block(int32_t layer, int32_t block) const {
  return layers_[static_cast<size_t>(layer)].data() +
         static_cast<size_t>(block) *
             static_cast<size_t>(layout_.block_bytes());
}

CopyPlan MakeCopyPlan(uint64_t seed, int32_t src_blocks, int32_t dst_blocks) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> src(static_cast<size_t>(src_blocks));
  std::iota(src.begin(), src.end(), 0);
  std::shuffle(src.begin(), src.end(), rng);
  std::vector<int32_t> dst(static_cast<size_t>(dst_blocks));
  std::iota(dst.begin(), dst.end(), 0);
  std::shuffle(dst.begin(), dst.end(), rng);

  CopyPlan plan;
  // Logical blocks 0..3: source 2..5 into destination 7..10 (one run).
  const int32_t kRun = 4;
  auto take = [](std::vector<int32_t>& v, int32_t x) {
    v.erase(std::find(v.begin(), v.end(), x));
  };
  for (int32_t i = 0; i < kRun; ++i) {
    plan.dest_block_ids.push_back(7 + i);
    plan.copies.push_back(BlockCopy{2 + i, i});
    take(src, 2 + i);
    take(dst, 7 + i);
  }
  // Then a random subset, in random order, into random destinations; about a
  // third of each pool stays untouched.
  const size_t extra = std::min(src.size(), dst.size()) * 2 / 3;
  for (size_t i = 0; i < extra; ++i) {
    const int32_t logical = static_cast<int32_t>(plan.dest_block_ids.size());
    plan.dest_block_ids.push_back(dst[i]);
    plan.copies.push_back(BlockCopy{src[i], logical});
  }
  std::shuffle(plan.copies.begin(), plan.copies.end(), rng);
  return plan;
}

::testing::AssertionResult BlocksCopied(const TestPool& src,
                                        const TestPool& dst,
                                        const std::vector<int32_t>& block_ids,
                                        const std::vector<BlockCopy>& copies) {
  const KvPoolView d = dst.view();
  const size_t bb = static_cast<size_t>(d.layout.block_bytes());
  std::vector<int32_t> source_of(static_cast<size_t>(d.num_blocks), -1);
  for (const BlockCopy& c : copies) {
    source_of[static_cast<size_t>(
        block_ids[static_cast<size_t>(c.logical_block)])] = c.src_block;
  }
  const std::vector<uint8_t> poison(bb, kPoison);
  for (int32_t l = 0; l < d.layout.num_layers; ++l) {
    for (int32_t b = 0; b < d.num_blocks; ++b) {
      const int32_t s = source_of[static_cast<size_t>(b)];
      const uint8_t* want = s >= 0 ? src.block(l, s) : poison.data();
      if (std::memcmp(dst.block(l, b), want, bb) != 0) {
        return ::testing::AssertionFailure()
               << "layer " << l << " destination block " << b
               << (s >= 0 ? absl::StrCat(" differs from source block ", s)
                          : std::string(" was modified but not a target"));
      }
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult AllPoison(const TestPool& dst) {
  return BlocksCopied(dst, dst, {}, {});
}

namespace {

void PutU64(std::string& out, uint64_t v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}
void PutString(std::string& out, absl::string_view s) {
  PutU64(out, s.size());
  out.append(s.data(), s.size());
}

class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  bool U64(uint64_t& v) {
    if (in_.size() < sizeof(v)) return false;
    std::memcpy(&v, in_.data(), sizeof(v));
    in_.remove_prefix(sizeof(v));
    return true;
  }
  bool String(std::string& s) {
    uint64_t n = 0;
    if (!U64(n) || in_.size() < n) return false;
    s.assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  absl::string_view in_;
};

}  // namespace

std::string SerializeDescriptor(const KvDescriptor& d) {
  std::string out;
  PutU64(out, static_cast<uint64_t>(d.transport));
  const KvLayout& l = d.layout;
  for (int32_t v : {l.num_layers, l.num_kv_heads, l.head_dim, l.block_size,
                    static_cast<int32_t>(l.dtype), l.tp_rank, l.tp_size}) {
    PutU64(out, static_cast<uint64_t>(static_cast<int64_t>(v)));
  }
  PutU64(out, d.block_ids.size());
  for (int32_t b : d.block_ids) PutU64(out, static_cast<uint64_t>(b));
  PutU64(out, static_cast<uint64_t>(static_cast<int64_t>(d.num_blocks)));
  PutString(out, d.endpoint_name);
  PutString(out, d.ucx_worker_address);
  PutU64(out, d.ucx_rkeys.size());
  for (const std::string& r : d.ucx_rkeys) PutString(out, r);
  PutU64(out, d.remote_layer_base.size());
  for (uint64_t b : d.remote_layer_base) PutU64(out, b);
  return out;
}

absl::StatusOr<KvDescriptor> ParseDescriptor(absl::string_view bytes) {
  Reader r(bytes);
  KvDescriptor d;
  uint64_t v = 0;
  bool ok = r.U64(v);
  d.transport = static_cast<Transport>(v);
  int32_t fields[7] = {};
  for (int32_t& f : fields) {
    ok = ok && r.U64(v);
    f = static_cast<int32_t>(static_cast<int64_t>(v));
  }
  d.layout = KvLayout{
      fields[0], fields[1], fields[2], fields[3], static_cast<DType>(fields[4]),
      fields[5], fields[6]};
  uint64_t n = 0;
  ok = ok && r.U64(n);
  for (uint64_t i = 0; ok && i < n; ++i) {
    ok = r.U64(v);
    d.block_ids.push_back(static_cast<int32_t>(v));
  }
  ok = ok && r.U64(v);
  d.num_blocks = static_cast<int32_t>(static_cast<int64_t>(v));
  ok = ok && r.String(d.endpoint_name) && r.String(d.ucx_worker_address) &&
       r.U64(n);
  for (uint64_t i = 0; ok && i < n; ++i) {
    ok = r.String(d.ucx_rkeys.emplace_back());
  }
  ok = ok && r.U64(n);
  for (uint64_t i = 0; ok && i < n; ++i) {
    ok = r.U64(v);
    d.remote_layer_base.push_back(v);
  }
  if (!ok || !r.done()) {
    return absl::InvalidArgumentError("truncated or oversized descriptor");
  }
  return d;
}

}  // namespace duet::kv_transfer::testing
