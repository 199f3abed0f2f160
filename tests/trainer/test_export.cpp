// The export file (docs/export-format.md) on W = 1 and 2 ranks: every
// dataset has the spec's shape and holds what the model and the dataset
// give (keys, user vectors on the last T events, ItemKNN rows, histories,
// hour counts, the user tower); the file is the same for W = 1 and W = 2;
// a catalogue update appends new items as cold text-only items, re-encodes
// changed ones and refuses a bad row with file:line or another checkpoint.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "common/config.h"
#include "common/hdf5.h"
#include "common/sha256.h"
#include "data/prepare.h"
#include "data/wordpiece.h"
#include "export/export_file.h"
#include "serving/engine.h"
#include "tests/mpi_test_main.h"
#include "tests/test_dataset_helper.h"
#include "tests/trainer/eval_test_util.h"
#include "tests/trainer/tiny_model.h"
#include "trainer/baselines.h"
#include "trainer/export.h"
#include "trainer/fusion.h"
#include "trainer/model_scorer.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::llmrec::testing::LocalCommunicator;
using ::llmrec::testing::test_comm;
using ::testing::HasSubstr;

constexpr int kTextLen = 12;  // the dataset's; the model reads 10

/// Every dataset of an export, by element type.
const std::vector<std::string> kStringSets = {"items/ids", "items/text", "items/category", "users/ids",
                                              "tokenizer/vocab"};
const std::vector<std::string> kFloatSets = {"items/vectors", "items/keys", "users/vectors", "cf/similarity"};
const std::vector<std::string> kInt64Sets = {"items/popularity", "users/history_offsets"};
const std::vector<std::string> kInt32Sets = {"items/hour_counts", "users/history_items", "cf/neighbours"};
const std::vector<std::string> kUint8Sets = {"items/cold", "users/history_types"};

torch::Tensor read_matrix(const h5::File& f, const std::string& name) {
  auto shape = f.shape(name);
  std::vector<float> v = f.read<float>(name);
  std::vector<std::int64_t> dims(shape.begin(), shape.end());
  return torch::from_blob(v.data(), dims, torch::kFloat).clone();
}

/// The same arrays and the same attributes (but `created`) in both files.
void expect_same_export(const std::string& a_path, const std::string& b_path) {
  auto a = h5::File::open(a_path), b = h5::File::open(b_path);
  for (const auto& n : kStringSets) EXPECT_EQ(a.read_strings(n), b.read_strings(n)) << n;
  for (const auto& n : kFloatSets) {
    EXPECT_EQ(a.shape(n), b.shape(n)) << n;
    EXPECT_EQ(a.read<float>(n), b.read<float>(n)) << n;
  }
  for (const auto& n : kInt64Sets) EXPECT_EQ(a.read<std::int64_t>(n), b.read<std::int64_t>(n)) << n;
  for (const auto& n : kInt32Sets) {
    EXPECT_EQ(a.shape(n), b.shape(n)) << n;
    EXPECT_EQ(a.read<std::int32_t>(n), b.read<std::int32_t>(n)) << n;
  }
  for (const auto& n : kUint8Sets) EXPECT_EQ(a.read<std::uint8_t>(n), b.read<std::uint8_t>(n)) << n;
  for (const char* k : {"version", "dim", "history", "num_items", "num_users", "id_items", "text_len",
                        "ranker_heads", "ranker_layers", "catalogue_updates"}) {
    EXPECT_EQ(a.attr_int("/", k), b.attr_int("/", k)) << k;
  }
  for (const char* k : {"format", "score", "model_config", "config", "config_sha256", "model_sha256",
                        "checkpoint", "dataset", "dataset_sha256", "event_types", "fusion"}) {
    EXPECT_EQ(a.attr_string("/", k), b.attr_string("/", k)) << k;
  }
}

class ExportTest : public ::testing::Test {
 protected:
  static std::string dataset_;
  Communicator& comm_ = test_comm();

  static void SetUpTestSuite() {
    // 700 users: three blocks of kExportUserBlock, split unevenly over 2 ranks.
    dataset_ = testing::make_test_dataset(test_comm(), "export", 150, 700, 6, kTextLen);
  }
  static void TearDownTestSuite() { testing::dataset_helper_cleanup(test_comm(), dataset_); }

  std::string dir() const { return fs::path(dataset_).parent_path().string(); }
  std::string in_dir(const std::string& name) const { return (fs::path(dir()) / name).string(); }

  /// The same model on every rank, every weight away from its init.
  Recommender make_model(const DatasetFile& file) const {
    torch::manual_seed(11);
    ModelConfig m = testing::tiny_model_config(static_cast<int>(file.vocab().size()));
    Recommender model(RecommenderOptions(m).id_items(file.num_items()));
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);
    model->eval();
    return model;
  }

  /// The checkpoint the export names: only its SHA-256 matters here (the
  /// CLI test exports a checkpoint written by `llmrec train`).
  std::string checkpoint() {
    std::string path = in_dir("model.h5");
    if (comm_.rank() == 0) std::ofstream(path, std::ios::binary) << "stand-in checkpoint bytes";
    comm_.barrier();
    return path;
  }

  /// `name` in the test directory: the export of `model` as written after
  /// training (the eval config's ranking, checkpoint `ckpt`); the
  /// catalogue-update tests start from it.
  std::string plain_export(const std::string& name, Recommender& model, const std::string& ckpt,
                           const DatasetFile& file) {
    std::string path = in_dir(name);
    write_export(path, model, ckpt, file, config_yaml(), export_ranking_of(eval_config()), comm_);
    return path;
  }

  static EvalConfig eval_config() {
    EvalConfig e;
    e.itemknn.neighbours = 20;
    e.itemknn.shrink = 5.0;
    e.fusion.weights = {{"model", 1.0}, {"itemknn", 0.5}, {"bpr", 2.0}};
    return e;
  }

  static std::string config_yaml() {
    testing::DataOnlyConfig cfg;  // default catalogue columns, as the synthetic shop has
    return ConfigWriter::write(cfg);
  }
};
std::string ExportTest::dataset_;

