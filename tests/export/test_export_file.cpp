// Hostile and damaged export files: every defect is an IoError naming the
// file and the dataset (or attribute), never a crash or a wrong answer.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>

#include "export/export_file.h"
#include "tests/export/export_fixture.h"

namespace llmrec {
namespace {

using llmrec::testing::ExportFixture;
using llmrec::testing::ExportSpec;
using llmrec::testing::WriteHooks;
using ::testing::HasSubstr;

class ExportReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = llmrec::testing::temp_dir("serving_reader");
    ExportSpec spec;
    spec.items = 300;
    spec.users = 12;
    spec.layers = 1;  // encoder layers too
    fx_ = llmrec::testing::make_export_fixture(spec);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const ExportFixture& f, const WriteHooks& hooks = {}) {
    std::string path = dir_ + "/e" + std::to_string(n_++) + ".h5";
    llmrec::testing::write_export_fixture(path, f, hooks);
    return path;
  }

  /// read_export(path) fails with an IoError containing the path and `needle`.
  void expect_refused(const std::string& path, const std::string& needle) {
    try {
      read_export(path);
      ADD_FAILURE() << "loaded; expected an error about " << needle;
    } catch (const IoError& e) {
      EXPECT_THAT(e.what(), HasSubstr(path));
      EXPECT_THAT(e.what(), HasSubstr(needle));
    }
  }

  std::string dir_;
  int n_ = 0;
  ExportFixture fx_;
};

TEST_F(ExportReaderTest, AValidFileLoads) {
  auto e = read_export(write(fx_));
  EXPECT_EQ(e->num_items, 300);
  EXPECT_EQ(e->ranker_layers, 1);
  EXPECT_EQ(e->cf_k, fx_.spec.cf_k);
  EXPECT_EQ(e->find_item("i7"), 7);
  EXPECT_EQ(e->find_user("u3"), 3);
  EXPECT_EQ(e->find_item("nope"), -1);
  EXPECT_EQ(e->history_offsets, fx_.offsets);
  EXPECT_EQ(e->hour_counts, fx_.hour_counts);
}

TEST_F(ExportReaderTest, PoolingComesFromTheFileAndOlderFilesMeanAttention) {
  ExportSpec spec = fx_.spec;
  for (const std::string pooling : {"mean", "causal"}) {
    spec.pooling = pooling;
    const ExportFixture fixture = llmrec::testing::make_export_fixture(spec);
    auto e = read_export(write(fixture));
    EXPECT_EQ(e->ranker_pooling, pooling);
    auto mine = fixture.tower->named_parameters();
    for (const auto& p : e->tower->named_parameters()) {
      ASSERT_NE(mine.find(p.key()), nullptr) << p.key();
      EXPECT_TRUE(torch::equal(p.value(), mine[p.key()])) << p.key();
    }
    EXPECT_EQ(e->tower->named_parameters().size(), mine.size()) << pooling;
  }
  // An export written before the attribute existed is an attention tower.
  WriteHooks old;
  old.skip = {"ranker_pooling"};
  EXPECT_EQ(read_export(write(fx_, old))->ranker_pooling, "attention");
}

TEST_F(ExportReaderTest, TruncatedFilesAreRefused) {
  const std::string path = write(fx_);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  for (double keep : {0.0, 0.001, 0.1, 0.5, 0.9, 0.999}) {
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        << bytes.substr(0, static_cast<std::size_t>(static_cast<double>(bytes.size()) * keep));
    EXPECT_THROW(read_export(path), IoError) << "kept " << keep;
  }
}

TEST_F(ExportReaderTest, DamagedBytesAreRefusedOrHarmless) {
  const std::string path = write(fx_);
  auto good = read_export(path);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  int refused = 0;
  for (int k = 1; k <= 40; ++k) {
    std::string damaged = bytes;
    const std::size_t at = damaged.size() * static_cast<std::size_t>(k) / 41;
    damaged[at] = static_cast<char>(damaged[at] ^ 0x5A);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << damaged;
    try {
      auto e = read_export(path);
      // A byte HDF5 never reads: the same contents.
      EXPECT_EQ(e->item_keys, good->item_keys) << "byte " << at;
      EXPECT_EQ(e->item_ids, good->item_ids) << "byte " << at;
      EXPECT_EQ(e->cf_neighbours, good->cf_neighbours) << "byte " << at;
    } catch (const IoError& e) {
      EXPECT_THAT(e.what(), HasSubstr(path));
      ++refused;
    }
  }
  EXPECT_GT(refused, 20);
}

