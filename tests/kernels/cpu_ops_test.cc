// The CPU reference ops against independent, naive double-precision
// formulations on random non-zero inputs.
#include "kernels/cpu/ops.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/kernels/kernel_test_util.h"

namespace duet::kernels::cpu {
namespace {

using ::duet::kernels::testing::AllClose;
using ::duet::kernels::testing::kNaN;
using ::duet::kernels::testing::RandomNonZero;
using ::duet::kernels::testing::RandomVector;
using ::testing::HasSubstr;

// Relative tolerance (against the magnitude of the contributing terms) for
// fp32 kernels compared with double references.
constexpr double kRtol = 1e-5;

// ---------------------------------------------------------------------------
// Paged attention harness
// ---------------------------------------------------------------------------

struct Geometry {
  int num_heads;
  int num_kv_heads;
  int head_dim;
  int block_size;
  int width() const { return (num_heads + 2 * num_kv_heads) * head_dim; }
  std::string ToString() const {
    return absl::StrCat("heads=", num_heads, " kv_heads=", num_kv_heads,
                        " head_dim=", head_dim, " block_size=", block_size);
  }
};

// One sequence of a step: `prefix` tokens already in the cache from earlier
// steps, `chunk` new tokens (queries) in this step.
struct SeqSpec {
  int prefix;
  int chunk;
  int len() const { return prefix + chunk; }
};

// A paged cache holding the K/V of several sequences at randomly permuted
// physical blocks; every slot no sequence owns is NaN.
class PagedCacheFixture {
 public:
  PagedCacheFixture(const Geometry& g, const std::vector<SeqSpec>& seqs,
                    std::mt19937& rng)
      : g_(g), seqs_(seqs) {
    // Dense K/V per sequence: [len][kv_heads][head_dim].
    for (const SeqSpec& s : seqs_) {
      const size_t n =
          static_cast<size_t>(s.len()) * g_.num_kv_heads * g_.head_dim;
      k_.push_back(RandomVector(rng, n));
      v_.push_back(RandomVector(rng, n));
    }
    // Physical blocks: what every sequence needs plus a few spare ones, in a
    // random order.
    std::vector<int> needed;
    int total = 0;
    for (const SeqSpec& s : seqs_) {
      needed.push_back((s.len() + g_.block_size - 1) / g_.block_size);
      total += needed.back();
      max_blocks_ = std::max(max_blocks_, needed.back());
    }
    max_blocks_ += 1;  // tables have unused trailing entries
    constexpr int kSpare = 3;
    num_blocks_ = total + kSpare;
    std::vector<int32_t> perm(num_blocks_);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    // Trailing table entries point at spare (poisoned) blocks: a kernel that
    // reads past seq_len reads NaN.
    tables_.assign(seqs_.size() * max_blocks_, perm[total]);
    int next = 0;
    for (size_t s = 0; s < seqs_.size(); ++s) {
      for (int b = 0; b < needed[s]; ++b) {
        tables_[s * max_blocks_ + b] = perm[next++];
      }
    }
    cache_.assign(static_cast<size_t>(num_blocks_) * 2 * g_.num_kv_heads *
                      g_.block_size * g_.head_dim,
                  kNaN);
  }

  // Slot of position `pos` of sequence `s`.
  int64_t Slot(size_t s, int pos) const {
    return int64_t{tables_[s * max_blocks_ + pos / g_.block_size]} *
               g_.block_size +
           pos % g_.block_size;
  }

  // Packed qkv rows (Q random, K/V from the dense copies) for positions
  // [begin(s), end(s)) of every sequence, in sequence order.
  struct Rows {
    std::vector<float> qkv;
    std::vector<int64_t> slots;
    int num_tokens = 0;
  };
  template <typename Begin, typename End>
  Rows MakeRows(Begin begin, End end, std::mt19937& rng) const {
    Rows r;
    const int hd = g_.head_dim;
    for (size_t s = 0; s < seqs_.size(); ++s) {
      for (int pos = begin(s); pos < end(s); ++pos) {
        std::vector<float> row = RandomVector(rng, g_.width());
        float* k = row.data() + g_.num_heads * hd;
        float* v = k + g_.num_kv_heads * hd;
        for (int h = 0; h < g_.num_kv_heads; ++h) {
          for (int d = 0; d < hd; ++d) {
            k[h * hd + d] = K(s, pos, h)[d];
            v[h * hd + d] = V(s, pos, h)[d];
          }
        }
        r.qkv.insert(r.qkv.end(), row.begin(), row.end());
        r.slots.push_back(Slot(s, pos));
        ++r.num_tokens;
      }
    }
    return r;
  }

