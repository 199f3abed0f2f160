// The model as a scorer of cold items: TF-IDF neighbours, the ID vectors a
// cold item borrows from them, the score shift, the draw of the items whose
// IDs the calibration withholds, and the calibration itself (its curve is
// evaluate() of each point, the choice is the curve's best point, and the
// result is the same on any world size).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>

#include "tests/mpi_test_main.h"
#include "tests/test_dataset_helper.h"
#include "tests/trainer/eval_test_util.h"
#include "tests/trainer/tiny_model.h"
#include "trainer/baselines.h"
#include "trainer/fusion.h"
#include "trainer/model_scorer.h"

namespace llmrec {
namespace {

using ::llmrec::testing::test_comm;

constexpr int kTextLen = 10;

/// Items x terms, rows L2-normalised (weights given per row, normalised here).
TfidfMatrix matrix_of(const std::vector<std::vector<std::pair<std::int32_t, float>>>& rows,
                      std::int32_t terms) {
  TfidfMatrix m;
  m.num_terms = terms;
  for (const auto& row : rows) {
    double norm = 0;
    for (const auto& [t, w] : row) norm += static_cast<double>(w) * w;
    for (const auto& [t, w] : row) {
      m.terms.push_back(t);
      m.weights.push_back(static_cast<float>(w / std::sqrt(norm)));
    }
    m.offsets.push_back(static_cast<std::int64_t>(m.terms.size()));
  }
  return m;
}

TEST(TfidfNeighbours, MostSimilarNonQueryItemsWeightedByCosine) {
  // Item 0 (query) shares term 1 with items 1 and 2, more with 1; item 3
  // (query) shares nothing with a non-query item; item 4 is like item 0 but
  // is a query item itself, so never a neighbour.
  const TfidfMatrix m = matrix_of(
      {{{0, 1}, {1, 1}}, {{0, 1}, {1, 1}, {2, 0.2f}}, {{1, 1}, {3, 2}}, {{5, 1}}, {{0, 1}, {1, 1}}, {{4, 1}}},
      6);
  const std::vector<std::uint8_t> query = {1, 0, 0, 1, 1, 0};
  const std::vector<ItemNeighbours> nb = tfidf_neighbours(m, query, 10);
  ASSERT_EQ(nb.size(), 6u);
  EXPECT_EQ(nb[0].items, (std::vector<std::int32_t>{1, 2}));
  const double c1 = (1.0 + 1.0) / (std::sqrt(2.0) * std::sqrt(2.04)),
               c2 = 1.0 / (std::sqrt(2.0) * std::sqrt(5.0));
  ASSERT_EQ(nb[0].similarity.size(), 2u);
  EXPECT_NEAR(nb[0].similarity[0], c1, 1e-6);
  EXPECT_NEAR(nb[0].similarity[1], c2, 1e-6);
  for (std::size_t i : {1, 2, 3, 5}) EXPECT_TRUE(nb[i].items.empty()) << "item " << i;
  EXPECT_EQ(nb[4].items, (std::vector<std::int32_t>{1, 2}));  // item 4: the same neighbours as item 0
  // k = 1: the best one.
  const std::vector<ItemNeighbours> one = tfidf_neighbours(m, query, 1);
  EXPECT_EQ(one[0].items, (std::vector<std::int32_t>{1}));
  EXPECT_THROW(tfidf_neighbours(m, {1, 0}, 3), Error);
  EXPECT_THROW(tfidf_neighbours(m, query, 0), Error);
}

TEST(ColdWithheldItems, ADeterministicShareOfTheWarmItems) {
  std::vector<std::uint8_t> cold(1000, 0);
  for (std::size_t i = 0; i < cold.size(); i += 7) cold[i] = 1;
  const std::int64_t warm = std::count(cold.begin(), cold.end(), std::uint8_t{0});
  const auto a = cold_withheld_items(cold, 0.1, 3);
  EXPECT_EQ(static_cast<std::int64_t>(a.size()), std::llround(0.1 * static_cast<double>(warm)));
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::adjacent_find(a.begin(), a.end()), a.end());  // no repeats
  for (std::int64_t i : a)
    EXPECT_EQ(cold[static_cast<std::size_t>(i)], 0) << "item " << i << " is cold already";
  EXPECT_EQ(a, cold_withheld_items(cold, 0.1, 3));
  EXPECT_NE(a, cold_withheld_items(cold, 0.1, 4));
  EXPECT_TRUE(cold_withheld_items(cold, 0.0, 3).empty());
  EXPECT_EQ(static_cast<std::int64_t>(cold_withheld_items(cold, 1.0, 3).size()), warm);
  EXPECT_THROW(cold_withheld_items(cold, 1.5, 3), Error);
}

class ModelScorerTest : public ::testing::Test {
 protected:
  static std::string dataset_;
  static void SetUpTestSuite() {
    dataset_ = testing::make_test_dataset(test_comm(), "modelscorer", 120, 400, 6, kTextLen);
  }
  static void TearDownTestSuite() { testing::dataset_helper_cleanup(test_comm(), dataset_); }
  Communicator& comm_ = test_comm();