TEST_F(ExportReaderTest, WrongAttributesAreRefused) {
  auto with_attr = [&](const char* key, auto value) {
    WriteHooks h;
    h.skip = {key};
    h.tamper = [key, value](h5::File& g) { g.set_attr("/", key, value); };
    return write(fx_, h);
  };
  expect_refused(with_attr("format", std::string("llmrec-checkpoint")), "'format'");
  expect_refused(with_attr("version", std::int64_t{2}), "version 2");
  expect_refused(with_attr("dim", std::int64_t{15}), "ranker_heads");  // 2 heads no longer divide 15
  expect_refused(with_attr("dim", std::int64_t{32}), "items/vectors");
  expect_refused(with_attr("num_items", std::int64_t{301}), "items/ids");
  expect_refused(with_attr("num_users", std::int64_t{-1}), "'num_users'");
  expect_refused(with_attr("history", std::int64_t{0}), "'history'");
  expect_refused(with_attr("history", std::int64_t{9}), "positions");
  expect_refused(with_attr("score", std::string("cosine")), "'score'");
  expect_refused(with_attr("dim", std::string("16")), "dim");
  expect_refused(with_attr("event_types", std::string("view,click")), "'event_types'");
  expect_refused(with_attr("fusion", std::string(R"({"itemknn": -1})")), "'fusion'");
  expect_refused(with_attr("ranker_layers", std::int64_t{0}), "ranker_layers");
  expect_refused(with_attr("ranker_layers", std::int64_t{2}), "layers.1");
  expect_refused(with_attr("ranker_pooling", std::string("max")), "'ranker_pooling'");
  expect_refused(with_attr("ranker_pooling", std::string("mean")), "ranker/query");  // an attention tower
  expect_refused(with_attr("ranker_pooling", std::string("causal")), "ranker/query");
  WriteHooks missing;
  missing.skip = {"event_types"};
  expect_refused(write(fx_, missing), "missing root attribute 'event_types'");
}

/// tfidf/idf: optional (older exports lack it); read back as written; the
/// wrong length or a negative or non-finite weight is refused by name.
TEST_F(ExportReaderTest, TfidfIdfIsOptionalAndChecked) {
  const auto I = static_cast<std::size_t>(fx_.spec.items);
  auto with_tfidf = [&](const std::vector<double>& idf) {
    WriteHooks h;
    h.tamper = [I, idf](h5::File& g) {
      std::vector<std::int64_t> offsets(I + 1);
      for (std::size_t i = 0; i <= I; ++i) offsets[i] = static_cast<std::int64_t>(i);
      g.write("tfidf/offsets", offsets);
      g.write("tfidf/terms", std::vector<std::int32_t>(I, 4));  // "item"
      g.write("tfidf/weights", std::vector<float>(I, 1.0f));
      if (!idf.empty()) g.write("tfidf/idf", idf);
    };
    return write(fx_, h);
  };
  auto older = read_export(with_tfidf({}));
  ASSERT_TRUE(older->tfidf);
  EXPECT_TRUE(older->tfidf->matrix().idf.empty());
  const std::vector<double> idf = {0, 0, 0, 0, 1.75};
  EXPECT_EQ(read_export(with_tfidf(idf))->tfidf->matrix().idf, idf);
  expect_refused(with_tfidf({0, 0, 0, 1.75}), "'tfidf/idf' has shape [4], expected [5]");
  expect_refused(with_tfidf({0, 0, 0, -1, 1.75}), "'tfidf/idf' value 3 is -1");
  expect_refused(with_tfidf({0, 0, 0, 0, std::numeric_limits<double>::infinity()}), "'tfidf/idf' value 4");
}