  void Write(const Rows& rows) {
    if (rows.num_tokens == 0) return;
    PagedKvParams c{cache_.data(), g_.num_kv_heads, g_.head_dim,
                    g_.block_size};
    const float* k = rows.qkv.data() + g_.num_heads * g_.head_dim;
    const float* v = k + g_.num_kv_heads * g_.head_dim;
    WriteKvCache(c, k, v, g_.width(), rows.slots.data(), rows.num_tokens);
  }

  const float* K(size_t s, int pos, int kv_head) const {
    return k_[s].data() +
           (static_cast<size_t>(pos) * g_.num_kv_heads + kv_head) * g_.head_dim;
  }
  const float* V(size_t s, int pos, int kv_head) const {
    return v_[s].data() +
           (static_cast<size_t>(pos) * g_.num_kv_heads + kv_head) * g_.head_dim;
  }

  PagedAttentionParams Params(const float* q, std::vector<int32_t>& query_start,
                              std::vector<int32_t>& seq_lens, float scale,
                              float* out) const {
    PagedAttentionParams p;
    p.q = q;
    p.q_stride = g_.width();
    p.num_heads = g_.num_heads;
    p.kv_cache = cache_.data();
    p.num_kv_heads = g_.num_kv_heads;
    p.head_dim = g_.head_dim;
    p.block_size = g_.block_size;
    p.query_start = query_start.data();
    p.seq_lens = seq_lens.data();
    p.block_tables = tables_.data();
    p.max_blocks_per_seq = max_blocks_;
    p.num_seqs = static_cast<int64_t>(seqs_.size());
    p.scale = scale;
    p.out = out;
    return p;
  }

  // Dense causal attention in double for one query head at position `pos` of
  // sequence `s` (attends to positions 0..pos). Appends head_dim outputs and
  // their magnitudes sum_j w_j |v_j|.
  void Reference(size_t s, int pos, int head, const float* q, double scale,
                 std::vector<double>& want, std::vector<double>& mag) const {
    const int hd = g_.head_dim;
    const int kv_head = head / (g_.num_heads / g_.num_kv_heads);
    std::vector<double> scores(pos + 1);
    double max_score = -INFINITY;
    for (int j = 0; j <= pos; ++j) {
      const float* kj = K(s, j, kv_head);
      double dot = 0.0;
      for (int d = 0; d < hd; ++d) dot += double{q[d]} * kj[d];
      scores[j] = dot * scale;
      max_score = std::max(max_score, scores[j]);
    }
    double denom = 0.0;
    for (double& x : scores) {
      x = std::exp(x - max_score);
      denom += x;
    }
    for (int d = 0; d < hd; ++d) {
      double acc = 0.0, m = 0.0;
      for (int j = 0; j <= pos; ++j) {
        const double w = scores[j] / denom;
        acc += w * V(s, j, kv_head)[d];
        m += w * std::fabs(V(s, j, kv_head)[d]);
      }
      want.push_back(acc);
      mag.push_back(m);
    }
  }

  // Cache slots that hold no token of any sequence must still be NaN.
  int64_t CountWrittenSlots() const {
    int64_t n = 0;
    for (float x : cache_) n += std::isnan(x) ? 0 : 1;
    return n;
  }

  const Geometry& geometry() const { return g_; }
  int max_blocks() const { return max_blocks_; }
  int num_blocks() const { return num_blocks_; }
  const std::vector<int32_t>& tables() const { return tables_; }
  std::vector<float>& cache() { return cache_; }

