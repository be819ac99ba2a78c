#include "model/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "tests/testing/scratch.h"

namespace duet::model {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// ---------------------------------------------------------------------------
// Helpers.

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, absl::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string LengthPrefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out;
}

// A file as Python's safetensors lays it out: length, header padded with
// spaces to a multiple of 8, data.
std::string AssembleFile(std::string header, absl::string_view data,
                         bool pad = true) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  return LengthPrefix(header.size()) + header + std::string(data);
}

// Splits a file into its header JSON and data section.
struct FileParts {
  Json header;
  std::string data;
};
FileParts SplitFile(const std::string& path) {
  const std::string bytes = ReadBytes(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) {
    n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  }
  return {Json::parse(bytes.substr(8, n)), bytes.substr(8 + n)};
}

// Rewrites `path` with a new header and the same data section.
void RewriteHeader(const std::string& path, const Json& header) {
  const FileParts parts = SplitFile(path);
  WriteBytes(path, AssembleFile(header.dump(), parts.data));
}

// Random bytes, at least one of them non-zero so a reader returning zeros
// cannot pass.
std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xff);
  if (n > 0) out[0] = static_cast<char>(out[0] | 1);
  return out;
}

size_t SpecBytes(const TensorSpec& s) {
  return static_cast<size_t>(NumElements(s.shape)) * DTypeSize(s.dtype);
}

// Tensors plus their contents, served to the writer through `Fill()`.
struct TensorSet {
  std::vector<TensorSpec> specs;
  std::vector<std::string> bytes;

  void Add(std::string name, DType dtype, Shape shape) {
    specs.push_back({std::move(name), dtype, std::move(shape)});
    bytes.push_back(RandomBytes(SpecBytes(specs.back()),
                                static_cast<uint32_t>(specs.size() * 7919)));
  }
  TensorFill Fill() const {
    return [this](size_t i, std::span<std::byte> out) -> absl::Status {
      if (out.size() != bytes[i].size()) {
        return absl::InternalError("size mismatch in fill");
      }
      std::memcpy(out.data(), bytes[i].data(), out.size());
      return absl::OkStatus();
    };
  }
};

TensorSet MixedTensors() {
  TensorSet set;
  set.Add("model.embed_tokens.weight", DType::kBF16, {7, 5});
  set.Add("model.layers.0.self_attn.q_proj.weight", DType::kF32, {3, 4});
  set.Add("model.layers.0.input_layernorm.weight", DType::kF16, {9});
  set.Add("scalar", DType::kF32, {});
  set.Add("empty", DType::kBF16, {0, 4});
  set.Add("lm_head.weight", DType::kF16, {2, 3, 4});
  return set;
}