TEST_F(ExportReaderTest, WrongShapesAreRefused) {
  auto f = fx_;
  f.vectors.resize(f.vectors.size() - static_cast<std::size_t>(f.spec.dim));
  expect_refused(write(f), "'items/vectors' has shape [299, 16], expected [300, 16]");
  f = fx_;
  f.hour_counts.resize(f.hour_counts.size() - 24);
  expect_refused(write(f), "items/hour_counts");
  f = fx_;
  f.types.pop_back();
  expect_refused(write(f), "users/history_types");
  f = fx_;
  f.offsets.pop_back();
  expect_refused(write(f), "users/history_offsets");
  f = fx_;
  f.similarity.resize(f.similarity.size() - static_cast<std::size_t>(f.spec.cf_k));
  expect_refused(write(f), "cf/similarity");
  // A 1-d dataset where a matrix belongs.
  WriteHooks h;
  h.skip = {"items/keys"};
  h.tamper = [&](h5::File& g) { g.write<float>("items/keys", fx_.keys); };
  expect_refused(write(fx_, h), "items/keys");
  // Another element type.
  h.skip = {"items/popularity"};
  h.tamper = [&](h5::File& g) { g.write<float>("items/popularity", std::vector<float>(300, 1.0f)); };
  expect_refused(write(fx_, h), "items/popularity");
  // A missing dataset.
  h.skip = {"cf/neighbours"};
  h.tamper = nullptr;
  expect_refused(write(fx_, h), "missing dataset 'cf/neighbours'");
}

TEST_F(ExportReaderTest, OutOfRangeValuesAreRefused) {
  auto f = fx_;
  f.neighbours[5 * static_cast<std::size_t>(f.spec.cf_k)] = 300;
  expect_refused(write(f), "'cf/neighbours' value [5, 0] is 300");
  f = fx_;
  f.neighbours[3] = -2;
  expect_refused(write(f), "cf/neighbours");
  f = fx_;
  f.offsets[4] = f.offsets[3] - 1;
  expect_refused(write(f), "'users/history_offsets' is not monotone");
  f = fx_;
  f.offsets[0] = 1;
  expect_refused(write(f), "users/history_offsets");
  f = fx_;
  f.events[10] = 300;
  expect_refused(write(f), "'users/history_items' value 10 is 300");
  f = fx_;
  f.types[2] = 4;
  expect_refused(write(f), "users/history_types");
  f = fx_;
  f.keys[77] = std::nanf("");
  expect_refused(write(f), "'items/keys' value 77");
  f = fx_;
  f.user_vectors[3] = std::numeric_limits<float>::infinity();
  expect_refused(write(f), "users/vectors");
  f = fx_;
  f.cold[1] = 2;
  expect_refused(write(f), "items/cold");
  f = fx_;
  f.popularity[8] = -1;
  expect_refused(write(f), "items/popularity");
  f = fx_;
  f.hour_counts[30] = -5;
  expect_refused(write(f), "items/hour_counts");
  f = fx_;
  f.similarity[static_cast<std::size_t>(299 * f.spec.cf_k)] = 0.5f;  // a cold item: neighbour -1
  expect_refused(write(f), "cf/similarity");
}

TEST_F(ExportReaderTest, BadStringsAreRefused) {
  auto f = fx_;
  f.item_ids[9] = "i8";
  expect_refused(write(f), "'items/ids' holds 'i8' twice");
  f = fx_;
  f.user_ids[2] = "u1";
  expect_refused(write(f), "users/ids");
  f = fx_;
  f.item_text[4] = std::string("bad \xC3\x28 utf-8");
  expect_refused(write(f), "string 4 of 'items/text' is not valid UTF-8");
  WriteHooks h;
  h.skip = {"items/category"};
  h.tamper = [](h5::File& g) {
    std::vector<std::int64_t> offsets(301, 0);
    for (std::size_t j = 1; j < offsets.size(); ++j) offsets[j] = static_cast<std::int64_t>(j);
    offsets[50] = 10;  // goes back
    g.write<std::int64_t>("items/category/offsets", offsets);
    g.write<std::uint8_t>("items/category/bytes", std::vector<std::uint8_t>(300, 'a'));
  };
  expect_refused(write(fx_, h), "'items/category/offsets' is not monotone");
  h.tamper = [](h5::File& g) {
    std::vector<std::int64_t> offsets(301, 0);
    for (std::size_t j = 1; j < offsets.size(); ++j) offsets[j] = static_cast<std::int64_t>(j) * 1000;
    g.write<std::int64_t>("items/category/offsets", offsets);
    g.write<std::uint8_t>("items/category/bytes", std::vector<std::uint8_t>(300, 'a'));
  };
  expect_refused(write(fx_, h), "items/category/offsets");
}