  /// 20% of the training items' IDs withheld (seed 5) while cold scoring is chosen.
  static EvalConfig withheld_config() {
    EvalConfig e;
    e.cold_calibration.withhold = 0.2;
    e.cold_calibration.seed = 5;
    return e;
  }

  /// The same model on every rank, every weight away from its init.
  static Recommender make_model(const DatasetFile& file, bool ids = true) {
    torch::manual_seed(21);
    ModelConfig m = testing::tiny_model_config(static_cast<int>(file.vocab().size()));
    m.item_id_embedding = ids;
    Recommender model(RecommenderOptions(m).id_items(file.num_items()));
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);
    model->eval();
    return model;
  }
};
std::string ModelScorerTest::dataset_;

TEST_F(ModelScorerTest, TheColdShiftMovesTheColdItemsOnly) {
  DatasetFile file(dataset_);
  Recommender model = make_model(file);
  Evaluator valid(file, comm_, "valid", EvalConfig{});
  ItemTable items = valid.items();
  for (std::size_t i = 0; i < items.cold.size(); i += 3) items.cold[i] = 1;  // some cold items for sure
  ModelScorer plain(model, items, kTextLen, comm_);
  ColdScoring cold;
  cold.shift = 1.5;
  ModelScorer shifted(model, items, kTextLen, comm_, "model", cold);
  EXPECT_EQ(shifted.params().at("cold_shift").get<double>(), 1.5);
  const Evaluator::Block blk = valid.block(0);
  ASSERT_GT(blk.request.size(), 0);
  const torch::Tensor diff = shifted.score(blk.request) - plain.score(blk.request);
  const torch::Tensor expected =
      torch::from_blob(items.cold.data(), {static_cast<std::int64_t>(items.cold.size())}, torch::kByte)
          .to(torch::kFloat)
          .mul(1.5)
          .expand_as(diff);
  EXPECT_TRUE(torch::allclose(diff, expected, 1e-5, 1e-5));
}

TEST_F(ModelScorerTest, ColdItemsBorrowTheirNeighboursIdVectors) {
  DatasetFile file(dataset_);
  Recommender model = make_model(file);
  Evaluator valid(file, comm_, "valid", EvalConfig{});
  ItemTable items = valid.items();
  for (std::size_t i = 0; i < items.cold.size(); i += 4) items.cold[i] = 1;
  const std::int64_t n = valid.num_items();
  const TfidfMatrix tfidf = tfidf_matrix(items, kTextLen, file.vocab(), {});
  ColdScoring cold;
  cold.neighbour_weight = 0.7;
  cold.neighbours = tfidf_neighbours(tfidf, items.cold, 3);
  const torch::Tensor lent = neighbour_id_vectors(model, cold.neighbours);
  const torch::Tensor table = model->item_id_embedding->weight.detach();
  std::int64_t lending_items = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const ItemNeighbours& row = cold.neighbours[static_cast<std::size_t>(i)];
    torch::Tensor expected = torch::zeros({table.size(1)});
    double total = 0;
    for (float s : row.similarity) total += s;
    for (std::size_t k = 0; k < row.items.size(); ++k)
      expected += table[row.items[k]] * (row.similarity[k] / total);
    lending_items += !row.items.empty();
    ASSERT_TRUE(torch::allclose(lent[i], expected, 1e-5, 1e-6)) << "item " << i;
  }
  EXPECT_GT(lending_items, 0);
  ModelScorer plain(model, items, kTextLen, comm_);
  ModelScorer lending(model, items, kTextLen, comm_, "model", cold);
  EXPECT_TRUE(torch::allclose(lending.item_vectors(), plain.item_vectors() + 0.7 * lent, 1e-5, 1e-6));
  // A warm item with neighbours is refused (it has its own ID vector).
  ItemTable warm_again = items;
  const auto lender = std::find_if(cold.neighbours.begin(), cold.neighbours.end(),
                                   [](const ItemNeighbours& row) { return !row.items.empty(); });
  warm_again.cold[static_cast<std::size_t>(lender - cold.neighbours.begin())] = 0;
  EXPECT_THROW(ModelScorer(model, warm_again, kTextLen, comm_, "model", cold), Error);
}