TEST(ExportFusion, KeepsTheServingComponentsOnly) {
  using W = std::map<std::string, double>;
  EvalConfig e;
  EXPECT_EQ(export_ranking_of(e).fusion, (W{{"model", 1.0}}));
  e.fusion.weights = {{"model", 1.0}, {"itemknn", 0.5}, {"bpr", 2.0}, {"popularity", 0.25}};
  EXPECT_EQ(export_ranking_of(e).fusion, (W{{"model", 1.0}, {"itemknn", 0.5}, {"popularity", 0.25}}));
  e.fusion.weights = {{"bpr", 1.0}, {"itemknn", 0.0}};
  EXPECT_EQ(export_ranking_of(e).fusion, (W{{"model", 1.0}}));
  EXPECT_EQ(export_ranking_of(e).missing, FusionMissing::kScored);
  EXPECT_EQ(export_ranking_of(e).itemknn.neighbours, e.itemknn.neighbours);
}

/// Serving's default ranking of a fresh history is evaluation's fused row:
/// the export of a ranking (popularity fused, cold items shifted and fused
/// with weights of their own) answers every test user's train + valid history with the
/// top 10 that the FusedScorer of the same components ranks, history
/// excluded (ties within float rounding aside).
TEST_F(ExportTest, ServingRanksWhatTheEvaluationFusionRanks) {
  DatasetFile file(dataset_);
  Recommender model = make_model(file);
  const std::string out = in_dir("ranked.h5");
  ExportRanking ranking = export_ranking_of(eval_config());
  ranking.fusion = {{"model", 1.0}, {"itemknn", 0.5}, {"popularity", 0.25}, {"tfidf", 0.3}};
  ranking.tfidf.profile_items = 3;
  ranking.missing = FusionMissing::kColdWeights;
  ranking.cold_weights = {{"model", 0.8}, {"itemknn", 0.0}, {"popularity", 0.0}, {"tfidf", 1.5}};
  ranking.cold.shift = 0.3;
  write_export(out, model, checkpoint(), file, config_yaml(), ranking, comm_);

  Evaluator test(file, comm_, "test", eval_config());
  const std::vector<std::uint8_t>& cold = test.items().cold;
  ASSERT_GT(std::count(cold.begin(), cold.end(), std::uint8_t{1}), 0);
  const int text_len = model->options().config().text_len;
  auto model_scorer =
      std::make_shared<ModelScorer>(model, test.items(), text_len, comm_, "model", ranking.cold);
  auto knn = std::make_shared<ItemKnnScorer>(gather_training_histories(file, comm_), ranking.itemknn, comm_);
  auto pop = std::make_shared<PopularityScorer>(test.items().train_count);
  auto tfidf = std::make_shared<TfidfScorer>(file.read_items(), file.text_len(), file.vocab(), ranking.tfidf);
  FusedScorer fused({{model_scorer, 1.0}, {knn, 0.5}, {pop, 0.25}, {tfidf, 0.3}}, "fusion", nullptr,
                    FusionMissing::kColdWeights, cold, {0.8, 0.0, 0.0, 1.5});
  const auto engine = serving::RecommendEngine::open(out);
  const std::int64_t I = file.num_items();
  std::int64_t users = 0, cold_shown = 0, matched = 0;
  for (std::int64_t call = 0; call < test.calls(); ++call) {
    const Evaluator::Block blk = test.block(call);
    const at::Tensor scores = fused.score(blk.request).contiguous();
    for (std::int64_t r = 0; r < blk.request.size(); ++r) {
      const float* s = scores.data_ptr<float>() + r * I;
      std::set<std::int32_t> seen;
      serving::RecommendRequest q;
      q.history.emplace();
      for (std::int64_t e = blk.request.history_begin(r); e < blk.request.history_end(r); ++e) {
        const std::int32_t item = blk.request.history_items[static_cast<std::size_t>(e)];
        seen.insert(item);
        q.history->push_back(engine->data().item_ids[static_cast<std::size_t>(item)]);
      }
      std::vector<std::int32_t> order;
      for (std::int32_t i = 0; i < I; ++i) {
        if (!seen.count(i)) order.push_back(i);
      }
      std::stable_sort(order.begin(), order.end(),
                       [&](std::int32_t a, std::int32_t b) { return s[a] > s[b]; });
      q.explain = true;
      const serving::Recommendation got = engine->recommend(q);
      ASSERT_EQ(got.items.size(), 10u);
      EXPECT_TRUE(got.fused);
      EXPECT_DOUBLE_EQ(got.tfidf_weight, 0.3);
      for (const auto& it : got.items) {  // keywords: terms of the item that the history's profile holds
        std::vector<std::string> top;     // the first 3 whole words (no ## pieces) by contribution
        for (const auto& [term, w] : engine->data().tfidf->shared_terms(
                 blk.request.history_items.data() + blk.request.history_begin(r), blk.request.history_size(r),
                 3, it.item, 1000)) {
          const std::string& word = file.vocab()[static_cast<std::size_t>(term)];
          if (word.rfind("##", 0) != 0 && top.size() < 3) top.push_back(word);
        }
        EXPECT_EQ(it.matches, top);
        matched += !it.matches.empty();
      }
      for (std::size_t j = 0; j < 10; ++j) {
        const std::int32_t g = got.items[j].item, w = order[j];
        EXPECT_NEAR(got.items[j].score, s[g], 1e-4 * (1 + std::fabs(s[g])))
            << "user " << blk.request.users[r];
        if (g != w) {
          EXPECT_NEAR(s[g], s[w], 1e-4 * (1 + std::fabs(s[w])))
              << "user " << blk.request.users[r] << " rank " << j;
        }
        cold_shown += cold[static_cast<std::size_t>(g)];
      }
      ++users;
    }
  }
  EXPECT_GT(users, 100);
  EXPECT_GT(cold_shown, 0);
  EXPECT_GT(matched, 0);
}