TEST_F(ExportReaderTest, TowerTensorsAreCheckedByName) {
  WriteHooks h;
  h.skip = {"ranker/attn.in_proj_weight"};
  expect_refused(write(fx_, h), "'attn.in_proj_weight' is missing");
  h.tamper = [](h5::File& g) {
    g.write<float>("ranker/attn.in_proj_weight", std::vector<float>(std::size_t{16} * 16, 0.1f).data(),
                   {16, 16});
  };
  expect_refused(write(fx_, h),
                 "'attn.in_proj_weight' (dataset 'ranker/attn.in_proj_weight') has shape [16, 16]");
  h.skip = {"ranker/layers.0.linear1.weight"};
  h.tamper = nullptr;
  expect_refused(write(fx_, h), "layers.0.linear1.weight");
  h.skip = {"ranker/query"};
  h.tamper = [](h5::File& g) {
    std::vector<float> q(16, 0.0f);
    q[3] = std::nanf("");
    g.write<float>("ranker/query", q.data(), {1, 16});
  };
  expect_refused(write(fx_, h), "ranker/query");
}

TEST_F(ExportReaderTest, ProfileTablesLoadAndDamagedOnesAreRefused) {
  // A tower that reads profiles (ranker_profile 1): its profile_tag, and a
  // profile vector and flag per user.
  const std::size_t U = fx_.user_ids.size(), d = 16;
  auto profiles = [&](const std::vector<std::uint8_t>& flags, const std::vector<float>& vectors, bool tag) {
    return [=](h5::File& g) {
      g.set_attr("/", "ranker_profile", std::int64_t{1});
      if (tag) g.write<float>("ranker/profile_tag", std::vector<float>(d, 0.01f).data(), {1, d});
      if (!vectors.empty()) g.write<float>("users/profile_vectors", vectors.data(), {U, d});
      if (!flags.empty()) g.write("users/has_profile", flags);
    };
  };
  std::vector<std::uint8_t> flags(U, 1);
  flags[2] = 0;
  std::vector<float> vectors(U * d, 0.5f);
  WriteHooks h;
  h.tamper = profiles(flags, vectors, true);
  auto e = read_export(write(fx_, h));
  EXPECT_EQ(e->ranker_profile, 1);
  EXPECT_EQ(e->user_has_profile, flags);
  EXPECT_FLOAT_EQ(e->user_profile(3)[5], 0.5f);
  EXPECT_TRUE(e->tower->options.profile());
  // An export without the attribute is read as a tower without profiles.
  EXPECT_EQ(read_export(write(fx_))->ranker_profile, 0);

  std::vector<std::uint8_t> bad_flags = flags;
  bad_flags[4] = 2;
  h.tamper = profiles(bad_flags, vectors, true);
  expect_refused(write(fx_, h), "'users/has_profile' value 4 is 2, not 0 or 1");
  std::vector<float> nan_vectors = vectors;
  nan_vectors[7] = std::nanf("");
  h.tamper = profiles(flags, nan_vectors, true);
  expect_refused(write(fx_, h), "users/profile_vectors");
  h.tamper = profiles(flags, {}, true);
  expect_refused(write(fx_, h), "users/profile_vectors");
  h.tamper = profiles(flags, vectors, false);
  expect_refused(write(fx_, h), "'profile_tag' is missing");
  h.tamper = [](h5::File& g) { g.set_attr("/", "ranker_profile", std::int64_t{2}); };
  expect_refused(write(fx_, h), "ranker_profile");
}

TEST_F(ExportReaderTest, HugeClaimedSizesAreRefusedWithoutAllocating) {
  // Attributes that make the expected shapes enormous, with datasets to match
  // in shape only: the reader must refuse before allocating.
  WriteHooks h;
  h.skip = {"num_items"};
  h.tamper = [](h5::File& g) { g.set_attr("/", "num_items", std::int64_t{2000000000}); };
  EXPECT_THROW(read_export(write(fx_, h)), IoError);

  // A dataset whose shape is consistent with the attributes but claims
  // 8 GB that the file does not hold (chunks never written): refused by
  // size before any allocation.
  const std::int64_t E = 2000000000;
  WriteHooks big;
  big.skip = {"users/history_offsets", "users/history_items", "users/history_types"};
  big.tamper = [&](h5::File& g) {
    std::vector<std::int64_t> offsets(fx_.offsets.size(), 0);
    offsets.back() = E;
    g.write<std::int64_t>("users/history_offsets", offsets);
  };
  const std::string path = write(fx_, big);
  {
    hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    hsize_t dims[1] = {static_cast<hsize_t>(E)};
    hsize_t chunk[1] = {1 << 20};
    hid_t space = H5Screate_simple(1, dims, nullptr);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, chunk);
    H5Pset_fletcher32(dcpl);
    for (const char* name : {"users/history_items", "users/history_types"}) {
      hid_t ds =
          H5Dcreate2(file, name, std::string(name) == "users/history_items" ? H5T_STD_I32LE : H5T_STD_U8LE,
                     space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
      ASSERT_GE(ds, 0);
      H5Dclose(ds);
    }
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Fclose(file);
  }
  expect_refused(path, "'users/history_items' claims 8000000000 bytes, more than the file can hold");

  EXPECT_THROW(read_export(dir_ + "/does-not-exist.h5"), IoError);
  { std::ofstream(dir_ + "/text.h5") << "not hdf5 at all"; }
  EXPECT_THROW(read_export(dir_ + "/text.h5"), IoError);
}