 private:
  Geometry g_;
  std::vector<SeqSpec> seqs_;
  std::vector<std::vector<float>> k_, v_;
  int max_blocks_ = 0;
  int num_blocks_ = 0;
  std::vector<int32_t> tables_;
  std::vector<float> cache_;
};

// Runs PagedPrefillAttention over `seqs` (cached prefix + new chunk each) and
// compares every output element with dense double attention.
void CheckPrefill(const Geometry& g, const std::vector<SeqSpec>& seqs,
                  uint32_t seed) {
  SCOPED_TRACE(g.ToString());
  std::mt19937 rng(seed);
  PagedCacheFixture f(g, seqs, rng);
  // Earlier steps wrote the prefixes; this step writes its chunk.
  f.Write(f.MakeRows([](size_t) { return 0; },
                     [&](size_t s) { return seqs[s].prefix; }, rng));
  const PagedCacheFixture::Rows chunk =
      f.MakeRows([&](size_t s) { return seqs[s].prefix; },
                 [&](size_t s) { return seqs[s].len(); }, rng);
  f.Write(chunk);
  int64_t total_len = 0;
  for (const SeqSpec& s : seqs) total_len += s.len();
  ASSERT_EQ(f.CountWrittenSlots(),
            total_len * 2 * g.num_kv_heads * g.head_dim);

  std::vector<int32_t> query_start = {0};
  std::vector<int32_t> seq_lens;
  for (const SeqSpec& s : seqs) {
    query_start.push_back(query_start.back() + s.chunk);
    seq_lens.push_back(s.len());
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.head_dim));
  std::vector<float> out(
      static_cast<size_t>(chunk.num_tokens) * g.num_heads * g.head_dim, kNaN);
  PagedPrefillAttention(
      f.Params(chunk.qkv.data(), query_start, seq_lens, scale, out.data()));

  std::vector<double> want, mag;
  int t = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int i = 0; i < seqs[s].chunk; ++i, ++t) {
      for (int h = 0; h < g.num_heads; ++h) {
        const float* q = chunk.qkv.data() +
                         static_cast<size_t>(t) * g.width() + h * g.head_dim;
        f.Reference(s, seqs[s].prefix + i, h, q, scale, want, mag);
      }
    }
  }
  EXPECT_TRUE(AllClose(out, want, mag, kRtol));
}

// Decode: one new token per sequence whose context holds `lens[s]` tokens.
void CheckDecode(const Geometry& g, const std::vector<int>& lens,
                 uint32_t seed) {
  SCOPED_TRACE(g.ToString());
  std::mt19937 rng(seed);
  std::vector<SeqSpec> seqs;
  for (int len : lens) seqs.push_back({len - 1, 1});
  PagedCacheFixture f(g, seqs, rng);
  f.Write(f.MakeRows([](size_t) { return 0; },
                     [&](size_t s) { return seqs[s].prefix; }, rng));
  const PagedCacheFixture::Rows step =
      f.MakeRows([&](size_t s) { return seqs[s].prefix; },
                 [&](size_t s) { return seqs[s].len(); }, rng);
  ASSERT_EQ(step.num_tokens, static_cast<int>(lens.size()));
  f.Write(step);

  std::vector<int32_t> query_start(lens.size() + 1);
  std::iota(query_start.begin(), query_start.end(), 0);
  std::vector<int32_t> seq_lens(lens.begin(), lens.end());
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.head_dim));
  std::vector<float> out(lens.size() * g.num_heads * g.head_dim, kNaN);
  PagedDecodeAttention(
      f.Params(step.qkv.data(), query_start, seq_lens, scale, out.data()));

  std::vector<double> want, mag;
  for (size_t s = 0; s < lens.size(); ++s) {
    for (int h = 0; h < g.num_heads; ++h) {
      const float* q =
          step.qkv.data() + s * g.width() + static_cast<size_t>(h) * g.head_dim;
      f.Reference(s, lens[s] - 1, h, q, scale, want, mag);
    }
  }
  EXPECT_TRUE(AllClose(out, want, mag, kRtol));
}

struct GridPoint {
  int head_dim;
  int group;
  int block_size;
};

std::vector<GridPoint> Grid() {
  std::vector<GridPoint> grid;
  for (int hd : {16, 64, 128}) {
    for (int group : {1, 2, 4, 8}) {
      for (int bs : {1, 16, 32}) grid.push_back({hd, group, bs});
    }
  }
  return grid;
}

class PagedAttentionGridTest : public ::testing::TestWithParam<GridPoint> {};

TEST_P(PagedAttentionGridTest, PrefillFromScratch) {
  const GridPoint p = GetParam();
  const Geometry g{2 * p.group, 2, p.head_dim, p.block_size};
  // Several sequences of different lengths, nothing cached yet.
  CheckPrefill(g, {{0, 1}, {0, 37}, {0, 5}, {0, 33}},
               1000 + p.head_dim * 100 + p.group * 10 + p.block_size);
}