/// The round trip's checks, one part of the file each (rank 0).
void expect_export_attributes(const h5::File& f, const std::string& ckpt, const std::string& dataset,
                              const DatasetFile& file, const std::string& config) {
  const std::int64_t I = file.num_items(), U = file.num_users(), d = 16, T = 4;
  // Attributes.
  EXPECT_EQ(f.attr_string("/", "format"), "llmrec-export");
  EXPECT_EQ(f.attr_int("/", "version"), 1);
  EXPECT_EQ(f.attr_int("/", "dim"), d);
  EXPECT_EQ(f.attr_int("/", "history"), T);
  EXPECT_EQ(f.attr_string("/", "score"), "dot");
  EXPECT_EQ(f.attr_int("/", "num_items"), I);
  EXPECT_EQ(f.attr_int("/", "num_users"), U);
  EXPECT_EQ(f.attr_int("/", "id_items"), I);
  EXPECT_EQ(f.attr_int("/", "text_len"), kTextLen);
  EXPECT_EQ(f.attr_int("/", "catalogue_updates"), 0);
  EXPECT_EQ(f.attr_int("/", "ranker_heads"), 2);
  EXPECT_EQ(f.attr_int("/", "ranker_layers"), 0);
  EXPECT_EQ(f.attr_string("/", "ranker_pooling"), "attention");
  EXPECT_EQ(f.attr_string("/", "config"), config);
  EXPECT_EQ(f.attr_string("/", "config_sha256"), sha256_hex(config));
  EXPECT_EQ(f.attr_string("/", "model_sha256"), sha256_file(ckpt));
  EXPECT_EQ(f.attr_string("/", "checkpoint"), ckpt);
  EXPECT_EQ(f.attr_string("/", "dataset"), dataset);
  EXPECT_EQ(f.attr_string("/", "dataset_sha256"), sha256_file(dataset));
  EXPECT_EQ(nlohmann::json::parse(f.attr_string("/", "event_types")), nlohmann::json(file.event_types()));
  EXPECT_EQ(nlohmann::json::parse(f.attr_string("/", "fusion")),
            nlohmann::json({{"model", 1.0}, {"itemknn", 0.5}}));
  EXPECT_THAT(f.attr_string("/", "created"),
              ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z"));
  {
    ModelConfig stored;
    ConfigReader::read(config_parse_string(f.attr_string("/", "model_config"), "model_config"), stored);
    EXPECT_EQ(stored.dim, d);
    EXPECT_EQ(stored.user.history, T);
    EXPECT_EQ(stored.text_len, 10);
  }
}

void expect_export_shapes(const h5::File& f, const DatasetFile& file) {
  const std::int64_t I = file.num_items(), U = file.num_users(), d = 16;
  // Shapes of every dataset.
  const auto n_items = static_cast<std::uint64_t>(I), n_users = static_cast<std::uint64_t>(U),
             ud = static_cast<std::uint64_t>(d);
  const auto E = static_cast<std::uint64_t>(file.num_events());
  using Shape = std::vector<std::uint64_t>;
  EXPECT_EQ(f.shape("items/cold"), Shape({n_items}));
  EXPECT_EQ(f.shape("items/popularity"), Shape({n_items}));
  EXPECT_EQ(f.shape("items/vectors"), Shape({n_items, ud}));
  EXPECT_EQ(f.shape("items/keys"), Shape({n_items, ud}));
  EXPECT_EQ(f.shape("items/hour_counts"), Shape({n_items, 24}));
  EXPECT_EQ(f.shape("users/vectors"), Shape({n_users, ud}));
  EXPECT_EQ(f.shape("users/history_offsets"), Shape({n_users + 1}));
  EXPECT_EQ(f.shape("users/history_items"), Shape({E}));
  EXPECT_EQ(f.shape("users/history_types"), Shape({E}));
  EXPECT_EQ(f.shape("cf/neighbours"), Shape({n_items, 20}));
  EXPECT_EQ(f.shape("cf/similarity"), Shape({n_items, 20}));
  for (const auto& n : {"items/ids", "items/text", "items/category"})
    EXPECT_EQ(f.read_strings(n).size(), n_items) << n;
  EXPECT_EQ(f.read_strings("users/ids").size(), n_users);
}

/// Items (the dataset's table; keys = A l of encode_all_items) and users
/// (ids, histories, u from the last T events).
void expect_export_rows(const h5::File& f, Recommender& model, const DatasetFile& file,
                        const ItemTable& items) {
  const std::int64_t U = file.num_users(), T = 4;
  EXPECT_EQ(f.read_strings("items/ids"), items.ids);
  EXPECT_EQ(f.read_strings("items/text"), items.texts);
  EXPECT_EQ(f.read_strings("items/category"), items.categories);
  EXPECT_EQ(f.read<std::uint8_t>("items/cold"), items.cold);
  EXPECT_EQ(f.read<std::int64_t>("items/popularity"), items.train_count);
  LocalCommunicator local;
  torch::Tensor vecs = encode_all_items(model, items, 10, local);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(read_matrix(f, "items/vectors"), vecs));
  EXPECT_TRUE(torch::equal(read_matrix(f, "items/keys"), model->item_keys(vecs)));
  EXPECT_EQ(f.read_strings("tokenizer/vocab"), file.vocab());

  // Users: ids, histories (all events, oldest first) and u from the last T.
  UserSlice all = file.read_users(0, U);
  EXPECT_EQ(f.read_strings("users/ids"), file.read_user_ids());
  EXPECT_EQ(f.read<std::int64_t>("users/history_offsets"), all.users.offsets);
  EXPECT_EQ(f.read<std::int32_t>("users/history_items"), all.events.item);
  EXPECT_EQ(f.read<std::uint8_t>("users/history_types"), all.events.type);
  torch::Tensor users = read_matrix(f, "users/vectors");
  for (std::int64_t u : {std::int64_t{0}, std::int64_t{1}, std::int64_t{300}, std::int64_t{511}, U - 1}) {
    const std::int64_t end = all.users.offsets[static_cast<std::size_t>(u) + 1];
    const std::int64_t begin = std::max(all.users.offsets[static_cast<std::size_t>(u)], end - T);
    std::vector<std::int64_t> last(all.events.item.begin() + begin, all.events.item.begin() + end);
    torch::Tensor history = torch::tensor(last, torch::kLong).unsqueeze(0);
    torch::Tensor want = model->user_vectors(history, vecs)[0];
    EXPECT_TRUE(torch::allclose(users[u], want, 1e-5, 1e-6))
        << "user " << u << ": " << users[u] << " vs " << want;
  }
}