::testing::AssertionResult HasError(const absl::Status& status,
                                    absl::StatusCode code,
                                    absl::string_view phrase) {
  if (status.code() != code || !absl::StrContains(status.message(), phrase)) {
    return ::testing::AssertionFailure()
           << "expected " << absl::StatusCodeToString(code) << " containing \""
           << phrase << "\", got " << status;
  }
  return ::testing::AssertionSuccess() << status;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (fs::path(::duet::testing::ScratchDir()) /
            absl::StrCat("duet_safetensors_", info->test_suite_name(), "_",
                         info->name(), "_", ::getpid()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(absl::string_view name) const {
    return absl::StrCat(dir_, "/", name);
  }

  // A valid two-tensor file to corrupt: "a" F32 [2] at [0,8], "b" F16 [2, 2]
  // at [8,16].
  std::string WriteSmallFile(absl::string_view name = "model.safetensors") {
    TensorSet set;
    set.Add("a", DType::kF32, {2});
    set.Add("b", DType::kF16, {2, 2});
    const std::string path = Path(name);
    EXPECT_TRUE(WriteSafetensors(path, set.specs, set.Fill()).ok());
    return path;
  }

  // Rewrites the small file with `header` and returns Open's status.
  absl::Status OpenWithHeader(const Json& header) {
    const std::string path = WriteSmallFile();
    RewriteHeader(path, header);
    return SafetensorsFile::Open(path).status();
  }

  std::string dir_;
};

void ExpectTensor(const TensorInfo& t, const TensorSpec& spec,
                  const std::string& bytes) {
  EXPECT_EQ(t.name, spec.name);
  EXPECT_EQ(t.dtype, spec.dtype) << spec.name;
  EXPECT_EQ(t.shape, spec.shape) << spec.name;
  ASSERT_EQ(t.nbytes, bytes.size()) << spec.name;
  EXPECT_EQ(std::memcmp(t.data, bytes.data(), bytes.size()), 0) << spec.name;
}

void ExpectSameTensors(const TensorSet& set, const Checkpoint& ckpt) {
  ASSERT_EQ(ckpt.size(), set.specs.size());
  for (size_t i = 0; i < set.specs.size(); ++i) {
    absl::StatusOr<const TensorInfo*> info = ckpt.Find(set.specs[i].name);
    ASSERT_TRUE(info.ok()) << info.status();
    ExpectTensor(**info, set.specs[i], set.bytes[i]);
  }
}

// ---------------------------------------------------------------------------
// Writer -> reader.

TEST_F(SafetensorsTest, RoundTripSingleFile) {
  const TensorSet set = MixedTensors();
  const std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                       {"note", "hello"}};
  const std::string path = Path("weights.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, set.specs, set.Fill(), metadata).ok());
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata(), metadata);
  const std::vector<TensorInfo>& tensors = (*file)->tensors();
  ASSERT_EQ(tensors.size(), set.specs.size());
  // File order is spec order (the writer lays tensors out that way; the
  // zero-size tensor ties with its successor's begin and sorts first), and
  // the tensors are contiguous.
  for (size_t i = 0; i < tensors.size(); ++i) {
    ExpectTensor(tensors[i], set.specs[i], set.bytes[i]);
    EXPECT_EQ(tensors[i].file, path);
    if (i > 0) {
      EXPECT_EQ(tensors[i].data, static_cast<const char*>(tensors[i - 1].data) +
                                     tensors[i - 1].nbytes);
    }
  }
}

TEST_F(SafetensorsTest, CheckpointSingleFile) {
  const TensorSet set = MixedTensors();
  ASSERT_TRUE(WriteCheckpoint(dir_, set.specs, set.Fill(), 0).ok());
  EXPECT_TRUE(fs::exists(Path("model.safetensors")));
  EXPECT_FALSE(fs::exists(Path("model.safetensors.index.json")));

  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectSameTensors(set, **ckpt);
  std::vector<std::string> names;
  for (const TensorSpec& s : set.specs) names.push_back(s.name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ((*ckpt)->Names(), names);

  EXPECT_TRUE(HasError((*ckpt)->Find("no.such.tensor").status(),
                       absl::StatusCode::kNotFound, "no.such.tensor"));
  EXPECT_TRUE(HasError((*ckpt)->Find("no.such.tensor").status(),
                       absl::StatusCode::kNotFound, dir_));
}

TEST_F(SafetensorsTest, CheckpointFitsUnderLimitIsOneFile) {
  const TensorSet set = MixedTensors();
  uint64_t total = 0;
  for (const std::string& b : set.bytes) total += b.size();
  ASSERT_TRUE(WriteCheckpoint(dir_, set.specs, set.Fill(), total).ok());
  EXPECT_TRUE(fs::exists(Path("model.safetensors")));
  EXPECT_FALSE(fs::exists(Path("model.safetensors.index.json")));
}

TEST_F(SafetensorsTest, RoundTripSharded) {
  // Sizes chosen so the greedy split is known: limit 256.
  TensorSet set;
  set.Add("t0", DType::kF32, {32});    // 128
  set.Add("t1", DType::kBF16, {64});   // 128 -> shard 1 is exactly 256
  set.Add("t2", DType::kF16, {10});    // 20  -> shard 2
  set.Add("t3", DType::kF32, {60});    // 240 -> shard 3 (20 + 240 > 256)
  set.Add("t4", DType::kBF16, {300});  // 600 -> shard 4, alone, over limit
  set.Add("t5", DType::kF16, {2});     // 4   -> shard 5
  set.Add("t6", DType::kF32, {1});     // 4   -> shard 5
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  ASSERT_TRUE(WriteCheckpoint(dir_, set.specs, set.Fill(), 256, metadata).ok());

  const std::vector<std::string> shard_of = {
      "model-00001-of-00005.safetensors", "model-00001-of-00005.safetensors",
      "model-00002-of-00005.safetensors", "model-00003-of-00005.safetensors",
      "model-00004-of-00005.safetensors", "model-00005-of-00005.safetensors",
      "model-00005-of-00005.safetensors"};
  EXPECT_FALSE(fs::exists(Path("model.safetensors")));
  for (const std::string& shard : shard_of) {
    EXPECT_TRUE(fs::exists(Path(shard))) << shard;
  }

  const Json index =
      Json::parse(ReadBytes(Path("model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(),
            128u + 128 + 20 + 240 + 600 + 4 + 4);
  ASSERT_EQ(index["weight_map"].size(), set.specs.size());
  for (size_t i = 0; i < set.specs.size(); ++i) {
    EXPECT_EQ(index["weight_map"][set.specs[i].name].get<std::string>(),
              shard_of[i]);
  }

  // Each shard is a standalone safetensors file with the metadata.
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> shard1 =
      SafetensorsFile::Open(Path(shard_of[0]));
  ASSERT_TRUE(shard1.ok()) << shard1.status();
  ASSERT_EQ((*shard1)->tensors().size(), 2u);
  EXPECT_EQ((*shard1)->tensors()[0].name, "t0");
  EXPECT_EQ((*shard1)->tensors()[1].name, "t1");
  EXPECT_EQ((*shard1)->metadata(), metadata);

  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectSameTensors(set, **ckpt);
  for (size_t i = 0; i < set.specs.size(); ++i) {
    EXPECT_EQ((*ckpt)->Find(set.specs[i].name).value()->file,
              Path(shard_of[i]));
  }
  EXPECT_EQ((*ckpt)->Names(), (std::vector<std::string>{"t0", "t1", "t2", "t3",
                                                        "t4", "t5", "t6"}));
}

TEST_F(SafetensorsTest, OneTensorOverLimitIsStillOneFile) {
  TensorSet set;
  set.Add("big", DType::kF32, {100});
  ASSERT_TRUE(WriteCheckpoint(dir_, set.specs, set.Fill(), 16).ok());
  EXPECT_TRUE(fs::exists(Path("model.safetensors")));
  EXPECT_FALSE(fs::exists(Path("model.safetensors.index.json")));
}

TEST_F(SafetensorsTest, RewritingSwitchesLayoutCleanly) {
  const TensorSet set = MixedTensors();
  // Single, then sharded: the stale single file must go, or Open (which
  // prefers it) would read old weights.
  ASSERT_TRUE(WriteCheckpoint(dir_, set.specs, set.Fill(), 0).ok());
  ASSERT_TRUE(WriteCheckpoint(dir_, set.specs, set.Fill(), 64).ok());
  EXPECT_FALSE(fs::exists(Path("model.safetensors")));
  EXPECT_TRUE(fs::exists(Path("model.safetensors.index.json")));
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectSameTensors(set, **ckpt);

  // Sharded, then single: the stale index goes.
  ASSERT_TRUE(WriteCheckpoint(dir_, set.specs, set.Fill(), 0).ok());
  EXPECT_TRUE(fs::exists(Path("model.safetensors")));
  EXPECT_FALSE(fs::exists(Path("model.safetensors.index.json")));
  ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectSameTensors(set, **ckpt);
}

TEST_F(SafetensorsTest, Deterministic) {
  const TensorSet set = MixedTensors();
  const std::map<std::string, std::string> metadata = {{"b", "2"}, {"a", "1"}};
  ASSERT_TRUE(
      WriteSafetensors(Path("x.safetensors"), set.specs, set.Fill(), metadata)
          .ok());
  ASSERT_TRUE(
      WriteSafetensors(Path("y.safetensors"), set.specs, set.Fill(), metadata)
          .ok());
  EXPECT_EQ(ReadBytes(Path("x.safetensors")), ReadBytes(Path("y.safetensors")));

  ASSERT_TRUE(WriteCheckpoint(Path("c1"), set.specs, set.Fill(), 64).ok());
  ASSERT_TRUE(WriteCheckpoint(Path("c2"), set.specs, set.Fill(), 64).ok());
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(Path("c1"))) {
    const std::string name = entry.path().filename().string();
    EXPECT_EQ(ReadBytes(entry.path().string()),
              ReadBytes(absl::StrCat(Path("c2"), "/", name)))
        << name;
    ++files;
  }
  EXPECT_GE(files, 4u);  // index + 3 or more shards
}

TEST_F(SafetensorsTest, ExactBytesMatchPythonSaveFile) {
  // What safetensors.torch.save_file({"a": torch.tensor([1.5, -2.0])},
  // metadata={"format": "pt"}) writes: compact JSON, metadata first, fields in
  // dtype/shape/data_offsets order, padded with spaces to a multiple of 8.
  const float values[2] = {1.5f, -2.0f};
  const std::vector<TensorSpec> specs = {{"a", DType::kF32, {2}}};
  const std::string path = Path("a.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, specs,
                               [&](size_t, std::span<std::byte> out) {
                                 std::memcpy(out.data(), values,
                                             sizeof(values));
                                 return absl::OkStatus();
                               },
                               {{"format", "pt"}})
                  .ok());
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],)"
      R"("data_offsets":[0,8]}})";
  EXPECT_EQ(ReadBytes(path),
            AssembleFile(
                header, absl::string_view(reinterpret_cast<const char*>(values),
                                          sizeof(values))));
}

