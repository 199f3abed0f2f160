// The HDF5 layer (common/hdf5.h) every file format of llmrec stands on:
// typed datasets and hyperslab rows read back exactly, strings and
// attributes, a file that exists under its name only once committed, a
// flipped byte caught by the Fletcher32 checksum, and errors that name the
// file and the object.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/hdf5.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class Hdf5Test : public ::testing::Test {
 protected:
  fs::path dir_ = fs::temp_directory_path() / ("llmrec_hdf5_test_" + std::to_string(::getpid()));
  void SetUp() override { fs::create_directories(dir_); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
};

TEST_F(Hdf5Test, DatasetsStringsAndAttributesReadBackExactly) {
  const std::vector<std::int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  const std::vector<double> weights = {0.1, -2.5e300, 3.0};
  const std::vector<std::string> ids = {"u1", "", "crème brûlée", std::string(300, 'x')};
  {
    auto f = h5::File::create(path("a.h5"));
    f.write<std::int32_t>("items/tokens", tokens.data(), {4, 3});
    f.write("weights", weights);
    f.write_strings("users/ids", ids);
    f.set_attr("/", "format", "llmrec-test");
    f.set_attr("/", "version", std::int64_t{-7});
    f.set_attr("items/tokens", "unit", "pieces");
    f.commit();
  }
  auto g = h5::File::open(path("a.h5"));
  EXPECT_EQ(g.shape("items/tokens"), (std::vector<std::uint64_t>{4, 3}));
  EXPECT_EQ(g.read<std::int32_t>("items/tokens"), tokens);
  EXPECT_EQ(g.read_rows<std::int32_t>("items/tokens", 1, 2), (std::vector<std::int32_t>{4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(g.read<double>("weights"), weights);
  EXPECT_EQ(g.read_strings("users/ids"), ids);
  EXPECT_EQ(g.attr_string("/", "format"), "llmrec-test");
  EXPECT_EQ(g.attr_int("/", "version"), -7);
  EXPECT_EQ(g.attr_string("items/tokens", "unit"), "pieces");
  EXPECT_TRUE(g.exists("items/tokens"));
  EXPECT_FALSE(g.exists("items/none"));
  EXPECT_FALSE(g.has_attr("/", "missing"));
}

TEST_F(Hdf5Test, AFileHasItsNameOnlyOnceCommitted) {
  {
    auto f = h5::File::create(path("b.h5"));
    f.write("x", std::vector<std::int64_t>{1, 2, 3});
    EXPECT_FALSE(fs::exists(path("b.h5"))) << "visible before commit()";
  }  // never committed: as if the writer crashed
  EXPECT_FALSE(fs::exists(path("b.h5")));
  auto f = h5::File::create(path("b.h5"));
  f.write("x", std::vector<std::int64_t>{1, 2, 3});
  f.commit();
  EXPECT_TRUE(fs::exists(path("b.h5")));
}

TEST_F(Hdf5Test, ErrorsNameTheFileAndTheObject) {
  {
    auto f = h5::File::create(path("c.h5"));
    f.write("x", std::vector<std::int64_t>{1, 2, 3});
    f.commit();
  }
  auto g = h5::File::open(path("c.h5"));
  try {
    g.read<std::int64_t>("nope");
    FAIL() << "a missing dataset was read";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("c.h5"));
    EXPECT_THAT(e.what(), HasSubstr("nope"));
  }
  EXPECT_THROW(g.read_rows<std::int64_t>("x", 2, 5), IoError);  // rows past the end
  EXPECT_THROW(g.attr_int("/", "missing"), IoError);
  std::ofstream(path("junk.h5")) << "not hdf5 at all";
  try {
    h5::File::open(path("junk.h5"));
    FAIL() << "a text file was opened as HDF5";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("junk.h5"));
  }
}

TEST_F(Hdf5Test, AFlippedByteIsCaughtByTheChecksum) {
  const std::vector<std::int64_t> values(4096, 0x0123456789abcdefLL);
  {
    auto f = h5::File::create(path("d.h5"));
    f.write("values", values);
    f.commit();
  }
  std::string bytes;
  {
    std::ifstream in(path("d.h5"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  // Flip one byte inside the data (the 8-byte pattern is found there only).
  const std::string needle("\xef\xcd\xab\x89\x67\x45\x23\x01", 8);
  const std::size_t at = bytes.find(needle);
  ASSERT_NE(at, std::string::npos);
  bytes[at + std::size_t{8} * 100 + 3] ^= 0x10;
  std::ofstream(path("d.h5"), std::ios::binary | std::ios::trunc) << bytes;
  auto g = h5::File::open(path("d.h5"));
  try {
    g.read<std::int64_t>("values");
    FAIL() << "a damaged dataset was read without an error";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("d.h5"));
    EXPECT_THAT(e.what(), HasSubstr("values"));
  }
}

}  // namespace
}  // namespace llmrec