/// Hour counts (training events per item and UTC hour) and the CF
/// neighbours (evaluation's ItemKNN rows, padded with -1 / 0).
void expect_export_counts(const h5::File& f, const DatasetFile& file, const ItemTable& items) {
  const std::int64_t I = file.num_items(), U = file.num_users();
  UserSlice all = file.read_users(0, U);
  // Hour counts: the training events per item and UTC hour.
  std::vector<std::int32_t> hours(static_cast<std::size_t>(I * 24), 0);
  for (std::int64_t u = 0; u < U; ++u) {
    const std::int64_t lo = all.users.offsets[static_cast<std::size_t>(u)];
    for (std::int64_t k = lo; k < lo + all.users.train_end[static_cast<std::size_t>(u)]; ++k) {
      const auto e = static_cast<std::size_t>(k);
      ++hours[static_cast<std::size_t>(std::int64_t{all.events.item[e]} * 24 +
                                       (all.events.time[e] % 86400) / 3600)];
    }
  }
  std::vector<std::int32_t> got_hours = f.read<std::int32_t>("items/hour_counts");
  EXPECT_EQ(got_hours, hours);
  for (std::int64_t i = 0; i < I; ++i) {
    std::int64_t sum = 0;
    for (int h = 0; h < 24; ++h) sum += got_hours[static_cast<std::size_t>(i * 24 + h)];
    EXPECT_EQ(sum, items.train_count[static_cast<std::size_t>(i)]) << "item " << i;
  }

  // CF neighbours: the ItemKNN rows of evaluation, padded with -1 / 0.
  TrainingHistories h = training_histories_of(all, I);
  std::vector<ItemNeighbours> rows = itemknn_rows(h, 0, I, {20, 5.0});
  std::vector<std::int32_t> nb = f.read<std::int32_t>("cf/neighbours");
  std::vector<float> sim = f.read<float>("cf/similarity");
  std::int64_t with_neighbours = 0;
  for (std::int64_t i = 0; i < I; ++i) {
    const auto& r = rows[static_cast<std::size_t>(i)];
    with_neighbours += !r.items.empty();
    for (std::size_t k = 0; k < 20; ++k) {
      const auto at = static_cast<std::size_t>(i * 20) + k;
      EXPECT_EQ(nb[at], k < r.items.size() ? r.items[k] : -1) << "item " << i << " k " << k;
      EXPECT_EQ(sim[at], k < r.items.size() ? r.similarity[k] : 0.0f) << "item " << i << " k " << k;
    }
    if (items.cold[static_cast<std::size_t>(i)]) {
      EXPECT_TRUE(r.items.empty());
    }
  }
  EXPECT_GT(with_neighbours, I / 2);
}

TEST_F(ExportTest, RoundTripHoldsTheModelTheDataAndIsTheSameOnAnyWorldSize) {
  DatasetFile file(dataset_);
  Recommender model = make_model(file);
  const std::string ckpt = checkpoint();
  const std::string out = in_dir("export.h5");
  const EvalConfig eval = eval_config();
  ExportSummary s = write_export(out, model, ckpt, file, config_yaml(), export_ranking_of(eval), comm_);
  const std::int64_t I = file.num_items(), U = file.num_users();
  EXPECT_EQ(s.items, I);
  EXPECT_EQ(s.users, U);
  EXPECT_EQ(s.items_encoded, I);
  EXPECT_EQ(s.neighbours, 20);
  EXPECT_EQ(s.events, file.num_events());
  ItemTable items = file.read_items();
  EXPECT_EQ(s.cold_items, std::count(items.cold.begin(), items.cold.end(), 1));
  EXPECT_GT(s.cold_items, 0);
  if (comm_.rank() != 0) {
    comm_.barrier();
    return;
  }
  EXPECT_EQ(s.file_bytes, static_cast<std::int64_t>(fs::file_size(out)));
  auto f = h5::File::open(out);

  expect_export_attributes(f, ckpt, dataset_, file, config_yaml());
  expect_export_shapes(f, file);
  expect_export_rows(f, model, file, items);
  expect_export_counts(f, file, items);

  // The user tower by module path.
  for (const auto& p : model->user->named_parameters()) {
    EXPECT_TRUE(torch::equal(read_matrix(f, "ranker/" + p.key()), p.value())) << p.key();
  }
  EXPECT_TRUE(f.exists("ranker/positions") && f.exists("ranker/query") &&
              f.exists("ranker/attn.in_proj_weight") && f.exists("ranker/norm.weight") &&
              f.exists("ranker/proj.weight"));

  // The same file from one process (W = 1), array by array.
  const std::string out1 = in_dir("export_w1.h5");
  LocalCommunicator local;
  write_export(out1, model, ckpt, file, config_yaml(), export_ranking_of(eval), local);
  expect_same_export(out, out1);
  comm_.barrier();
}