// Byte vectors from the official implementation's own serialization tests
// (safetensors/src/tensor.rs): what Python's save_file writes.
TEST_F(SafetensorsTest, MatchesOfficialTestVectors) {
  // test_empty: no tensors, with and without metadata.
  ASSERT_TRUE(WriteSafetensors(Path("e1"), {}, nullptr).ok());
  EXPECT_EQ(ReadBytes(Path("e1")), LengthPrefix(8) + "{}      ");
  ASSERT_TRUE(
      WriteSafetensors(Path("e2"), {}, nullptr, {{"framework", "pt"}}).ok());
  EXPECT_EQ(
      ReadBytes(Path("e2")),
      LengthPrefix(40) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
  for (const char* name : {"e1", "e2"}) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
        SafetensorsFile::Open(Path(name));
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_TRUE((*file)->tensors().empty());
  }

  // test_serialization_forced_alignement: "attn0", F32 [1, 1, 2, 3] holding
  // 0..5; the 65-byte JSON is padded to 72.
  const float values[6] = {0, 1, 2, 3, 4, 5};
  const std::vector<TensorSpec> specs = {{"attn0", DType::kF32, {1, 1, 2, 3}}};
  ASSERT_TRUE(WriteSafetensors(Path("attn"), specs,
                               [&](size_t, std::span<std::byte> out) {
                                 std::memcpy(out.data(), values,
                                             sizeof(values));
                                 return absl::OkStatus();
                               })
                  .ok());
  EXPECT_EQ(
      ReadBytes(Path("attn")),
      LengthPrefix(72) +
          R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],)"
          R"("data_offsets":[0,24]}})" +
          "       " +
          std::string(reinterpret_cast<const char*>(values), sizeof(values)));
}