TEST_P(PagedAttentionGridTest, ChunkedPrefillAfterCachedPrefix) {
  const GridPoint p = GetParam();
  const Geometry g{2 * p.group, 2, p.head_dim, p.block_size};
  // Query chunks that start after a cached prefix (mixed with a fresh one),
  // including chunk boundaries inside and exactly at block boundaries.
  CheckPrefill(g, {{21, 12}, {0, 9}, {32, 1}, {16, 17}, {47, 30}},
               2000 + p.head_dim * 100 + p.group * 10 + p.block_size);
}

TEST_P(PagedAttentionGridTest, Decode) {
  const GridPoint p = GetParam();
  const Geometry g{2 * p.group, 2, p.head_dim, p.block_size};
  CheckDecode(g, {1, 17, 300, 32, 33},
              3000 + p.head_dim * 100 + p.group * 10 + p.block_size);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedAttentionGridTest, ::testing::ValuesIn(Grid()),
    [](const ::testing::TestParamInfo<GridPoint>& info) {
      return absl::StrCat("hd", info.param.head_dim, "_group",
                          info.param.group, "_bs", info.param.block_size);
    });

TEST(PagedAttentionTest, MultiQuerySingleKvHead) {
  CheckPrefill({8, 1, 64, 16}, {{10, 7}, {0, 20}}, 11);
  CheckDecode({8, 1, 64, 16}, {1, 17, 300}, 12);
}

TEST(PagedAttentionTest, PrefillOfOneTokenMatchesDecode) {
  // A chunk of one token after a prefix is the same computation as decode.
  const Geometry g{4, 2, 32, 16};
  std::mt19937 rng(5);
  const std::vector<SeqSpec> seqs = {{16, 1}, {40, 1}, {0, 1}};
  PagedCacheFixture f(g, seqs, rng);
  const auto all = f.MakeRows([](size_t) { return 0; },
                              [&](size_t s) { return seqs[s].len(); }, rng);
  f.Write(all);
  const auto step = f.MakeRows([&](size_t s) { return seqs[s].prefix; },
                               [&](size_t s) { return seqs[s].len(); }, rng);
  std::vector<int32_t> query_start = {0, 1, 2, 3};
  std::vector<int32_t> seq_lens = {17, 41, 1};
  std::vector<float> a(3 * 4 * 32, kNaN), b(3 * 4 * 32, kNaN);
  PagedPrefillAttention(
      f.Params(step.qkv.data(), query_start, seq_lens, 0.125f, a.data()));
  PagedDecodeAttention(
      f.Params(step.qkv.data(), query_start, seq_lens, 0.125f, b.data()));
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(a[i]), std::bit_cast<uint32_t>(b[i]))
        << i;
  }
}

TEST(PagedAttentionTest, LargeScoresStayFinite) {
  // Big logits (|q.k| * scale above 100) overflow fp32 exp() unless the
  // maximum is subtracted first.
  const Geometry g{2, 1, 64, 16};
  std::mt19937 rng(77);
  const std::vector<SeqSpec> seqs = {{30, 5}};
  PagedCacheFixture f(g, seqs, rng);
  f.Write(f.MakeRows([](size_t) { return 0; }, [](size_t) { return 30; },
                     rng));
  auto chunk = f.MakeRows([](size_t) { return 30; }, [](size_t) { return 35; },
                          rng);
  for (int t = 0; t < 5; ++t) {
    for (int i = 0; i < 2 * 64; ++i) chunk.qkv[t * g.width() + i] *= 400.0f;
  }
  f.Write(chunk);
  std::vector<int32_t> query_start = {0, 5};
  std::vector<int32_t> seq_lens = {35};
  std::vector<float> out(5 * 2 * 64, kNaN);
  PagedPrefillAttention(
      f.Params(chunk.qkv.data(), query_start, seq_lens, 0.125f, out.data()));
  std::vector<double> want, mag;
  for (int t = 0; t < 5; ++t) {
    for (int h = 0; h < 2; ++h) {
      f.Reference(0, 30 + t, h, chunk.qkv.data() + t * g.width() + h * 64,
                  0.125, want, mag);
    }
  }
  // The largest scores exceed fp32 exp()'s range (e^88) unless the maximum
  // is subtracted first.
  double max_score = 0.0;
  for (int t = 0; t < 5; ++t) {
    for (int h = 0; h < 2; ++h) {
      for (int j = 0; j <= 30 + t; ++j) {
        double dot = 0.0;
        for (int d = 0; d < 64; ++d) {
          dot += double{chunk.qkv[t * g.width() + h * 64 + d]} * f.K(0, j, 0)[d];
        }
        max_score = std::max(max_score, dot * 0.125);
      }
    }
  }
  ASSERT_GT(max_score, 100.0);
  // Scores of order 1e2 carry fp32 rounding errors of order 1e-5 in the
  // exponent, so the tolerance is looser than kRtol.
  EXPECT_TRUE(AllClose(out, want, mag, 1e-4));
}

