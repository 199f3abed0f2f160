// safetensors: round trips of every dtype, byte layout, and hostile files
// (truncations, lying header lengths, bad JSON, bad offsets, shapes, dtypes,
// duplicate names) that must each give a clean IoError naming the file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "models/safetensors.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string u64_le(std::uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

/// A file from a raw header text and data bytes.
std::string make_file(const std::string& header, const std::string& data) {
  return u64_le(header.size()) + header + data;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The IoError message of parsing `bytes` ("" when it parsed: a failure).
std::string parse_error(const std::string& bytes, const std::string& name = "hostile.safetensors") {
  try {
    parse_safetensors(bytes, name);
  } catch (const IoError& e) {
    return e.what();
  }
  return "";
}

class SafetensorsTest : public ::testing::Test {
 protected:
  fs::path dir_ = fs::temp_directory_path() / ("llmrec_safetensors_test_" + std::to_string(::getpid()));
  void SetUp() override { fs::create_directories(dir_); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  /// One tensor of every dtype, with values that survive each dtype exactly.
  static std::map<std::string, at::Tensor> all_dtypes() {
    std::map<std::string, at::Tensor> t;
    t["f32"] = torch::tensor({1.5f, -2.25f, 3.0e-8f, 1e30f}).reshape({2, 2});
    t["f64"] = torch::tensor({0.1, -1e-300, 1e300}, torch::kDouble);
    t["f16"] = torch::tensor({0.5, -65504.0, 1.0 / 1024}).to(torch::kHalf);
    t["bf16"] = torch::tensor({0.5, -3.0, 1e38}).to(torch::kBFloat16);
    t["i64"] = torch::tensor({INT64_MIN, INT64_C(-1), INT64_MAX}, torch::kLong);
    t["i32"] = torch::tensor({INT32_MIN, 0, INT32_MAX}, torch::kInt);
    t["i16"] = torch::tensor({-32768, 7, 32767}).to(torch::kShort);
    t["i8"] = torch::tensor({-128, 0, 127}).to(torch::kChar);
    t["u8"] = torch::tensor({0, 128, 255}).to(torch::kByte);
    t["bool"] = torch::tensor({true, false, true}).to(torch::kBool);
    t["scalar"] = torch::tensor(42.0f);  // shape []
    t["empty"] = torch::zeros({0, 3});   // no bytes
    t["noncontig"] = torch::arange(12, torch::kFloat).reshape({3, 4}).t();
    return t;
  }
};

TEST_F(SafetensorsTest, RoundTripsEveryDtype) {
  auto tensors = all_dtypes();
  write_safetensors(path("all.safetensors"), tensors, {{"format", "pt"}, {"note", "ünïcode ok"}});
  SafetensorsFile back = read_safetensors(path("all.safetensors"));
  ASSERT_EQ(back.tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    ASSERT_EQ(back.tensors.count(name), 1u);
    const at::Tensor& b = back.tensors.at(name);
    EXPECT_EQ(b.scalar_type(), t.scalar_type());
    EXPECT_EQ(b.sizes(), t.sizes());
    EXPECT_TRUE(torch::equal(b, t));
  }
  EXPECT_EQ(back.metadata.at("format"), "pt");
  EXPECT_EQ(back.metadata.at("note"), "ünïcode ok");
  // The in-memory parser reads the same bytes identically.
  SafetensorsFile again = parse_safetensors(slurp(path("all.safetensors")), "mem");
  for (const auto& [name, t] : tensors) EXPECT_TRUE(torch::equal(again.tensors.at(name), t)) << name;
}

TEST_F(SafetensorsTest, LayoutMatchesTheFormat) {
  write_safetensors(path("l.safetensors"),
                    {{"b", torch::tensor({1.0f, 2.0f})}, {"a", torch::tensor({7}, torch::kLong)}});
  std::string bytes = slurp(path("l.safetensors"));
  ASSERT_GE(bytes.size(), 8u);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u) << "header padded to 8 bytes";
  std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.find_last_not_of(' ') + 1, header.rfind('}') + 1) << "padding is spaces";
  // Name order: "a" (I64, 8 bytes) at [0, 8], then "b" (2 x F32) at [8, 16].
  EXPECT_THAT(header, HasSubstr(R"("a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]})"));
  EXPECT_THAT(header, HasSubstr(R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]})"));
  EXPECT_EQ(bytes.size(), 8 + n + 16);
  float f[2];
  std::memcpy(f, bytes.data() + 8 + n + 8, 8);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], 2.0f);
  EXPECT_FALSE(fs::exists(path("l.safetensors") + ".tmp." + std::to_string(::getpid())));
}