TEST_F(SafetensorsTest, DataSectionIsEightByteAligned) {
  // Vary name lengths so the unpadded header length takes every residue.
  for (int len = 1; len <= 8; ++len) {
    const std::vector<TensorSpec> specs = {
        {std::string(static_cast<size_t>(len), 'w'), DType::kBF16, {3}}};
    const std::string path = Path(absl::StrCat("align", len, ".safetensors"));
    ASSERT_TRUE(
        WriteSafetensors(path, specs, [](size_t, std::span<std::byte> out) {
          std::fill(out.begin(), out.end(), std::byte{0x5a});
          return absl::OkStatus();
        }).ok());
    const std::string bytes = ReadBytes(path);
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) {
      n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i]))
           << (8 * i);
    }
    EXPECT_EQ((8 + n) % 8, 0u) << len;
    EXPECT_EQ(bytes.size(), 8 + n + 6);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
        SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    // The mapping is page-aligned, so an aligned offset is an aligned address.
    EXPECT_EQ(reinterpret_cast<uintptr_t>((*file)->tensors()[0].data) % 8, 0u);
  }
}

TEST_F(SafetensorsTest, ReadsHandAssembledPythonHeader) {
  const float a[2] = {1.5f, -2.0f};
  const std::string path = Path("py.safetensors");
  WriteBytes(path,
             AssembleFile(R"({"a":{"dtype":"F32","shape":[2],)"
                          R"("data_offsets":[0,8]}})",
                          absl::string_view(reinterpret_cast<const char*>(a),
                                            sizeof(a))));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->metadata().empty());
  ASSERT_EQ((*file)->tensors().size(), 1u);
  const TensorInfo& t = (*file)->tensors()[0];
  EXPECT_EQ(t.name, "a");
  EXPECT_EQ(t.dtype, DType::kF32);
  EXPECT_EQ(t.shape, Shape({2}));
  ASSERT_EQ(t.nbytes, 8u);
  float got[2];
  std::memcpy(got, t.data, sizeof(got));
  EXPECT_EQ(got[0], 1.5f);
  EXPECT_EQ(got[1], -2.0f);
}

TEST_F(SafetensorsTest, ReadsHeaderListedOutOfOffsetOrder) {
  // Older writers listed tensors by name, not by offset, and did not pad.
  const uint16_t bf16[3] = {0x3f80, 0x4000, 0xc040};
  const float f32[1] = {7.0f};
  std::string data(reinterpret_cast<const char*>(f32), sizeof(f32));
  data.append(reinterpret_cast<const char*>(bf16), sizeof(bf16));
  const std::string path = Path("old.safetensors");
  WriteBytes(path, AssembleFile(R"({"a_second":{"dtype":"BF16","shape":[3],)"
                                R"("data_offsets":[4,10]},)"
                                R"("z_first":{"dtype":"F32","shape":[1],)"
                                R"("data_offsets":[0,4]},)"
                                R"("__metadata__":null})",
                                data, /*pad=*/false));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 2u);
  EXPECT_EQ((*file)->tensors()[0].name, "z_first");
  EXPECT_EQ((*file)->tensors()[1].name, "a_second");
  EXPECT_EQ(std::memcmp((*file)->tensors()[1].data, bf16, sizeof(bf16)), 0);
}