TEST_F(ExportTest, TimeAndContextFeaturesScoreTheSameInEvaluationAndServing) {
  DatasetFile file(dataset_);
  torch::manual_seed(11);
  ModelConfig m = testing::tiny_model_config(static_cast<int>(file.vocab().size()));
  m.user.pooling = "causal";
  m.user.layers = 1;
  m.user.time_features = {"gap", "weekday", "hour"};
  m.user.context_columns = {"device"};
  const std::vector<std::string> devices = file.context_values("device");
  Recommender model(RecommenderOptions(m).id_items(file.num_items()).context_values({2}));
  ASSERT_EQ(devices.size(), 2u);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);  // query_context too
  }
  model->eval();
  const std::string out = in_dir("timed.h5");
  write_export(out, model, checkpoint(), file, config_yaml(), export_ranking_of(eval_config()), comm_);
  const auto engine = serving::RecommendEngine::open(out);
  const ExportData& e = engine->data();
  EXPECT_EQ(e.ranker_time_features, m.user.time_features);
  EXPECT_EQ(e.ranker_context_columns, m.user.context_columns);
  EXPECT_EQ(e.context_values, std::vector<std::vector<std::string>>{devices});
  UserSlice all = file.read_users(0, file.num_users(), {"device"});
  EXPECT_EQ(e.history_times, all.events.time);
  EXPECT_EQ(e.history_context, all.events.context[0]);  // one column: event-major is the column
  // A known user's stored vector is the tower on its stored events, times and devices.
  for (std::int32_t u : {0, 1, 300}) {
    const std::vector<std::int32_t> items(e.history_items.begin() + e.events_begin(u),
                                          e.history_items.begin() + e.events_end(u));
    const std::vector<std::int64_t> times(e.history_times.begin() + e.events_begin(u),
                                          e.history_times.begin() + e.events_end(u));
    const std::vector<std::int32_t> codes(e.history_context.begin() + e.events_begin(u),
                                          e.history_context.begin() + e.events_end(u));
    const std::vector<float> got = engine->history_vector(items, times, codes);
    EXPECT_TRUE(torch::allclose(torch::tensor(got),
                                torch::tensor(std::vector<float>(e.user_vector(u), e.user_vector(u) + e.dim)),
                                1e-5, 1e-6))
        << "user " << u;
  }
  // A fresh history with its times, asked for the held-out event's time
  // and device, gets evaluation's model scores (its query vector included;
  // a fresh history's devices are unknown to serving, so to evaluation here).
  Evaluator test(file, comm_, "test", eval_config());
  ModelScorer scorer(model, test.items(), m.text_len, comm_);
  Evaluator::Block blk = test.block(0);
  ASSERT_EQ(blk.request.context_names, std::vector<std::string>{"device"});
  std::fill(blk.request.history_context.begin(), blk.request.history_context.end(), -1);
  const at::Tensor scores = scorer.score(blk.request).contiguous();
  std::int64_t compared = 0, moved = 0;
  for (std::int64_t r = 0; r < std::min<std::int64_t>(blk.request.size(), 20); ++r) {
    serving::RecommendRequest q;
    q.history.emplace();
    for (std::int64_t j = blk.request.history_begin(r); j < blk.request.history_end(r); ++j) {
      q.history->push_back(
          e.item_ids[static_cast<std::size_t>(blk.request.history_items[static_cast<std::size_t>(j)])]);
      q.history_times.push_back(blk.request.history_times[static_cast<std::size_t>(j)]);
    }
    q.time = blk.request.query_times[static_cast<std::size_t>(r)];
    q.context["device"] =
        devices.at(static_cast<std::size_t>(blk.request.query_context[static_cast<std::size_t>(r)]));
    q.explain = true;
    const serving::Recommendation with_time = engine->recommend(q);
    q.time.reset();
    q.context.clear();
    const serving::Recommendation without = engine->recommend(q);
    for (const auto& it : with_time.items) {
      EXPECT_NEAR(it.model_score, scores[r][it.item].item<float>(), 1e-4)
          << "row " << r << " item " << it.item;
      ++compared;
    }
    moved += std::abs(with_time.items.front().model_score - without.items.front().model_score) > 1e-4 ||
             with_time.items.front().item != without.items.front().item;
  }
  EXPECT_GT(compared, 0);
  EXPECT_GT(moved, 0) << "the request's time never changed a score";
  comm_.barrier();
}

/// Writes `text` to <dir>/<name> on rank 0; every rank gets the path.
std::string write_file(Communicator& comm, const std::string& dir, const std::string& name,
                       const std::string& text) {
  std::string path = (fs::path(dir) / name).string();
  if (comm.rank() == 0) std::ofstream(path, std::ios::binary) << text;
  comm.barrier();
  return path;
}

/// Item 1's line of the test shop's catalogue, as the shop wrote it.
std::string second_catalogue_line(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "shop" / "catalogue.csv");
  std::string header, line;
  std::getline(in, header);
  EXPECT_EQ(header, "item_id,title,description,category,brand,price,tags");
  std::getline(in, line);
  std::getline(in, line);
  return line;
}