// ---------------------------------------------------------------------------
// WriteKvCache layout
// ---------------------------------------------------------------------------

TEST(WriteKvCacheTest, LayoutIsBlockKvHeadSlotDim) {
  for (int bs : {1, 16, 32}) {
    for (int kvh : {1, 2, 4}) {
      const int hd = 16, num_heads = 2 * kvh, num_blocks = 7;
      const int width = (num_heads + 2 * kvh) * hd;
      SCOPED_TRACE(absl::StrCat("block_size=", bs, " kv_heads=", kvh));
      std::mt19937 rng(bs * 10 + kvh);
      const int num_tokens = std::min(num_blocks * bs, 20);
      // Distinct random slots.
      std::vector<int64_t> all(static_cast<size_t>(num_blocks) * bs);
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      std::vector<int64_t> slots(all.begin(), all.begin() + num_tokens);
      // Rows with a distinct value per (token, column); padding columns of
      // a wider stride must not be copied.
      const int stride = width + 5;
      std::vector<float> rows(static_cast<size_t>(num_tokens) * stride);
      for (size_t i = 0; i < rows.size(); ++i) rows[i] = 1.0f + i;
      std::vector<float> cache(
          static_cast<size_t>(num_blocks) * 2 * kvh * bs * hd, kNaN);
      PagedKvParams c{cache.data(), kvh, hd, bs};
      const float* k = rows.data() + num_heads * hd;
      const float* v = k + kvh * hd;
      WriteKvCache(c, k, v, stride, slots.data(), num_tokens);
      std::vector<bool> expected_written(cache.size(), false);
      for (int t = 0; t < num_tokens; ++t) {
        const int64_t block = slots[t] / bs, off = slots[t] % bs;
        for (int kv = 0; kv < 2; ++kv) {
          for (int h = 0; h < kvh; ++h) {
            for (int d = 0; d < hd; ++d) {
              const size_t idx =
                  (((block * 2 + kv) * kvh + h) * bs + off) * hd + d;
              const float src =
                  rows[static_cast<size_t>(t) * stride + num_heads * hd +
                       kv * kvh * hd + h * hd + d];
              ASSERT_EQ(cache[idx], src)
                  << "token " << t << " kv " << kv << " head " << h << " d "
                  << d;
              expected_written[idx] = true;
            }
          }
        }
      }
      for (size_t i = 0; i < cache.size(); ++i) {
        if (!expected_written[i]) {
          ASSERT_TRUE(std::isnan(cache[i])) << "stray write at " << i;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Rope
// ---------------------------------------------------------------------------

std::vector<float> InvFreq(int head_dim, float base) {
  std::vector<float> f(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) {
    f[i] = static_cast<float>(1.0 / std::pow(double{base}, 2.0 * i / head_dim));
  }
  return f;
}

TEST(RopeTest, MatchesDoubleRotationOfHalves) {
  for (int hd : {16, 64, 128}) {
    for (int heads : {1, 3, 8}) {
      for (float base : {10000.0f, 1000000.0f}) {
        SCOPED_TRACE(absl::StrCat("head_dim=", hd, " heads=", heads,
                                  " base=", base));
        std::mt19937 rng(hd * 1000 + heads + static_cast<int>(base) % 997);
        const int tokens = 9;
        const int pad = 7;  // floats between tokens that Rope must not touch
        const int stride = heads * hd + pad;
        std::vector<float> x = RandomVector(rng, tokens * stride);
        const std::vector<float> x0 = x;
        std::vector<int32_t> positions = {0, 1, 2, 17, 255, 1000, 4095,
                                          32767, 131071};
        const std::vector<float> inv_freq = InvFreq(hd, base);
        Rope(x.data(), tokens, stride, heads, hd, positions.data(),
             inv_freq.data());
        std::vector<float> got;
        std::vector<double> want, mag;
        const int half = hd / 2;
        for (int t = 0; t < tokens; ++t) {
          for (int h = 0; h < heads; ++h) {
            const float* a = x0.data() + t * stride + h * hd;
            const float* y = x.data() + t * stride + h * hd;
            for (int i = 0; i < hd; ++i) {
              // The angle is the fp32 product position * inv_freq (the
              // documented Hugging Face convention); rotation in double.
              const int j = i % half;
              const double angle = static_cast<double>(
                  static_cast<float>(positions[t]) * inv_freq[j]);
              const double c = std::cos(angle), s = std::sin(angle);
              const double lo = a[j], hi = a[j + half];
              if (i < half) {
                want.push_back(lo * c - hi * s);
                mag.push_back(std::fabs(lo * c) + std::fabs(hi * s));
              } else {
                want.push_back(hi * c + lo * s);
                mag.push_back(std::fabs(hi * c) + std::fabs(lo * s));
              }
              got.push_back(y[i]);
            }
          }
          for (int i = heads * hd; i < stride; ++i) {
            ASSERT_EQ(x[t * stride + i], x0[t * stride + i]) << "padding";
          }
        }
        EXPECT_TRUE(AllClose(got, want, mag, kRtol));
      }
    }
  }
}

TEST(RopeTest, PositionZeroIsIdentity) {
  std::mt19937 rng(3);
  std::vector<float> x = RandomVector(rng, 2 * 64);
  const std::vector<float> x0 = x;
  const int32_t pos = 0;
  const std::vector<float> inv_freq = InvFreq(64, 10000.0f);
  Rope(x.data(), 1, 128, 2, 64, &pos, inv_freq.data());
  EXPECT_EQ(x, x0);
}

// ---------------------------------------------------------------------------
// RmsNorm, AddInPlace, SiluMul
// ---------------------------------------------------------------------------

TEST(RmsNormTest, MatchesDouble) {
  for (int dim : {1, 16, 64, 128, 1000}) {
    for (int rows : {1, 5}) {
      for (float eps : {1e-6f, 1e-5f, 0.5f}) {
        for (int pad : {0, 3}) {
          SCOPED_TRACE(absl::StrCat("dim=", dim, " rows=", rows, " eps=", eps,
                                    " pad=", pad));
          std::mt19937 rng(dim * 31 + rows * 7 + pad);
          const int stride = dim + pad;
          // Vary the scale of rows so eps matters differently per row.
          std::vector<float> x = RandomVector(rng, rows * stride);
          for (int r = 0; r < rows; ++r) {
            for (int i = 0; i < stride; ++i) x[r * stride + i] *= 1.0f + 3 * r;
          }
          const std::vector<float> w = RandomVector(rng, dim, 0.5f, 2.0f);
          std::vector<float> out(rows * stride, kNaN);
          RmsNorm(x.data(), w.data(), rows, dim, stride, eps, out.data());
          std::vector<float> got;
          std::vector<double> want, mag;
          for (int r = 0; r < rows; ++r) {
            double ss = 0.0;
            for (int i = 0; i < dim; ++i) {
              ss += double{x[r * stride + i]} * x[r * stride + i];
            }
            const double inv = 1.0 / std::sqrt(ss / dim + double{eps});
            for (int i = 0; i < dim; ++i) {
              want.push_back(double{w[i]} * x[r * stride + i] * inv);
              mag.push_back(std::fabs(want.back()));
              got.push_back(out[r * stride + i]);
            }
            for (int i = dim; i < stride; ++i) {
              EXPECT_TRUE(std::isnan(out[r * stride + i])) << "wrote padding";
            }
          }
          EXPECT_TRUE(AllClose(got, want, mag, kRtol));
          // In place (x aliases out) gives the same values.
          std::vector<float> inplace = x;
          RmsNorm(inplace.data(), w.data(), rows, dim, stride, eps,
                  inplace.data());
          for (int r = 0; r < rows; ++r) {
            for (int i = 0; i < dim; ++i) {
              ASSERT_EQ(inplace[r * stride + i], out[r * stride + i]);
            }
          }
        }
      }
    }
  }
}

TEST(AddInPlaceTest, Adds) {
  std::mt19937 rng(9);
  std::vector<float> a = RandomVector(rng, 1001), b = RandomVector(rng, 1001);
  const std::vector<float> a0 = a;
  AddInPlace(a.data(), b.data(), 1000);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(a[i], a0[i] + b[i]);
  EXPECT_EQ(a[1000], a0[1000]);
}

TEST(SiluMulTest, MatchesDouble) {
  for (int inter : {1, 16, 100}) {
    for (int tokens : {1, 7}) {
      std::mt19937 rng(inter * 13 + tokens);
      std::vector<float> gate_up = RandomVector(rng, tokens * 2 * inter);
      for (int t = 0; t < tokens; ++t) {  // gates spread over [-20, 20]
        for (int i = 0; i < inter; ++i) gate_up[t * 2 * inter + i] *= 20.0f;
      }
      std::vector<float> out(tokens * inter, kNaN);
      SiluMul(gate_up.data(), tokens, inter, out.data());
      std::vector<double> want, mag;
      for (int t = 0; t < tokens; ++t) {
        for (int i = 0; i < inter; ++i) {
          const double g = gate_up[t * 2 * inter + i];
          const double u = gate_up[t * 2 * inter + inter + i];
          want.push_back(g / (1.0 + std::exp(-g)) * u);
          mag.push_back(std::fabs(want.back()));
        }
      }
      EXPECT_TRUE(AllClose(out, want, mag, kRtol))
          << "inter=" << inter << " tokens=" << tokens;
    }
  }
}

// ---------------------------------------------------------------------------
// MatmulNT
// ---------------------------------------------------------------------------

TEST(MatmulNTTest, MatchesTripleLoop) {
  for (int tokens : {1, 3, 17}) {
    for (int k : {1, 16, 64, 300}) {
      for (int n : {1, 8, 33}) {
        std::mt19937 rng(tokens * 10007 + k * 101 + n);
        const std::vector<float> x = RandomVector(rng, tokens * k);
        const std::vector<float> w = RandomVector(rng, n * k);
        std::vector<float> y(tokens * n, kNaN);
        MatmulNT(x.data(), w.data(), tokens, k, n, y.data());
        std::vector<double> want, mag;
        for (int t = 0; t < tokens; ++t) {
          for (int j = 0; j < n; ++j) {
            double acc = 0.0, m = 0.0;
            for (int i = 0; i < k; ++i) {
              acc += double{x[t * k + i]} * w[j * k + i];
              m += std::fabs(double{x[t * k + i]} * w[j * k + i]);
            }
            want.push_back(acc);
            mag.push_back(m);
          }
        }
        EXPECT_TRUE(AllClose(y, want, mag, kRtol))
            << "tokens=" << tokens << " k=" << k << " n=" << n;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Embedding
// ---------------------------------------------------------------------------

TEST(EmbeddingTest, GathersRows) {
  std::mt19937 rng(21);
  const int vocab = 50, hidden = 24;
  const std::vector<float> table = RandomVector(rng, vocab * hidden);
  const std::vector<int32_t> ids = {0, 49, 7, 7, 13, 0, 48};
  std::vector<float> out(ids.size() * hidden, kNaN);
  ASSERT_TRUE(Embedding(table.data(), vocab, hidden, ids.data(), ids.size(),
                        out.data())
                  .ok());
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int i = 0; i < hidden; ++i) {
      ASSERT_EQ(out[t * hidden + i], table[ids[t] * hidden + i]) << t;
    }
  }
}

TEST(EmbeddingTest, OutOfRangeIdIsInvalidArgument) {
  const int vocab = 5, hidden = 3;
  const std::vector<float> table(vocab * hidden, 1.0f);
  for (int32_t bad : {5, -1, 1 << 30}) {
    const std::vector<int32_t> ids = {1, bad};
    std::vector<float> out(ids.size() * hidden, kNaN);
    const absl::Status s = Embedding(table.data(), vocab, hidden, ids.data(),
                                     ids.size(), out.data());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()),
                HasSubstr(absl::StrCat("token id ", bad,
                                       " is outside the vocabulary [0, 5)")));
  }
}

}  // namespace
}  // namespace duet::kernels::cpu