TEST_F(SafetensorsTest, EmptyCheckpointRoundTrips) {
  ASSERT_TRUE(WriteCheckpoint(dir_, {}, nullptr, 0).ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->size(), 0u);
  EXPECT_TRUE((*ckpt)->Names().empty());
}

// ---------------------------------------------------------------------------
// Writer errors.

TEST_F(SafetensorsTest, WriterRejectsBadSpecs) {
  const TensorFill zeros = [](size_t, std::span<std::byte> out) {
    std::fill(out.begin(), out.end(), std::byte{0});
    return absl::OkStatus();
  };
  const std::string path = Path("bad.safetensors");
  const std::vector<TensorSpec> dup = {{"w", DType::kF32, {1}},
                                       {"w", DType::kF16, {2}}};
  EXPECT_TRUE(HasError(WriteSafetensors(path, dup, zeros),
                       absl::StatusCode::kInvalidArgument, "appears twice"));
  EXPECT_TRUE(HasError(WriteSafetensors(path, dup, zeros),
                       absl::StatusCode::kInvalidArgument, path));
  EXPECT_TRUE(HasError(WriteCheckpoint(dir_, dup, zeros, 0),
                       absl::StatusCode::kInvalidArgument, "appears twice"));
  const std::vector<TensorSpec> empty_name = {{"", DType::kF32, {1}}};
  EXPECT_TRUE(HasError(WriteSafetensors(path, empty_name, zeros),
                       absl::StatusCode::kInvalidArgument, "empty name"));
  const std::vector<TensorSpec> reserved = {{"__metadata__", DType::kF32, {1}}};
  EXPECT_TRUE(HasError(WriteSafetensors(path, reserved, zeros),
                       absl::StatusCode::kInvalidArgument, "reserved name"));
  const std::vector<TensorSpec> negative = {{"w", DType::kF32, {2, -1}}};
  EXPECT_TRUE(HasError(WriteSafetensors(path, negative, zeros),
                       absl::StatusCode::kInvalidArgument,
                       "negative dimension"));
  const std::vector<TensorSpec> bad_utf8 = {{"w\xff", DType::kF32, {1}}};
  EXPECT_TRUE(HasError(WriteSafetensors(path, bad_utf8, zeros),
                       absl::StatusCode::kInvalidArgument, "UTF-8"));
  EXPECT_TRUE(HasError(WriteSafetensors(path, dup, nullptr),
                       absl::StatusCode::kInvalidArgument, "fill is empty"));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST_F(SafetensorsTest, FillErrorAbortsAndLeavesNoFile) {
  TensorSet set = MixedTensors();
  const TensorFill inner = set.Fill();
  const TensorFill failing = [&](size_t i, std::span<std::byte> out) {
    if (i == 2) return absl::DataLossError("disk on fire");
    return inner(i, out);
  };
  const std::string path = Path("model.safetensors");
  const absl::Status status = WriteSafetensors(path, set.specs, failing);
  EXPECT_TRUE(HasError(status, absl::StatusCode::kDataLoss, "disk on fire"));
  EXPECT_TRUE(HasError(status, absl::StatusCode::kDataLoss,
                       "model.layers.0.input_layernorm.weight"));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

// ---------------------------------------------------------------------------
// SafetensorsFile::Open validation. Each test writes a valid file and then
// breaks one thing.

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  EXPECT_TRUE(HasError(SafetensorsFile::Open(Path("nope.safetensors")).status(),
                       absl::StatusCode::kNotFound, "nope.safetensors"));
}

TEST_F(SafetensorsTest, DirectoryIsNotAFile) {
  EXPECT_TRUE(HasError(SafetensorsFile::Open(dir_).status(),
                       absl::StatusCode::kInvalidArgument,
                       "not a regular file"));
}

TEST_F(SafetensorsTest, EmptyFile) {
  const std::string path = WriteSmallFile();
  fs::resize_file(path, 0);
  EXPECT_TRUE(HasError(SafetensorsFile::Open(path).status(),
                       absl::StatusCode::kInvalidArgument,
                       "shorter than 8 bytes"));
}

TEST_F(SafetensorsTest, FileShorterThanLengthField) {
  const std::string path = WriteSmallFile();
  fs::resize_file(path, 5);
  const absl::Status status = SafetensorsFile::Open(path).status();
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument,
                       "shorter than 8 bytes"));
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument, path));
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  const std::string path = WriteSmallFile();
  fs::resize_file(path, 20);  // cuts into the header
  EXPECT_TRUE(HasError(SafetensorsFile::Open(path).status(),
                       absl::StatusCode::kInvalidArgument,
                       "larger than the file"));
}