TEST_F(ModelScorerTest, CalibrationCurveIsTheEvaluationOfEachPointOnAnyWorldSize) {
  DatasetFile file(dataset_);
  Recommender model = make_model(file);
  EvalConfig e = withheld_config();
  e.cold_calibration.neighbours = 4;
  Evaluator valid(file, comm_, "valid", e);
  const ColdCalibration c = calibrate_cold(model, valid, kTextLen, file.vocab());
  ASSERT_TRUE(c.skipped.empty()) << c.skipped;
  ASSERT_EQ(c.weights, cold_weight_grid());
  ASSERT_EQ(c.shifts, cold_shift_grid());
  ASSERT_EQ(c.ndcg10.size(), c.weights.size() * c.shifts.size());
  EXPECT_GT(c.scale, 0);
  EXPECT_EQ(c.withheld, static_cast<std::int64_t>(cold_withheld_items(valid.items().cold, 0.2, 5).size()));
  EXPECT_GT(c.cold_users, 0);
  const auto best =
      static_cast<std::size_t>(std::max_element(c.ndcg10.begin(), c.ndcg10.end()) - c.ndcg10.begin());
  const std::size_t per = c.shifts.size();
  EXPECT_EQ(c.scoring.neighbour_weight, c.weights[best / per]);
  EXPECT_EQ(c.scoring.shift, c.scale * c.shifts[best % per]);
  // The curve moves (a large shift fills every top 10 with text-only items).
  EXPECT_NE(c.ndcg10.front(), c.ndcg10[per - 1]);
  // The real cold items' neighbours, when they borrow.
  EXPECT_EQ(c.scoring.neighbours.empty(), c.scoring.neighbour_weight == 0);

  // Point (a, g) of the curve is evaluate() of the model with those IDs
  // withheld, alpha = weights[a] and b = scale * shifts[g].
  ItemTable items = valid.items();
  for (std::int64_t i : cold_withheld_items(items.cold, 0.2, 5)) items.cold[static_cast<std::size_t>(i)] = 1;
  const TfidfMatrix tfidf =
      tfidf_matrix(valid.items(), kTextLen, file.vocab(), {e.tfidf.profile_items, e.tfidf.max_df});
  for (std::size_t g : {std::size_t{0}, best, per - 1, c.ndcg10.size() - 1}) {
    ColdScoring cold;
    cold.neighbour_weight = c.weights[g / per];
    cold.shift = c.scale * c.shifts[g % per];
    cold.neighbours = tfidf_neighbours(tfidf, items.cold, 4);
    ModelScorer s(model, items, kTextLen, comm_, "model", cold);
    EXPECT_NEAR(valid.evaluate(s).all.ndcg[0], c.ndcg10[g], 1e-12) << "grid point " << g;
  }

  // The same on one process (a world size of 1 inside this run).
  testing::LocalCommunicator local;
  Evaluator one(file, local, "valid", e);
  const ColdCalibration c1 = calibrate_cold(model, one, kTextLen, file.vocab());
  EXPECT_EQ(c1.scoring.shift, c.scoring.shift);
  EXPECT_EQ(c1.scoring.neighbour_weight, c.scoring.neighbour_weight);
  EXPECT_EQ(c1.scale, c.scale);
  EXPECT_EQ(c1.ndcg10, c.ndcg10);
  EXPECT_EQ(c1.cold_users, c.cold_users);
}