/// The tables of `b`, export `a` (I items) after an update that added
/// "brand-new-1" and retitled item 0: the new rows, and the old ones kept.
void expect_updated_tables(h5::File& a, h5::File& b, std::int64_t I, const ItemTable& items) {
  EXPECT_EQ(b.attr_int("/", "num_items"), I + 1);
  EXPECT_EQ(b.attr_int("/", "catalogue_updates"), 1);
  EXPECT_EQ(b.attr_string("/", "model_sha256"), a.attr_string("/", "model_sha256"));
  auto ids = b.read_strings("items/ids");
  auto text = b.read_strings("items/text");
  auto category = b.read_strings("items/category");
  ASSERT_EQ(ids.size(), static_cast<std::size_t>(I + 1));
  EXPECT_EQ(ids[static_cast<std::size_t>(I)], "brand-new-1");
  EXPECT_EQ(text[static_cast<std::size_t>(I)],
            "Brand new trail shoe ; Shoes ; Zoom ; running ; light and fast");
  EXPECT_EQ(category[static_cast<std::size_t>(I)], "Shoes");
  EXPECT_EQ(text[0], "Completely renamed kettle ; Kitchen ; Acme ; steel");
  EXPECT_EQ(category[0], "Kitchen");
  EXPECT_EQ(text[1], items.texts[1]);
  EXPECT_EQ(b.read<std::uint8_t>("items/cold")[static_cast<std::size_t>(I)], 1);
  EXPECT_EQ(b.read<std::int64_t>("items/popularity")[static_cast<std::size_t>(I)], 0);
  auto hours = b.read<std::int32_t>("items/hour_counts");
  EXPECT_EQ(std::vector<std::int32_t>(hours.end() - 24, hours.end()), std::vector<std::int32_t>(24, 0));
  EXPECT_EQ(hours.size(), static_cast<std::size_t>((I + 1) * 24));
  auto nb = b.read<std::int32_t>("cf/neighbours");
  EXPECT_EQ(std::vector<std::int32_t>(nb.end() - 20, nb.end()), std::vector<std::int32_t>(20, -1));
  EXPECT_EQ(std::vector<std::int32_t>(nb.begin(), nb.end() - 20), a.read<std::int32_t>("cf/neighbours"));
}

/// The same update's vectors: the new item's is the model's text encoding
/// of it (no ID vector), item 0's its new text plus its ID vector when it had
/// training events; keys follow; every other item untouched.
void expect_updated_vectors(Recommender& model, h5::File& a, h5::File& b, std::int64_t I,
                            const ItemTable& items) {
  auto text = b.read_strings("items/text");
  WordPieceTokenizer tok = WordPieceTokenizer::from_tokens(b.read_strings("tokenizer/vocab"));
  TokenizedTexts t = tokenize_item_texts(tok, {text[static_cast<std::size_t>(I)], text[0]}, kTextLen);
  torch::Tensor tokens =
      torch::tensor(t.tokens, torch::kLong).view({2, kTextLen}).narrow(1, 0, 10).contiguous();
  torch::Tensor len = torch::tensor(t.length, torch::kLong);
  torch::Tensor mask = (torch::arange(10).unsqueeze(0) < len.unsqueeze(1)).to(torch::kLong);
  torch::NoGradGuard no_grad;
  torch::Tensor new_vec = model->encode_items(tokens.narrow(0, 0, 1), mask.narrow(0, 0, 1));
  torch::Tensor id0 = torch::tensor({items.cold[0] ? std::int64_t{-1} : std::int64_t{0}}, torch::kLong);
  torch::Tensor vec0 = model->encode_items(tokens.narrow(0, 1, 1), mask.narrow(0, 1, 1), id0);
  torch::Tensor vb = read_matrix(b, "items/vectors"), va = read_matrix(a, "items/vectors");
  torch::Tensor kb = read_matrix(b, "items/keys");
  EXPECT_TRUE(torch::allclose(vb[I], new_vec[0], 1e-5, 1e-6)) << vb[I] << new_vec[0];
  EXPECT_TRUE(torch::allclose(vb[0], vec0[0], 1e-5, 1e-6)) << vb[0] << vec0[0];
  EXPECT_FALSE(torch::allclose(vb[0], va[0]));
  EXPECT_TRUE(torch::equal(vb.narrow(0, 1, I - 1), va.narrow(0, 1, I - 1)));  // the rest untouched
  EXPECT_TRUE(torch::allclose(kb[I], model->item_keys(vb[I]), 1e-5, 1e-6));
  EXPECT_TRUE(torch::equal(kb.narrow(0, 1, I - 1), read_matrix(a, "items/keys").narrow(0, 1, I - 1)));
}