TEST_F(SafetensorsTest, HeaderLengthAbsurd) {
  const std::string path = WriteSmallFile();
  std::string bytes = ReadBytes(path);
  bytes.replace(0, 8, LengthPrefix(uint64_t{1} << 40));
  WriteBytes(path, bytes);
  EXPECT_TRUE(HasError(SafetensorsFile::Open(path).status(),
                       absl::StatusCode::kInvalidArgument, "absurdly large"));
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  const std::string path = WriteSmallFile();
  const FileParts parts = SplitFile(path);
  WriteBytes(path, AssembleFile(R"({"a":{"dtype":"F32",)", parts.data));
  EXPECT_TRUE(HasError(SafetensorsFile::Open(path).status(),
                       absl::StatusCode::kInvalidArgument, "not valid JSON"));
}

TEST_F(SafetensorsTest, HeaderNotObject) {
  EXPECT_TRUE(HasError(OpenWithHeader(Json::array({1, 2, 3})),
                       absl::StatusCode::kInvalidArgument,
                       "not a JSON object"));
}

TEST_F(SafetensorsTest, DuplicateTensorInHeader) {
  const std::string path = WriteSmallFile();
  const FileParts parts = SplitFile(path);
  const std::string a = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string b = R"({"dtype":"F16","shape":[4],"data_offsets":[8,16]})";
  WriteBytes(path, AssembleFile(absl::StrCat(R"({"a":)", a, R"(,"b":)", b,
                                             R"(,"a":)", a, "}"),
                                parts.data));
  EXPECT_TRUE(HasError(SafetensorsFile::Open(path).status(),
                       absl::StatusCode::kInvalidArgument, "listed twice"));
}

TEST_F(SafetensorsTest, MissingFields) {
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    const std::string path = WriteSmallFile();
    Json header = SplitFile(path).header;
    header["b"].erase(field);
    RewriteHeader(path, header);
    const absl::Status status = SafetensorsFile::Open(path).status();
    EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument,
                         absl::StrCat("tensor 'b': missing ", field)));
    EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument, path));
  }
}

TEST_F(SafetensorsTest, WrongJsonTypes) {
  struct Case {
    const char* field;
    Json value;
    const char* phrase;
  };
  const std::vector<Case> cases = {
      {"dtype", 7, "dtype is not a string"},
      {"shape", "2,2", "shape is not an array"},
      {"shape", Json::array({2, 2.5}), "not an integer"},
      {"data_offsets", Json::array({8, 12, 16}), "[begin, end]"},
      {"data_offsets", Json::array({-8, 16}), "non-negative integers"},
      {"data_offsets", "8:16", "[begin, end]"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.phrase);
    const std::string path = WriteSmallFile();
    Json header = SplitFile(path).header;
    header["b"][c.field] = c.value;
    RewriteHeader(path, header);
    EXPECT_TRUE(HasError(SafetensorsFile::Open(path).status(),
                         absl::StatusCode::kInvalidArgument, c.phrase));
  }
  Json header = SplitFile(WriteSmallFile()).header;
  header["b"] = Json::array({1});
  EXPECT_TRUE(HasError(OpenWithHeader(header),
                       absl::StatusCode::kInvalidArgument,
                       "entry is not a JSON object"));
}

TEST_F(SafetensorsTest, UnsupportedDtype) {
  for (const char* dtype : {"I64", "F8_E4M3", "F64", "f32", "BOOL"}) {
    SCOPED_TRACE(dtype);
    Json header = SplitFile(WriteSmallFile()).header;
    header["b"]["dtype"] = dtype;
    const absl::Status status = OpenWithHeader(header);
    EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument,
                         "unsupported dtype"));
    EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument,
                         absl::StrCat("'", dtype, "'")));
    EXPECT_TRUE(
        HasError(status, absl::StatusCode::kInvalidArgument, "tensor 'b'"));
  }
}

TEST_F(SafetensorsTest, NegativeDimension) {
  Json header = SplitFile(WriteSmallFile()).header;
  header["b"]["shape"] = Json::array({-2, -2});
  EXPECT_TRUE(HasError(OpenWithHeader(header),
                       absl::StatusCode::kInvalidArgument,
                       "negative dimension -2"));
}