TEST_F(SafetensorsTest, ReadsTheGoldenFileLayout) {
  // Hand-made like make_tiny_bert.py writes: compact JSON, metadata first.
  std::string data(12, '\0');
  float v[3] = {1, 2, 3};
  std::memcpy(data.data(), v, 12);
  std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  SafetensorsFile f = parse_safetensors(make_file(header, data), "hand");
  EXPECT_TRUE(torch::equal(f.tensors.at("w"), torch::tensor({1.0f, 2.0f, 3.0f})));
}

TEST_F(SafetensorsTest, EveryTruncationIsACleanError) {
  write_safetensors(path("t.safetensors"), all_dtypes(), {{"format", "pt"}});
  const std::string bytes = slurp(path("t.safetensors"));
  for (std::size_t k = 0; k < bytes.size(); ++k) {
    std::string message = parse_error(bytes.substr(0, k), "cut.safetensors");
    ASSERT_THAT(message, HasSubstr("cut.safetensors")) << "truncated at " << k << " of " << bytes.size();
  }
  // The file reader, too, at a few offsets.
  for (std::size_t k : {std::size_t{0}, std::size_t{5}, std::size_t{8}, std::size_t{40}, bytes.size() - 1}) {
    std::ofstream(path("cut.safetensors"), std::ios::binary | std::ios::trunc) << bytes.substr(0, k);
    try {
      read_safetensors(path("cut.safetensors"));
      FAIL() << "truncated file at " << k << " was read";
    } catch (const IoError& e) {
      EXPECT_THAT(e.what(), HasSubstr(path("cut.safetensors")));
    }
  }
  // Trailing garbage is not described by the header either.
  EXPECT_THAT(parse_error(bytes + "x"), HasSubstr("after the last tensor"));
}

TEST_F(SafetensorsTest, HeaderLengthLies) {
  const std::string header = R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  EXPECT_THAT(parse_error(u64_le(UINT64_MAX) + header + "ab"), HasSubstr("exceeds"));
  EXPECT_THAT(parse_error(u64_le(UINT64_MAX - 4) + header + "ab"), HasSubstr("exceeds"));
  EXPECT_THAT(parse_error(u64_le(1ull << 40) + header + "ab"), HasSubstr("exceeds"));
  EXPECT_THAT(parse_error(u64_le(header.size() + 100) + header + "ab"),
              HasSubstr("past the end of the file"));
  EXPECT_THAT(parse_error(u64_le(0) + header + "ab"), HasSubstr("too short"));
  EXPECT_THAT(parse_error(std::string("\x05\x00\x00", 3)), HasSubstr("too short"));
  // Valid length, file cut inside the header.
  EXPECT_THAT(parse_error(u64_le(header.size()) + header.substr(0, 10)), HasSubstr("past the end"));
}