/// `inner` with the items of `out` left out of the ranking (score -inf).
class LeftOutScorer : public Scorer {
 public:
  LeftOutScorer(Scorer& inner, const std::vector<std::uint8_t>& out)
      : inner_(inner),
        out_(torch::from_blob(const_cast<std::uint8_t*>(out.data()), {static_cast<std::int64_t>(out.size())},
                              torch::kByte)
                 .to(torch::kBool)) {}
  std::string name() const override { return inner_.name(); }
  nlohmann::json params() const override { return inner_.params(); }
  at::Tensor score(const ScoreRequest& request) override {
    return inner_.score(request).masked_fill(out_.unsqueeze(0), -std::numeric_limits<float>::infinity());
  }

 private:
  Scorer& inner_;
  at::Tensor out_;
};

TEST_F(ModelScorerTest, RealColdLeaveOutRanksTheWithheldItemsAloneAsNewOnes) {
  DatasetFile file(dataset_);
  Recommender model = make_model(file);
  EvalConfig e = withheld_config();
  e.cold_calibration.real_cold = "leave_out";
  Evaluator valid(file, comm_, "valid", e);
  const std::vector<std::uint8_t>& real = valid.items().cold;
  ASSERT_GT(std::count(real.begin(), real.end(), 1), 0) << "the shop needs items without training events";
  const ColdCalibration c = calibrate_cold(model, valid, kTextLen, file.vocab());
  ASSERT_TRUE(c.skipped.empty()) << c.skipped;
  EXPECT_EQ(c.real_cold, "leave_out");
  EXPECT_EQ(c.to_json().at("real_cold"), "leave_out");
  EXPECT_THAT(c.summary(), ::testing::HasSubstr("items without training events left out"));
  Evaluator rank_valid(file, comm_, "valid", withheld_config());
  const ColdCalibration ranked = calibrate_cold(model, rank_valid, kTextLen, file.vocab());
  EXPECT_EQ(ranked.real_cold, "rank");
  EXPECT_NE(c.ndcg10, ranked.ndcg10);

  // Each point is evaluate() of the withheld world with the real cold items
  // at -inf; cold_users counts the users whose target is withheld.
  const std::vector<std::int64_t> withheld = cold_withheld_items(real, 0.2, 5);
  ItemTable items = valid.items();
  for (std::int64_t i : withheld) items.cold[static_cast<std::size_t>(i)] = 1;
  const TfidfMatrix tfidf =
      tfidf_matrix(valid.items(), kTextLen, file.vocab(), {e.tfidf.profile_items, e.tfidf.max_df});
  const std::size_t per = c.shifts.size();
  for (std::size_t g : {std::size_t{0}, per - 1, c.ndcg10.size() - 1}) {
    ColdScoring cold;
    cold.neighbour_weight = c.weights[g / per];
    cold.shift = c.scale * c.shifts[g % per];
    cold.neighbours = tfidf_neighbours(tfidf, items.cold, e.cold_calibration.neighbours);
    ModelScorer s(model, items, kTextLen, comm_, "model", cold);
    LeftOutScorer left_out(s, real);
    EXPECT_NEAR(valid.evaluate(left_out).all.ndcg[0], c.ndcg10[g], 1e-12) << "grid point " << g;
  }
  std::vector<std::uint8_t> is_withheld(real.size(), 0);
  for (std::int64_t i : withheld) is_withheld[static_cast<std::size_t>(i)] = 1;
  std::vector<double> local;  // per user: target withheld, target withheld or cold
  for (std::int64_t call = 0; call < valid.calls(); ++call) {
    const Evaluator::Block blk = valid.block(call);
    for (std::int64_t t : blk.targets) {
      local.push_back(is_withheld[static_cast<std::size_t>(t)]);
      local.push_back(is_withheld[static_cast<std::size_t>(t)] | real[static_cast<std::size_t>(t)]);
    }
  }
  const std::vector<double> rows = valid.gather_user_rows(local, 2);
  double total_withheld = 0, total_cold = 0;
  for (std::size_t r = 0; r < rows.size(); r += 2) {
    total_withheld += rows[r];
    total_cold += rows[r + 1];
  }
  EXPECT_EQ(c.cold_users, static_cast<std::int64_t>(total_withheld));
  EXPECT_EQ(ranked.cold_users, static_cast<std::int64_t>(total_cold));
}