TEST_F(SafetensorsTest, BeginAfterEnd) {
  Json header = SplitFile(WriteSmallFile()).header;
  header["b"]["data_offsets"] = Json::array({16, 8});
  EXPECT_TRUE(HasError(OpenWithHeader(header),
                       absl::StatusCode::kInvalidArgument, "begin > end"));
}

TEST_F(SafetensorsTest, TruncatedData) {
  const std::string path = WriteSmallFile();
  fs::resize_file(path, fs::file_size(path) - 3);
  const absl::Status status = SafetensorsFile::Open(path).status();
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument,
                       "beyond the data section"));
  EXPECT_TRUE(
      HasError(status, absl::StatusCode::kInvalidArgument, "tensor 'b'"));
}

TEST_F(SafetensorsTest, ShapeDoesNotMatchOffsets) {
  Json header = SplitFile(WriteSmallFile()).header;
  header["a"]["shape"] = Json::array({3});
  EXPECT_TRUE(HasError(
      OpenWithHeader(header), absl::StatusCode::kInvalidArgument,
      "tensor 'a': shape [3] of dtype F32 needs 12 bytes but data_offsets "
      "span 8"));
}

TEST_F(SafetensorsTest, ShapeOverflow) {
  Json header = SplitFile(WriteSmallFile()).header;
  header["a"]["shape"] = Json::array({uint64_t{1} << 40, uint64_t{1} << 40});
  EXPECT_TRUE(HasError(OpenWithHeader(header),
                       absl::StatusCode::kInvalidArgument, "overflows"));
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  Json header = SplitFile(WriteSmallFile()).header;
  // "b" is F16 [2, 2] = 8 bytes; move it to start inside "a".
  header["b"]["data_offsets"] = Json::array({4, 12});
  EXPECT_TRUE(HasError(OpenWithHeader(header),
                       absl::StatusCode::kInvalidArgument, "overlap"));
}

TEST_F(SafetensorsTest, HoleBetweenTensors) {
  const std::string path = WriteSmallFile();
  FileParts parts = SplitFile(path);
  parts.header["b"]["data_offsets"] = Json::array({12, 20});
  parts.data.append(4, '\0');
  WriteBytes(path, AssembleFile(parts.header.dump(), parts.data));
  EXPECT_TRUE(HasError(SafetensorsFile::Open(path).status(),
                       absl::StatusCode::kInvalidArgument, "hole of 4 bytes"));
}

TEST_F(SafetensorsTest, TrailingBytesAfterLastTensor) {
  const std::string path = WriteSmallFile();
  std::string bytes = ReadBytes(path);
  bytes.append("junk");
  WriteBytes(path, bytes);
  EXPECT_TRUE(HasError(SafetensorsFile::Open(path).status(),
                       absl::StatusCode::kInvalidArgument, "trailing bytes"));
}

TEST_F(SafetensorsTest, MetadataMustMapStringsToStrings) {
  Json header = SplitFile(WriteSmallFile()).header;
  header["__metadata__"] = {{"format", "pt"}, {"step", 1000}};
  EXPECT_TRUE(HasError(OpenWithHeader(header),
                       absl::StatusCode::kInvalidArgument,
                       "value for key 'step' is not a string"));
  header["__metadata__"] = Json::array({"pt"});
  EXPECT_TRUE(HasError(OpenWithHeader(header),
                       absl::StatusCode::kInvalidArgument,
                       "__metadata__ is not a JSON object"));
}

// ---------------------------------------------------------------------------
// Checkpoint::Open validation.

class ShardedCheckpointTest : public SafetensorsTest {
 protected:
  // Three shards: {t0, t1}, {t2}, {t3}.
  void SetUp() override {
    SafetensorsTest::SetUp();
    set_.Add("t0", DType::kF32, {8});    // 32
    set_.Add("t1", DType::kF32, {8});    // 32
    set_.Add("t2", DType::kBF16, {20});  // 40
    set_.Add("t3", DType::kF16, {30});   // 60
    ASSERT_TRUE(WriteCheckpoint(dir_, set_.specs, set_.Fill(), 64).ok());
    ASSERT_TRUE(fs::exists(Path(Shard(3))));
  }
  static std::string Shard(int i) {
    return absl::StrCat("model-0000", i, "-of-00003.safetensors");
  }
  Json Index() const {
    return Json::parse(ReadBytes(Path("model.safetensors.index.json")));
  }
  void SetIndex(const Json& index) {
    WriteBytes(Path("model.safetensors.index.json"), index.dump(2));
  }
  absl::Status OpenStatus() const { return Checkpoint::Open(dir_).status(); }