TEST_F(SafetensorsTest, HostileHeaders) {
  struct Case {
    const char* what;
    std::string header;
    std::string data;
    const char* expect;
  };
  const std::string four(4, '\0');
  const std::vector<Case> cases = {
      {"invalid JSON", R"({"w":{"dtype":"F32",)", four, "not valid JSON"},
      {"not UTF-8", "{\"w\xff\":1}", four, "not valid JSON"},
      {"array header", R"([1,2,3])", "", "not a JSON object"},
      {"string header", R"("x")", "", "not a JSON object"},
      {"deep nesting", std::string(5000, '[') + std::string(5000, ']'), "", "nested deeper"},
      {"entry not object", R"({"w":[1]})", "", "not a JSON object"},
      {"unknown dtype", R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", four,
       "unknown or unsupported dtype 'F8_E4M3'"},
      {"dtype not string", R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", four,
       "non-string 'dtype'"},
      {"missing shape", R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", four, "'shape'"},
      {"negative dim", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", four,
       "negative dimension"},
      {"float dim", R"({"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", four, "non-integer"},
      {"overflow numel", R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})",
       four, "overflows"},
      {"overflow bytes", R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]}})", four,
       "overflows"},
      {"span != shape", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", four,
       "span 4 bytes but shape [2] of F32 needs 8"},
      {"offsets past data", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", four,
       "past the data region"},
      {"huge offsets",
       R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]}})", four,
       "past the data region"},
      {"negative offset", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", four, "non-negative"},
      {"reversed offsets", R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", four, "end before"},
      {"three offsets", R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4,4]}})", four, "[begin, end]"},
      {"overlap",
       R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"U8","shape":[3],"data_offsets":[1,4]}})",
       four, "overlap tensor 'a'"},
      {"hole", R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", four, "hole"},
      {"duplicate names",
       R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
       four, "duplicate tensor name 'w'"},
      {"duplicate field", R"({"w":{"dtype":"U8","dtype":"F32","shape":[4],"data_offsets":[0,4]}})", four,
       "duplicate field 'dtype'"},
      {"unknown field", R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4],"x":1}})", four,
       "unknown field 'x'"},
      {"metadata not object", R"({"__metadata__":"pt"})", "", "'__metadata__' is not a JSON object"},
      {"metadata number", R"({"__metadata__":{"format":1}})", "", "value of 'format' is not a string"},
      {"bad bool byte", R"({"b":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}})",
       std::string("\x01\x00\x02\x00", 4), "BOOL byte 2 is 2"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    std::string message = parse_error(make_file(c.header, c.data), "hostile.safetensors");
    EXPECT_THAT(message, HasSubstr("hostile.safetensors"));
    EXPECT_THAT(message, HasSubstr(c.expect));
  }
  // Names of the tensor at fault are in the message.
  EXPECT_THAT(
      parse_error(make_file(R"({"layer.7.w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", four)),
      HasSubstr("tensor 'layer.7.w'"));
}

TEST_F(SafetensorsTest, EmptyFileAndNoTensors) {
  SafetensorsFile f = parse_safetensors(make_file("{}", ""), "empty");
  EXPECT_TRUE(f.tensors.empty());
  write_safetensors(path("none.safetensors"), {});
  EXPECT_TRUE(read_safetensors(path("none.safetensors")).tensors.empty());
  { std::ofstream zero(path("zero.safetensors"), std::ios::binary | std::ios::trunc); }
  EXPECT_THROW(read_safetensors(path("zero.safetensors")), IoError);
  EXPECT_THROW(read_safetensors(path("does-not-exist.safetensors")), IoError);
}

TEST_F(SafetensorsTest, WriterRejectsWhatItCannotStore) {
  EXPECT_THROW(write_safetensors(path("c.safetensors"), {{"c", torch::zeros({2}, torch::kComplexFloat)}}),
               IoError);
  EXPECT_THROW(write_safetensors(path("u.safetensors"), {{"u", torch::Tensor()}}), IoError);
  EXPECT_THROW(write_safetensors(path("m.safetensors"), {{"__metadata__", torch::zeros({1})}}), IoError);
  EXPECT_THROW(
      write_safetensors((dir_ / "no" / "such" / "dir.safetensors").string(), {{"x", torch::zeros({1})}}),
      IoError);
  EXPECT_FALSE(fs::exists(path("c.safetensors")));
  // A failed write leaves an existing file untouched.
  write_safetensors(path("keep.safetensors"), {{"x", torch::ones({2})}});
  EXPECT_THROW(write_safetensors(path("keep.safetensors"), {{"x", torch::zeros({2}, torch::kComplexFloat)}}),
               IoError);
  EXPECT_TRUE(torch::equal(read_safetensors(path("keep.safetensors")).tensors.at("x"), torch::ones({2})));
}

}  // namespace
}  // namespace llmrec