TEST_F(ModelScorerTest, TheFusionColdWorldWithholdsIdsAndEvidenceAndTunesOnItsColdTargets) {
  DatasetFile file(dataset_);
  Recommender model = make_model(file);
  EvalConfig e = withheld_config();
  e.fusion.cold_tolerance = 0.05;
  Evaluator valid(file, comm_, "valid", e);
  ColdScoring scoring;
  scoring.shift = 0.7;
  auto m = std::make_shared<ModelScorer>(model, valid.items(), kTextLen, comm_, "model", scoring);
  auto pop = std::make_shared<PopularityScorer>(valid.items().train_count);
  const std::vector<FusionComponent> components = {{m, 1.0}, {pop, 1.0}};
  const std::optional<FusionColdWorld> world = fusion_cold_world(components, valid, file.vocab());
  ASSERT_TRUE(world.has_value());
  const std::vector<std::int64_t> withheld = cold_withheld_items(valid.items().cold, 0.2, 5);
  ASSERT_FALSE(withheld.empty());
  EXPECT_EQ(world->withheld, static_cast<std::int64_t>(withheld.size()));
  ItemTable items = valid.items();
  for (std::int64_t i : withheld) items.cold[static_cast<std::size_t>(i)] = 1;
  EXPECT_EQ(world->cold, items.cold);
  ASSERT_EQ(world->scorers.size(), 2u);
  // The model: its IDs withheld on those items, the same shift.
  ModelScorer expected(model, items, kTextLen, comm_, "model", scoring);
  const Evaluator::Block blk = valid.block(0);
  ASSERT_GT(blk.request.size(), 0);
  EXPECT_TRUE(
      torch::allclose(world->scorers[0]->score(blk.request), expected.score(blk.request), 1e-6, 1e-6));
  // Popularity: no evidence on the withheld items (the row's lowest score
  // among the others), the rest as it was.
  const torch::Tensor got = world->scorers[1]->score(blk.request), plain = pop->score(blk.request);
  torch::Tensor hidden = torch::zeros({valid.num_items()}, torch::kBool);
  for (std::int64_t i : withheld) hidden[i] = true;
  const torch::Tensor low = std::get<0>(plain.masked_fill(hidden.unsqueeze(0), 1e30f).min(1, true));
  EXPECT_TRUE(torch::equal(got.masked_select(hidden.logical_not().unsqueeze(0).expand_as(got)),
                           plain.masked_select(hidden.logical_not().unsqueeze(0).expand_as(plain))));
  EXPECT_TRUE(torch::equal(got.masked_select(hidden.unsqueeze(0).expand_as(got)),
                           low.expand_as(got).masked_select(hidden.unsqueeze(0).expand_as(got))));

  // Tuning with the world: the NDCG@10 is the real one, the cold-target
  // figure of a point is that of the same fusion in the world over its
  // cold-target users.
  const FusionTuning plain_tuning = tune_fusion(components, 0, valid);
  const FusionTuning t = tune_fusion(components, 0, valid, &*world);
  EXPECT_EQ(t.cold_withheld, world->withheld);
  ASSERT_EQ(t.tried.size(), plain_tuning.tried.size());
  ASSERT_EQ(t.tried_ndcg10, plain_tuning.tried_ndcg10);
  for (std::size_t g : {std::size_t{0}, t.tried.size() / 2, t.tried.size() - 1}) {
    FusedScorer fused({{world->scorers[0], t.tried[g][0]}, {world->scorers[1], t.tried[g][1]}}, "fusion",
                      nullptr, t.tried_missing[g], world->cold, t.tried_cold[g]);
    std::vector<double> cold_mean;
    valid.mean_ndcg(
        10, 1, [&](const Evaluator::Block& b, int) { return fused.score(b.request); }, "world", &cold_mean,
        &world->cold);
    EXPECT_NEAR(t.tried_cold_ndcg10[g], cold_mean[0], 1e-12) << "point " << g;
  }

  // real_cold leave_out: the world marks the real cold items left out, and
  // every figure of the tuning is the world's with them at -inf: NDCG@10
  // over all users, the cold one over the users whose target is withheld.
  EvalConfig lo = e;
  lo.cold_calibration.real_cold = "leave_out";
  Evaluator lo_valid(file, comm_, "valid", lo);
  const std::optional<FusionColdWorld> lo_world = fusion_cold_world(components, lo_valid, file.vocab());
  ASSERT_TRUE(lo_world.has_value());
  EXPECT_EQ(lo_world->left_out, valid.items().cold);
  EXPECT_TRUE(world->left_out.empty());
  const FusionTuning lt = tune_fusion(components, 0, lo_valid, &*lo_world);
  EXPECT_TRUE(lt.real_cold_left_out);
  EXPECT_FALSE(t.real_cold_left_out);
  std::vector<std::uint8_t> withheld_only(lo_world->cold.size(), 0);
  for (std::int64_t i : withheld) withheld_only[static_cast<std::size_t>(i)] = 1;
  const torch::Tensor out = torch::from_blob(const_cast<std::uint8_t*>(lo_world->left_out.data()),
                                             {valid.num_items()}, torch::kByte)
                                .to(torch::kBool);
  for (std::size_t g : {std::size_t{0}, lt.tried.size() / 2, lt.tried.size() - 1}) {
    FusedScorer fused({{lo_world->scorers[0], lt.tried[g][0]}, {lo_world->scorers[1], lt.tried[g][1]}},
                      "fusion", nullptr, lt.tried_missing[g], lo_world->cold, lt.tried_cold[g]);
    std::vector<double> cold_mean;
    const std::vector<double> all = lo_valid.mean_ndcg(
        10, 1,
        [&](const Evaluator::Block& b, int) {
          return fused.score(b.request).masked_fill(out.unsqueeze(0),
                                                    -std::numeric_limits<float>::infinity());
        },
        "world", &cold_mean, &withheld_only);
    EXPECT_NEAR(lt.tried_ndcg10[g], all[0], 1e-12) << "point " << g;
    EXPECT_NEAR(lt.tried_cold_ndcg10[g], cold_mean[0], 1e-12) << "point " << g;
  }
  const FusedScorer lo_fused = fused_with_tuning(components, lt, valid.items().cold);
  EXPECT_THAT(lo_fused.params().dump(), ::testing::HasSubstr("items without training events left out"));

  // No world without ID vectors, or with the calibration off.
  auto no_ids = std::make_shared<ModelScorer>(make_model(file, false), valid.items(), kTextLen, comm_);
  EXPECT_FALSE(fusion_cold_world({{no_ids, 1.0}, {pop, 1.0}}, valid, file.vocab()).has_value());
  EvalConfig off = e;
  off.cold_calibration.enabled = false;
  Evaluator off_valid(file, comm_, "valid", off);
  EXPECT_FALSE(fusion_cold_world(components, off_valid, file.vocab()).has_value());
}

TEST_F(ModelScorerTest, NoCalibrationWithoutIdVectorsOrWhenOff) {
  DatasetFile file(dataset_);
  EvalConfig e;
  Evaluator valid(file, comm_, "valid", e);
  const ColdCalibration no_ids = calibrate_cold(make_model(file, false), valid, kTextLen, file.vocab());
  EXPECT_EQ(no_ids.scoring.shift, 0.0);
  EXPECT_EQ(no_ids.scoring.neighbour_weight, 0.0);
  EXPECT_TRUE(no_ids.ndcg10.empty());
  EXPECT_THAT(no_ids.summary(), ::testing::HasSubstr("item_id_embedding"));
  e.cold_calibration.enabled = false;
  Evaluator off_valid(file, comm_, "valid", e);
  const ColdCalibration off = calibrate_cold(make_model(file), off_valid, kTextLen, file.vocab());
  EXPECT_TRUE(off.ndcg10.empty());
  EXPECT_THAT(off.summary(), ::testing::HasSubstr("enabled is false"));
  Evaluator test(file, comm_, "test", EvalConfig{});
  EXPECT_THROW(calibrate_cold(make_model(file), test, kTextLen, file.vocab()), Error);
}

}  // namespace
}  // namespace llmrec