// The one writer: what read_export loads, write_export_file stores again,
// field for field (the tower's tensors, the TF-IDF rows and the ranking
// attribute as stored included), and the tables must agree in size.
TEST_F(ExportReaderTest, TheWriterStoresWhatTheReaderLoads) {
  ExportSpec spec = fx_.spec;
  spec.ranking =
      R"({"missing":"cold_weights","cold_weights":{"model":1,"tfidf":0.5},"cold_shift":-0.25,"chosen":{"by":"test"}})";
  const auto a = read_export(write(llmrec::testing::make_export_fixture(spec)));
  const std::string copy = dir_ + "/copy.h5";
  write_export_file(copy, *a);
  const auto b = read_export(copy);
  EXPECT_EQ(b->num_items, a->num_items);
  EXPECT_EQ(b->num_users, a->num_users);
  EXPECT_EQ(b->text_len, 32);
  EXPECT_EQ(b->id_items, a->id_items);
  EXPECT_EQ(b->event_types, a->event_types);
  EXPECT_EQ(b->fusion, a->fusion);
  EXPECT_EQ(b->ranking, spec.ranking);
  EXPECT_EQ(b->fusion_missing, FusionMissing::kColdWeights);
  EXPECT_EQ(b->fusion_cold_weights, a->fusion_cold_weights);
  EXPECT_EQ(b->cold_shift, -0.25);
  EXPECT_EQ(b->item_ids, a->item_ids);
  EXPECT_EQ(b->item_text, a->item_text);
  EXPECT_EQ(b->item_category, a->item_category);
  EXPECT_EQ(b->item_cold, a->item_cold);
  EXPECT_EQ(b->item_popularity, a->item_popularity);
  EXPECT_EQ(b->item_vectors, a->item_vectors);
  EXPECT_EQ(b->item_keys, a->item_keys);
  EXPECT_EQ(b->hour_counts, a->hour_counts);
  EXPECT_EQ(b->user_ids, a->user_ids);
  EXPECT_EQ(b->user_vectors, a->user_vectors);
  EXPECT_EQ(b->history_offsets, a->history_offsets);
  EXPECT_EQ(b->history_items, a->history_items);
  EXPECT_EQ(b->history_types, a->history_types);
  EXPECT_EQ(b->cf_neighbours, a->cf_neighbours);
  EXPECT_EQ(b->cf_similarity, a->cf_similarity);
  EXPECT_EQ(b->vocab, a->vocab);
  EXPECT_EQ(b->model_sha256, a->model_sha256);
  EXPECT_EQ(b->created, a->created);
  auto mine = a->tower->named_parameters();
  for (const auto& p : b->tower->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), mine[p.key()])) << p.key();

  // TF-IDF rows round-trip too.
  ExportData c = *a;
  TfidfMatrix m;
  m.num_terms = static_cast<std::int32_t>(c.vocab.size());
  m.offsets.assign(static_cast<std::size_t>(c.num_items) + 1, 0);
  m.offsets[1] = 2;
  for (std::size_t i = 2; i < m.offsets.size(); ++i) m.offsets[i] = 2;
  m.terms = {1, 4};
  m.weights = {0.6f, 0.8f};
  c.tfidf = std::make_shared<const TfidfIndex>(m);
  write_export_file(copy, c);
  const auto d = read_export(copy);
  ASSERT_NE(d->tfidf, nullptr);
  EXPECT_EQ(d->tfidf->matrix().terms, m.terms);
  EXPECT_EQ(d->tfidf->matrix().weights, m.weights);
  EXPECT_EQ(d->tfidf->top_terms(0, 1).front().first, 4);

  // Tables out of step are refused before anything is written.
  c.item_keys.pop_back();
  EXPECT_THROW(write_export_file(dir_ + "/bad.h5", c), Error);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/bad.h5"));
}

}  // namespace
}  // namespace llmrec