  TensorSet set_;
};

TEST_F(ShardedCheckpointTest, Valid) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectSameTensors(set_, **ckpt);
}

TEST_F(ShardedCheckpointTest, NeitherFile) {
  fs::remove(Path("model.safetensors.index.json"));
  const absl::Status status = OpenStatus();
  EXPECT_TRUE(
      HasError(status, absl::StatusCode::kNotFound, Path("model.safetensors")));
  EXPECT_TRUE(HasError(status, absl::StatusCode::kNotFound,
                       Path("model.safetensors.index.json")));
}

TEST_F(ShardedCheckpointTest, IndexNotJson) {
  WriteBytes(Path("model.safetensors.index.json"), "{\"weight_map\": {");
  EXPECT_TRUE(HasError(OpenStatus(), absl::StatusCode::kInvalidArgument,
                       "model.safetensors.index.json: not valid JSON"));
  SetIndex(Json::array());
  EXPECT_TRUE(HasError(OpenStatus(), absl::StatusCode::kInvalidArgument,
                       "not a JSON object"));
}

TEST_F(ShardedCheckpointTest, WeightMapMissingOrWrongType) {
  Json index = Index();
  index.erase("weight_map");
  SetIndex(index);
  EXPECT_TRUE(HasError(OpenStatus(), absl::StatusCode::kInvalidArgument,
                       "missing weight_map"));
  index["weight_map"] = Json::array();
  SetIndex(index);
  EXPECT_TRUE(HasError(OpenStatus(), absl::StatusCode::kInvalidArgument,
                       "weight_map is not a JSON object"));
}

TEST_F(ShardedCheckpointTest, ShardOutsideDirectory) {
  Json index = Index();
  index["weight_map"]["t3"] = "../elsewhere.safetensors";
  SetIndex(index);
  EXPECT_TRUE(HasError(OpenStatus(), absl::StatusCode::kInvalidArgument,
                       "not a file name inside the checkpoint"));
}

TEST_F(ShardedCheckpointTest, ShardMissing) {
  fs::remove(Path(Shard(2)));
  const absl::Status status = OpenStatus();
  EXPECT_TRUE(HasError(status, absl::StatusCode::kNotFound, Shard(2)));
  EXPECT_TRUE(HasError(status, absl::StatusCode::kNotFound, "missing"));
}

TEST_F(ShardedCheckpointTest, CorruptShardReportsShardAndTensor) {
  const std::string path = Path(Shard(3));
  Json header = SplitFile(path).header;
  header["t3"]["dtype"] = "I64";
  RewriteHeader(path, header);
  const absl::Status status = OpenStatus();
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument, path));
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument,
                       "tensor 't3': unsupported dtype 'I64'"));
}

TEST_F(ShardedCheckpointTest, ListedTensorAbsentFromShard) {
  Json index = Index();
  index["weight_map"]["ghost"] = Shard(2);
  SetIndex(index);
  const absl::Status status = OpenStatus();
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument,
                       "lists tensor 'ghost'"));
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument,
                       "does not contain it"));
}

TEST_F(ShardedCheckpointTest, ShardTensorNotListed) {
  Json index = Index();
  index["weight_map"].erase("t1");
  SetIndex(index);
  EXPECT_TRUE(HasError(OpenStatus(), absl::StatusCode::kInvalidArgument,
                       "tensor 't1': present in the shard but not listed"));
}

TEST_F(ShardedCheckpointTest, ShardTensorListedForOtherShard) {
  Json index = Index();
  index["weight_map"]["t1"] = Shard(2);
  SetIndex(index);
  EXPECT_TRUE(HasError(OpenStatus(), absl::StatusCode::kInvalidArgument,
                       absl::StrCat("lists it for shard '", Shard(2), "'")));
}

TEST_F(ShardedCheckpointTest, SameTensorInTwoShards) {
  // Rewrite shard 2 so it also carries t0.
  const std::vector<TensorSpec> specs = {set_.specs[2], set_.specs[0]};
  const TensorFill inner = set_.Fill();
  ASSERT_TRUE(WriteSafetensors(Path(Shard(2)), specs,
                               [&](size_t i, std::span<std::byte> out) {
                                 return inner(i == 0 ? 2 : 0, out);
                               })
                  .ok());
  const absl::Status status = OpenStatus();
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument,
                       "tensor 't0' is in two shards"));
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument, Shard(1)));
  EXPECT_TRUE(HasError(status, absl::StatusCode::kInvalidArgument, Shard(2)));
}

}  // namespace
}  // namespace duet::model