/// The user vectors of `b` follow its item vectors (three users whose last
/// four events include item 0, the retitled one).
void expect_users_follow_items(Recommender& model, h5::File& b) {
  torch::NoGradGuard no_grad;
  const auto offsets = b.read<std::int64_t>("users/history_offsets");
  const auto hist = b.read<std::int32_t>("users/history_items");
  torch::Tensor users = read_matrix(b, "users/vectors");
  torch::Tensor vb = read_matrix(b, "items/vectors");
  std::int64_t checked = 0;
  for (std::size_t u = 0; u + 1 < offsets.size() && checked < 3; ++u) {
    const std::int64_t end = offsets[u + 1], begin = std::max(offsets[u], end - 4);
    std::vector<std::int64_t> last(hist.begin() + begin, hist.begin() + end);
    if (std::find(last.begin(), last.end(), 0) == last.end()) continue;
    torch::Tensor want = model->user_vectors(torch::tensor(last, torch::kLong).unsqueeze(0), vb)[0];
    EXPECT_TRUE(torch::allclose(users[static_cast<std::int64_t>(u)], want, 1e-5, 1e-6)) << "user " << u;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

/// model.user.profile: the export stores each user's profile vector and
/// flag; a known user's stored vector and a live user's vector in serving
/// are the model's on the same history with the same profile, and the
/// profile changes them.
TEST_F(ExportTest, ProfilesReachTheExportAndServingAsEvaluationReadsThem) {
  const std::string path = testing::make_test_dataset(comm_, "export_prof", 120, 200, 6, kTextLen, true);
  {
    DatasetFile file(path);
    ASSERT_TRUE(file.has_profiles());
    torch::manual_seed(11);
    ModelConfig m = testing::tiny_model_config(static_cast<int>(file.vocab().size()));
    m.user.profile = true;
    Recommender model(RecommenderOptions(m).id_items(file.num_items()));
    {
      torch::NoGradGuard no_grad;
      for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);
    }
    model->eval();
    const std::string out = (fs::path(path).parent_path() / "profiles.h5").string();
    const ExportSummary s =
        write_export(out, model, checkpoint(), file, config_yaml(), export_ranking_of(eval_config()), comm_);
    const auto engine = serving::RecommendEngine::open(out);
    const ExportData& e = engine->data();
    EXPECT_EQ(e.ranker_profile, 1);
    const UserSlice all = file.read_users(0, file.num_users());
    std::int64_t with = 0;
    for (std::size_t u = 0; u < all.users.profile_length.size(); ++u) {
      EXPECT_EQ(e.user_has_profile[u], all.users.profile_length[u] > 0 ? 1 : 0) << "user " << u;
      with += all.users.profile_length[u] > 0;
    }
    EXPECT_EQ(s.users_with_profile, with);
    ASSERT_GT(with, 0);
    ASSERT_LT(with, file.num_users());  // synth leaves some users without one

    // The model on a user's events (and a live one), with and without its profile.
    ModelScorer scorer(model, file.read_items(), m.text_len, comm_);
    const std::vector<std::string> ids = file.read_user_ids();
    auto model_vector = [&](std::int32_t u, const std::vector<std::int32_t>& items, bool profile) {
      ScoreRequest q;
      q.profile_len = file.text_len();
      const std::vector<std::int64_t> times(items.size(), 0);
      q.add_user(u, items.data(), times.data(), static_cast<std::int64_t>(items.size()), 0);
      q.add_profile(all.users.profile_tokens.data() + static_cast<std::size_t>(u) * file.text_len(),
                    profile ? all.users.profile_length[static_cast<std::size_t>(u)] : 0);
      return scorer.user_vectors(q)[0];
    };
    std::int64_t checked = 0;
    for (std::int32_t u = 0; u < file.num_users() && checked < 6; ++u) {
      if (e.user_has_profile[static_cast<std::size_t>(u)] == 0) continue;
      ++checked;
      std::vector<std::int32_t> items(e.history_items.begin() + e.events_begin(u),
                                      e.history_items.begin() + e.events_end(u));
      const at::Tensor stored = torch::tensor(std::vector<float>(e.user_vector(u), e.user_vector(u) + e.dim));
      EXPECT_TRUE(torch::allclose(stored, model_vector(u, items, true), 1e-5, 1e-6)) << "user " << u;
      EXPECT_FALSE(torch::allclose(stored, model_vector(u, items, false), 1e-4, 1e-5)) << "user " << u;
      // A live event: the tower runs in serving on stored + live events and the stored profile.
      serving::RecommendRequest q;
      q.user = ids[static_cast<std::size_t>(u)];
      q.live = {7};
      q.k = 5;
      q.cf_weight = 0;
      q.popularity_weight = 0;
      q.tfidf_weight = 0;
      const serving::Recommendation got = engine->recommend(q);
      items.push_back(7);
      const at::Tensor want = model_vector(u, items, true);
      for (const auto& it : got.items) {
        const float key_dot =
            torch::dot(torch::tensor(std::vector<float>(e.key(it.item), e.key(it.item) + e.dim)), want)
                .item<float>();
        EXPECT_NEAR(it.model_score,
                    key_dot + (e.item_cold[static_cast<std::size_t>(it.item)] ? e.cold_shift : 0.0), 1e-4)
            << "user " << u << " item " << it.item;
      }
    }
    EXPECT_EQ(checked, 6);
  }
  testing::dataset_helper_cleanup(comm_, path);
}

TEST_F(ExportTest, CatalogueUpdateAppendsNewItemsAndReencodesChangedOnes) {
  DatasetFile file(dataset_);
  Recommender model = make_model(file);
  const std::string ckpt = checkpoint();
  const std::string before = plain_export("export_before.h5", model, ckpt, file);
  ItemTable items = file.read_items();
  const std::int64_t I = file.num_items();
  // Item 1's own catalogue line (unchanged), item 0 with a new title, a new item.
  const std::string line1 = second_catalogue_line(dir());
  ASSERT_EQ(line1.substr(0, line1.find(',')), items.ids[1]);
  const std::string csv = "item_id,title,description,category,brand,price,tags\n" + line1 + "\n" +
                          items.ids[0] +
                          ",Completely renamed kettle,,Kitchen,Acme,9.99,steel\n"
                          "brand-new-1,Brand new trail shoe,light and fast,Shoes,Zoom,80,running\n";
  const std::string cat = write_file(comm_, dir(), "new_items.csv", csv);
  const std::string after = in_dir("export_after.h5");
  ExportSummary s = add_catalogue_to_export(before, cat, model, ckpt, after, comm_);
  EXPECT_EQ(s.catalogue_rows, 3);
  EXPECT_EQ(s.items_added, 1);
  EXPECT_EQ(s.items_replaced, 1);
  EXPECT_EQ(s.items_unchanged, 1);
  EXPECT_EQ(s.items_encoded, 2);
  EXPECT_EQ(s.items, I + 1);
  EXPECT_EQ(s.catalogue_updates, 1);
  EXPECT_EQ(s.cold_items, std::count(items.cold.begin(), items.cold.end(), 1) + 1);
  if (comm_.rank() != 0) {
    comm_.barrier();
    return;
  }
  auto a = h5::File::open(before), b = h5::File::open(after);
  expect_updated_tables(a, b, I, items);
  expect_updated_vectors(model, a, b, I, items);
  expect_users_follow_items(model, b);

  // The same update on one process gives the same file.
  LocalCommunicator local;
  const std::string after1 = in_dir("export_after_w1.h5");
  add_catalogue_to_export(before, cat, model, ckpt, after1, local);
  expect_same_export(after, after1);

  // In place: the export is replaced, catalogue_updates counts on.
  fs::copy_file(after, in_dir("export_inplace.h5"), fs::copy_options::overwrite_existing);
  const std::string one = write_file(local, dir(), "one.csv",
                                     "item_id,title,description,category,brand,price,tags\n"
                                     "brand-new-2,Another new thing,,Toys,,1,\n");
  ExportSummary s2 = add_catalogue_to_export(in_dir("export_inplace.h5"), one, model, ckpt, "", local);
  EXPECT_EQ(s2.items, I + 2);
  EXPECT_EQ(s2.users_encoded, 0);  // no existing item changed: user vectors kept
  auto c = h5::File::open(in_dir("export_inplace.h5"));
  EXPECT_EQ(c.attr_int("/", "catalogue_updates"), 2);
  EXPECT_EQ(c.read_strings("items/ids").back(), "brand-new-2");
  EXPECT_EQ(c.read<float>("users/vectors"), b.read<float>("users/vectors"));
  comm_.barrier();
}

/// export --update weighs the new items' TF-IDF rows with the export's idf:
/// a new item with an existing item's text gets that item's row exactly,
/// so serving's content score and keywords treat the two alike; the other
/// rows and the idf are kept.
TEST_F(ExportTest, CatalogueUpdateGivesNewItemsTheirTfidfRows) {
  DatasetFile file(dataset_);
  Recommender model = make_model(file);
  const std::string ckpt = checkpoint();
  const std::string before = plain_export("export_tfidf_before.h5", model, ckpt, file);
  const std::string line1 = second_catalogue_line(dir());  // item 1's line
  const std::string cat = write_file(comm_, dir(), "copy_of_1.csv",
                                     "item_id,title,description,category,brand,price,tags\ncopy-of-1" +
                                         line1.substr(line1.find(',')) + "\n");
  const std::string after = in_dir("export_tfidf_after.h5");
  add_catalogue_to_export(before, cat, model, ckpt, after, comm_);
  if (comm_.rank() != 0) {
    comm_.barrier();
    return;
  }
  const auto a = read_export(before), b = read_export(after);
  ASSERT_TRUE(a->tfidf && b->tfidf);
  const TfidfMatrix &ma = a->tfidf->matrix(), &mb = b->tfidf->matrix();
  const std::int64_t I = file.num_items();
  ASSERT_EQ(ma.idf.size(), a->vocab.size());
  EXPECT_EQ(mb.idf, ma.idf);
  ASSERT_EQ(mb.num_items(), I + 1);
  auto row = [](const TfidfMatrix& m, std::int64_t i) {
    const auto lo = static_cast<std::ptrdiff_t>(m.offsets[static_cast<std::size_t>(i)]);
    const auto hi = static_cast<std::ptrdiff_t>(m.offsets[static_cast<std::size_t>(i) + 1]);
    return std::make_pair(std::vector<std::int32_t>(m.terms.begin() + lo, m.terms.begin() + hi),
                          std::vector<float>(m.weights.begin() + lo, m.weights.begin() + hi));
  };
  ASSERT_FALSE(row(ma, 1).first.empty());
  EXPECT_EQ(row(mb, I), row(ma, 1)) << "the copy's row is item 1's";
  for (std::int64_t i = 0; i < I; ++i) EXPECT_EQ(row(mb, i), row(ma, i)) << "item " << i;
  // Serving: the copy's content score and keywords are item 1's for any history.
  const std::vector<std::int32_t> history = {0, 2, 3, 5};
  std::vector<float> score(static_cast<std::size_t>(I + 1));
  b->tfidf->score(history.data(), static_cast<std::int64_t>(history.size()), 20, score.data());
  EXPECT_EQ(score[static_cast<std::size_t>(I)], score[1]);
  EXPECT_EQ(b->tfidf->top_terms(I, 3), b->tfidf->top_terms(1, 3));
  comm_.barrier();
}

TEST_F(ExportTest, CatalogueUpdateRefusesABadRowAndAnotherCheckpoint) {
  DatasetFile file(dataset_);
  Recommender model = make_model(file);
  const std::string ckpt = checkpoint();
  const std::string exp = plain_export("export_bad.h5", model, ckpt, file);
  const std::string bad = write_file(comm_, dir(), "bad.csv",
                                     "item_id,title,description,category,brand,price,tags\n"
                                     "fine-1,A fine item,,Toys,,1,\n"
                                     "no-text,,,,,2,\n");
  // Every rank reads the file and fails the same way (no collective left waiting).
  try {
    add_catalogue_to_export(exp, bad, model, ckpt, in_dir("never.h5"), comm_);
    ADD_FAILURE() << "a row without text was accepted";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("bad.csv:3: missing item text: item 'no-text' has no text"));
  }
  EXPECT_FALSE(fs::exists(in_dir("never.h5")));
  // With on_error: skip the good row goes in and the bad one is reported.
  CatalogueUpdateOptions skip;
  skip.on_error = "skip";
  ExportSummary s = add_catalogue_to_export(exp, bad, model, ckpt, in_dir("skipped.h5"), comm_, skip);
  EXPECT_EQ(s.items_added, 1);
  EXPECT_EQ(s.rows_skipped, 1);
  EXPECT_THAT(s.skipped_report, HasSubstr("bad.csv:3"));

  const std::string other = write_file(comm_, dir(), "other.h5", "another model");
  try {
    add_catalogue_to_export(exp, bad, model, other, "", comm_);
    ADD_FAILURE() << "another checkpoint was accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("is not the model"));
  }
  EXPECT_THROW(add_catalogue_to_export(ckpt, bad, model, ckpt, "", comm_), IoError);  // not an export
  comm_.barrier();
}

}  // namespace
}  // namespace llmrec
