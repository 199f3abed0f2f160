// Distributed evaluation on W = 1, 2, 3 ranks: every figure bitwise equal to
// a one-process evaluation (computed here on rank 0 with a world-size-1
// communicator) and the same on every rank; equal score() calls on every
// rank; fusion and its tuning; the result file's protocol.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/sha256.h"
#include "tests/mpi_test_main.h"
#include "tests/trainer/eval_test_util.h"
#include "trainer/baselines.h"
#include "trainer/evaluation.h"
#include "trainer/fusion.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::llmrec::testing::LocalCommunicator;
using ::llmrec::testing::test_comm;
using ::testing::HasSubstr;

class EvaluationTest : public ::testing::Test {
 protected:
  static std::string path_;
  Communicator& comm_ = test_comm();
  static void SetUpTestSuite() {
    SynthOptions o;
    o.items = 400;
    o.users = 253;  // not a multiple of the block size, 2 or 3
    o.mean_history = 12;
    o.seed = 5;
    path_ = ::llmrec::testing::make_synth_dataset(test_comm(), "evaluation", o);
  }
  static void TearDownTestSuite() { ::llmrec::testing::remove_dataset_dir(test_comm(), path_); }

  static EvalConfig config() {
    EvalConfig c;
    c.k = {5, 10, 20};
    c.batch_users = 7;
    c.itemknn.neighbours = 20;
    c.bpr.dim = 8;
    c.bpr.epochs = 4;
    c.bpr.tune_max_epochs = 8;  // ItemKNN and BPR tuned on valid (the defaults), kept small
    c.bpr.tune_eval_every = 4;
    c.oracle_dir = ::llmrec::testing::shop_dir_of(path_);
    return c;
  }
  // The scorers of one evaluation run, built over `c` (collective on c).
  static std::vector<std::shared_ptr<Scorer>> scorers(const DatasetFile& f, Communicator& c,
                                                      Evaluator& valid) {
    auto s = create_baseline_scorers({"popularity", "itemknn", "bpr", "oracle"}, f, c, config());
    s.push_back(
        std::make_shared<FusedScorer>(std::vector<FusionComponent>{{s[1], 1.0}, {s[2], 0.5}}, "fusion"));
    FusionTuning t = tune_fusion({{s[1], 1.0}, {s[2], 1.0}, {s[0], 1.0}}, 0, valid);
    s.push_back(std::make_shared<FusedScorer>(
        fused_with_tuning({{s[1], 1.0}, {s[2], 1.0}, {s[0], 1.0}}, t, valid.items().cold)));
    return s;
  }
};
std::string EvaluationTest::path_;

/// Every double and count of a result, as raw bits.
std::vector<std::int64_t> bits_of(const EvalResult& r) {
  std::vector<std::int64_t> out = {r.users,          r.users_evaluated, r.users_skipped,
                                   r.repeat_targets, r.all.users,       r.cold.users};
  for (const auto& [name, v] : eval_figures(r)) {
    std::int64_t b = 0;
    std::memcpy(&b, &v, sizeof b);
    out.push_back(b);
  }
  return out;
}

TEST_F(EvaluationTest, EveryFigureIsBitwiseTheSameAsOneRankAndOnEveryRank) {
  DatasetFile f(path_);
  for (const std::string split : {"valid", "test"}) {
    Evaluator valid(f, comm_, "valid", config());
    auto dist_scorers = scorers(f, comm_, valid);
    Evaluator ev(f, comm_, split, config());
    std::vector<std::vector<std::int64_t>> got;
    for (auto& s : dist_scorers) got.push_back(bits_of(ev.evaluate(*s)));

    // Every rank returned the same bits.
    for (std::size_t k = 0; k < got.size(); ++k) {
      at::Tensor all = comm_.all_gather(at::tensor(got[k], at::kLong));
      for (int r = 1; r < comm_.size(); ++r) {
        EXPECT_TRUE(at::equal(all[r], all[0])) << dist_scorers[k]->name() << " differs on rank " << r;
      }
    }
    if (comm_.rank() != 0) continue;
    // The reference: one process, whole dataset, world size 1.
    LocalCommunicator local;
    Evaluator valid1(f, local, "valid", config());
    auto ref_scorers = scorers(f, local, valid1);
    Evaluator ev1(f, local, split, config());
    for (std::size_t k = 0; k < ref_scorers.size(); ++k) {
      EvalResult want = ev1.evaluate(*ref_scorers[k]);
      EXPECT_EQ(got[k], bits_of(want))
          << split << ": " << want.scorer << " differs from one rank with " << comm_.size() << " ranks";
      EXPECT_GT(want.users_evaluated, 200);
      // The same parameters, the tuned ones of ItemKNN and BPR included.
      EXPECT_EQ(ref_scorers[k]->params().dump(), dist_scorers[k]->params().dump()) << want.scorer;
    }
  }
}

/// Counts its score() calls and runs a collective in each: evaluation must
/// call it the same number of times on every rank or the job would hang.
class CollectiveScorer : public Scorer {
 public:
  CollectiveScorer(Communicator& comm, std::int64_t n) : comm_(comm), n_(n) {}
  std::string name() const override { return "collective"; }
  nlohmann::json params() const override { return nlohmann::json::object(); }
  at::Tensor score(const ScoreRequest& r) override {
    at::Tensor t = at::tensor({r.size()}, at::kLong);
    comm_.all_reduce(t);
    ++calls;
    return at::zeros({r.size(), n_}, at::kFloat);
  }
  int calls = 0;

 private:
  Communicator& comm_;
  std::int64_t n_;
};

TEST_F(EvaluationTest, EveryRankCallsScoreEquallyOftenSoScorersMayUseCollectives) {
  DatasetFile f(path_);
  for (int batch : {1, 7, 100, 1000}) {
    EvalConfig c = config();
    c.batch_users = batch;
    CollectiveScorer s(comm_, f.num_items());
    Evaluator ev(f, comm_, "test", c);
    EvalResult r = ev.evaluate(s);
    EXPECT_EQ(s.calls, eval_shard(f.num_users(), batch, comm_.rank(), comm_.size()).calls);
    EXPECT_EQ(s.calls, ev.calls());
    EXPECT_EQ(r.users_evaluated + r.users_skipped, f.num_users());
  }
}

TEST_F(EvaluationTest, ScoresOfTheWrongShapeOrNanNameTheScorer) {
  DatasetFile f(path_);
  ::llmrec::testing::FixedScorer short_row("short", std::vector<float>(10, 0.0f));
  Evaluator ev(f, comm_, "test", config());
  try {
    ev.evaluate(short_row);
    ADD_FAILURE() << "a [B, 10] score tensor was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("scorer 'short' returned shape"));
  }
  std::vector<float> row(static_cast<std::size_t>(f.num_items()), 1.0f);
  row[3] = std::nanf("");
  ::llmrec::testing::FixedScorer nan("nan", row);
  try {
    ev.evaluate(nan);
    ADD_FAILURE() << "a NaN score was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("scorer 'nan', user"));
    EXPECT_THAT(e.what(), HasSubstr("item 3 has score nan"));
  }
  // The failed evaluations left the ranks out of step; realign before the next test.
  comm_.barrier();
}

TEST(FusionMaths, StandardisesPerUserCombinesAndGivesEachPolicyItsColdWeights) {
  // Pure standardisation: mean 2, population std sqrt(2/3) over finite scores.
  const float s[] = {1.0f, 2.0f, 3.0f, -std::numeric_limits<float>::infinity()};
  float z[4];
  fusion_standardise(s, 4, z);
  const double sd = std::sqrt(2.0 / 3.0);
  EXPECT_FLOAT_EQ(z[0], static_cast<float>(-1.0 / sd));
  EXPECT_FLOAT_EQ(z[1], 0.0f);
  EXPECT_FLOAT_EQ(z[2], static_cast<float>(1.0 / sd));
  EXPECT_EQ(z[3], -std::numeric_limits<float>::infinity());
  const float flat[] = {4.0f, 4.0f};
  fusion_standardise(flat, 2, z);
  EXPECT_EQ(z[0], 0.0f);
  // Combination skips weight 0 (even -inf there) and keeps -inf of a weighted one.
  const float a[] = {1.0f, -std::numeric_limits<float>::infinity(), 2.0f};
  const float b[] = {-std::numeric_limits<float>::infinity(), 1.0f, 0.5f};
  float out[3];
  fusion_combine({a, b}, {2.0, 0.0}, 3, out);
  EXPECT_EQ(out[0], 2.0f);
  EXPECT_EQ(out[1], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(out[2], 4.0f);
  // Cold items (1 and 2) take the cold weights; a weight 0 leaves out even
  // a -inf (b's at item 1); a weighted -inf stays (a's at item 1).
  const std::uint8_t cold[] = {0, 1, 1};
  fusion_combine({a, b}, {2.0, 1.0}, 3, out, cold, {3.0, 0.0});
  EXPECT_EQ(out[0], -std::numeric_limits<float>::infinity());  // warm: 2 a + b, b's -inf
  EXPECT_EQ(out[1], -std::numeric_limits<float>::infinity());  // a's own -inf stays
  EXPECT_FLOAT_EQ(out[2], 3.0f * 2.0f);
  fusion_combine({a, b}, {2.0, 1.0}, 3, out, cold, {0.0, 0.5});
  EXPECT_FLOAT_EQ(out[1], 0.5f);  // a left out, b alone
  EXPECT_FLOAT_EQ(out[2], 0.25f);
  // The policies' cold weights: scored = the weights; renormalised = the
  // components that score cold items scaled to the full weight; own =
  // tuned, 0 forced on the collaborative ones.
  const std::vector<bool> scores_cold = {true, false, true};
  EXPECT_EQ(fusion_cold_weights(FusionMissing::kScored, {1.0, 2.0, 1.0}, scores_cold),
            (std::vector<double>{1.0, 2.0, 1.0}));
  EXPECT_EQ(fusion_cold_weights(FusionMissing::kRenormalise, {1.0, 2.0, 1.0}, scores_cold),
            (std::vector<double>{2.0, 0.0, 2.0}));  // x (4 / 2)
  EXPECT_EQ(fusion_cold_weights(FusionMissing::kRenormalise, {0.0, 2.0, 0.0}, scores_cold),
            (std::vector<double>{0.0, 0.0, 0.0}));  // nobody scores cold items
  EXPECT_EQ(fusion_cold_weights(FusionMissing::kColdWeights, {1.0, 2.0, 1.0}, scores_cold, {0.5, 4.0, 2.0}),
            (std::vector<double>{0.5, 0.0, 2.0}));
  EXPECT_THROW(fusion_cold_weights(FusionMissing::kColdWeights, {1.0, 2.0, 1.0}, scores_cold), Error);
  EXPECT_EQ(parse_fusion_missing("cold_weights", "x"), FusionMissing::kColdWeights);
  EXPECT_EQ(parse_fusion_missing("renormalise", "x"), FusionMissing::kRenormalise);
  EXPECT_THROW(parse_fusion_missing("zero", "eval.fusion.missing"), ConfigError);
}

TEST_F(EvaluationTest, FusionTuningPicksTheBestGridPoint) {
  // Tuning: the oracle fused with a random ranking. The chosen weights are
  // the first best grid point, and the fused scorer with them evaluates to
  // exactly the NDCG@10 the tuning measured.
  DatasetFile f(path_);
  EvalConfig c = config();
  c.fusion.cold_tolerance = 0;
  auto base = create_baseline_scorers({"oracle"}, f, comm_, c);
  auto random = std::make_shared<::llmrec::testing::RandomScorer>(f.num_items());
  Evaluator valid(f, comm_, "valid", c);
  FusionTuning t = tune_fusion({{base[0], 1.0}, {random, 1.0}}, 0, valid);  // cold_tolerance 0 (set above)
  // Both score cold items: the warm grid (scored), then the cold weights
  // of both with the best warm weights kept.
  const std::size_t n = fusion_grid().size();
  ASSERT_EQ(t.tried.size(), n + n * n);
  std::size_t best = 0;
  for (std::size_t g = 0; g < t.tried.size(); ++g) {
    if (g < n) {
      EXPECT_EQ(t.tried[g], (std::vector<double>{1.0, fusion_grid()[g]}));  // reference fixed at 1
      EXPECT_EQ(t.tried_cold[g], t.tried[g]);                               // scored: the same weights
    } else {
      EXPECT_EQ(t.tried_missing[g], FusionMissing::kColdWeights);
      EXPECT_EQ(t.tried_cold[g],
                (std::vector<double>{fusion_grid()[(g - n) / n], fusion_grid()[(g - n) % n]}));
    }
    if (t.tried_ndcg10[g] > t.tried_ndcg10[best]) best = g;
  }
  EXPECT_EQ(t.weights, t.tried[best]);
  EXPECT_EQ(t.ndcg10, t.tried_ndcg10[best]);
  EXPECT_LT(t.tried_ndcg10[n - 1], t.ndcg10 - 0.05);  // random at weight 4 drowns the oracle
  FusedScorer fused = fused_with_tuning({{base[0], 1.0}, {random, 1.0}}, t, valid.items().cold);
  EXPECT_DOUBLE_EQ(valid.evaluate(fused).all.ndcg[1], t.ndcg10);  // config k = {5, 10, 20}
  // Weight 0 for the random ranking: the oracle alone (up to float rounding of z).
  EXPECT_NEAR(t.tried_ndcg10.front(), valid.evaluate(*base[0]).all.ndcg[1], 2e-3);
  EXPECT_EQ(fused.params()["tuning"]["objective"], "NDCG@10");
  auto all_zero = [&] { FusedScorer bad({{random, 0.0}}); };
  EXPECT_THROW(all_zero(), ConfigError);
}

TEST_F(EvaluationTest, FusionTuningWithACollaborativeComponentAndTheColdTolerance) {
  DatasetFile f(path_);
  EvalConfig c = config();
  c.fusion.cold_tolerance = 0;
  auto base = create_baseline_scorers({"oracle"}, f, comm_, c);
  Evaluator valid(f, comm_, "valid", c);
  const std::size_t n = fusion_grid().size();
  // A collaborative component: the renormalised grid is tried after the
  // scored one, then the cold weights of the oracle (popularity cannot
  // score cold items) with the best warm weights; a renormalised point and
  // an own-cold-weights point evaluate to what tuning measured.
  auto pop = create_baseline_scorers({"popularity"}, f, comm_, c);
  ASSERT_GT(std::count(valid.items().cold.begin(), valid.items().cold.end(), std::uint8_t{1}), 0);
  FusionTuning tc = tune_fusion({{base[0], 1.0}, {pop[0], 1.0}}, 0, valid);
  ASSERT_EQ(tc.tried.size(), 3 * n);
  EXPECT_EQ(tc.tried_missing.front(), FusionMissing::kScored);
  EXPECT_EQ(tc.tried_missing[n], FusionMissing::kRenormalise);
  EXPECT_EQ(tc.tried_missing.back(), FusionMissing::kColdWeights);
  const std::size_t g = n + 4;  // renormalised, popularity weight 1
  FusedScorer renorm({{base[0], 1.0}, {pop[0], tc.tried[g][1]}}, "fusion", nullptr,
                     FusionMissing::kRenormalise, valid.items().cold);
  EXPECT_DOUBLE_EQ(valid.evaluate(renorm).all.ndcg[1], tc.tried_ndcg10[g]);
  EXPECT_EQ(renorm.cold_weights(), (std::vector<double>{2.0, 0.0}));
  // Popularity no longer pushes the oracle's cold items down.
  EXPECT_GT(tc.tried_ndcg10[g], tc.tried_ndcg10[4]);
  EXPECT_EQ(renorm.params()["missing"], "renormalise");
  std::size_t best_warm = 0;
  for (std::size_t p = 0; p < 2 * n; ++p) {
    if (tc.tried_ndcg10[p] > tc.tried_ndcg10[best_warm]) best_warm = p;
  }
  for (std::size_t p = 2 * n; p < 3 * n; ++p) {
    EXPECT_EQ(tc.tried[p], tc.tried[best_warm]);  // the warm weights kept
    EXPECT_EQ(tc.tried_cold[p], (std::vector<double>{fusion_grid()[p - 2 * n], 0.0}));
  }
  const std::size_t own = 2 * n + 6;  // the oracle's cold weight 4
  FusedScorer own_cold({{base[0], 1.0}, {pop[0], tc.tried[own][1]}}, "fusion", nullptr,
                       FusionMissing::kColdWeights, valid.items().cold, tc.tried_cold[own]);
  EXPECT_DOUBLE_EQ(valid.evaluate(own_cold).all.ndcg[1], tc.tried_ndcg10[own]);
  EXPECT_GE(tc.ndcg10, tc.tried_ndcg10[best_warm]);

  // The cold tolerance: 0 picks the best NDCG@10 alone; otherwise the best
  // cold-target NDCG@10 among the points within the tolerance of the best.
  double top = 0;
  for (double v : tc.tried_ndcg10) top = std::max(top, v);
  for (double tolerance : {0.0, 0.05, 0.2}) {
    EvalConfig ct = config();
    ct.fusion.cold_tolerance = tolerance;
    Evaluator v(f, comm_, "valid", ct);
    const FusionTuning tt = tune_fusion({{base[0], 1.0}, {pop[0], 1.0}}, 0, v);
    ASSERT_EQ(tt.tried_ndcg10, tc.tried_ndcg10);  // the same points, the same figures
    EXPECT_EQ(tt.cold_tolerance, tolerance);
    EXPECT_GE(tt.ndcg10, (1.0 - tolerance) * top);
    if (tolerance == 0) {
      EXPECT_EQ(tt.ndcg10, top);
    }
    for (std::size_t p = 0; p < tt.tried.size(); ++p) {
      if (tt.tried_ndcg10[p] >= (1.0 - tolerance) * top) {
        EXPECT_GE(tt.cold_ndcg10, tt.tried_cold_ndcg10[p]);
      }
    }
  }
  // A cold-target NDCG@10 that tells points apart (the oracle ranks cold
  // targets first, popularity buries them when scored).
  EXPECT_GT(*std::max_element(tc.tried_cold_ndcg10.begin(), tc.tried_cold_ndcg10.end()),
            *std::min_element(tc.tried_cold_ndcg10.begin(), tc.tried_cold_ndcg10.end()) + 0.1);
}

TEST(SwapHistories, RowTakesTheNextRowsUserAndHistoryAndKeepsItsQueryTime) {
  ScoreRequest req;
  const std::int32_t a[] = {1, 2}, b[] = {3}, c[] = {4, 5, 6};
  const std::int64_t ta[] = {10, 11}, tb[] = {12}, tc[] = {13, 14, 15};
  req.add_user(100, a, ta, 2, 1000);
  req.add_user(101, b, tb, 1, 1001);
  req.add_user(102, c, tc, 3, 1002);
  const ScoreRequest s = swap_histories(req);
  EXPECT_EQ(s.users, (std::vector<std::int64_t>{101, 102, 100}));
  EXPECT_EQ(s.history_offsets, (std::vector<std::int64_t>{0, 1, 4, 6}));
  EXPECT_EQ(s.history_items, (std::vector<std::int32_t>{3, 4, 5, 6, 1, 2}));
  EXPECT_EQ(s.history_times, (std::vector<std::int64_t>{12, 13, 14, 15, 10, 11}));
  EXPECT_EQ(s.query_times, req.query_times);
  ScoreRequest one;
  one.add_user(7, a, ta, 2, 5);
  const ScoreRequest same = swap_histories(one);
  EXPECT_EQ(same.users, one.users);
  EXPECT_EQ(same.history_items, one.history_items);
}

// Popularity reads neither the user nor the history, so swapping them
// changes nothing (the excluded items stay the user's own); ItemKNN and the
// oracle lose what they got from knowing the user.
TEST_F(EvaluationTest, SwappedHistoriesLeavePopularityAsItIsAndCostPersonalisedScorers) {
  DatasetFile f(path_);
  EvalConfig c = config();
  EvalConfig swapped = c;
  swapped.swap_histories = true;
  auto s = create_baseline_scorers({"popularity", "itemknn", "oracle"}, f, comm_, c);
  EXPECT_EQ(bits_of(evaluate(*s[0], f, comm_, "test", swapped)),
            bits_of(evaluate(*s[0], f, comm_, "test", c)));
  for (std::size_t k : {1u, 2u}) {
    const double own = evaluate(*s[k], f, comm_, "test", c).all.ndcg[1];
    const double other = evaluate(*s[k], f, comm_, "test", swapped).all.ndcg[1];
    EXPECT_LT(other, own) << s[k]->name();
  }
  EXPECT_THAT(eval_protocol(f, "test", swapped, "", 1).history, HasSubstr("eval.swap_histories"));
}

TEST(EvalSegments, BucketsOfHistoryLengthAndPopularity) {
  EXPECT_EQ(eval_history_segments()[eval_history_segment(0)], "0-2");
  EXPECT_EQ(eval_history_segments()[eval_history_segment(2)], "0-2");
  EXPECT_EQ(eval_history_segments()[eval_history_segment(3)], "3-4");
  EXPECT_EQ(eval_history_segments()[eval_history_segment(4)], "3-4");
  EXPECT_EQ(eval_history_segments()[eval_history_segment(5)], "5-9");
  EXPECT_EQ(eval_history_segments()[eval_history_segment(49)], "20-49");
  EXPECT_EQ(eval_history_segments()[eval_history_segment(50)], "50+");
  EXPECT_EQ(eval_popularity_segments()[eval_popularity_segment(0)], "0 (cold)");
  EXPECT_EQ(eval_popularity_segments()[eval_popularity_segment(9)], "1-9");
  EXPECT_EQ(eval_popularity_segments()[eval_popularity_segment(10)], "10-49");
  EXPECT_EQ(eval_popularity_segments()[eval_popularity_segment(199)], "50-199");
  EXPECT_EQ(eval_popularity_segments()[eval_popularity_segment(200)], "200+");
}

TEST_F(EvaluationTest, SegmentsPartitionTheUsersAndAverageToTheWhole) {
  DatasetFile f(path_);
  EvalConfig c = config();  // k = {5, 10, 20}: the segments use K = 10
  auto knn = create_baseline_scorers({"itemknn"}, f, comm_, c);
  Evaluator test(f, comm_, "test", c);
  const EvalResult r = test.evaluate(*knn[0]);
  EXPECT_EQ(r.segment_k, 10);
  ASSERT_EQ(r.segments.size(), eval_history_segments().size() + eval_popularity_segments().size());
  for (const char* by : {"history_length", "target_popularity"}) {
    std::int64_t users = 0;
    double ndcg = 0, recall = 0;
    for (const EvalSegment& s : r.segments) {
      if (s.by != by || s.users == 0) continue;
      users += s.users;
      ndcg += s.ndcg * static_cast<double>(s.users);
      recall += s.recall * static_cast<double>(s.users);
    }
    EXPECT_EQ(users, r.users_evaluated) << by;
    EXPECT_NEAR(ndcg / static_cast<double>(users), r.all.ndcg[1], 1e-9) << by;
    EXPECT_NEAR(recall / static_cast<double>(users), r.all.recall[1], 1e-9) << by;
  }
  // The cold segment of popularity is the cold group.
  const EvalSegment& cold = r.segments[eval_history_segments().size()];
  EXPECT_EQ(cold.range, "0 (cold)");
  EXPECT_EQ(cold.users, r.cold.users);
  if (cold.users > 0) {
    EXPECT_NEAR(cold.ndcg, r.cold.ndcg[1], 1e-9);
  }
}

TEST_F(EvaluationTest, ResultFileCarriesTheProtocol) {
  DatasetFile f(path_);
  EvalConfig c = config();
  auto pop = create_baseline_scorers({"popularity"}, f, comm_, c);
  EvalResult r = evaluate(*pop[0], f, comm_, "test", c);
  if (comm_.rank() != 0) return;
  const std::string yaml = "run:\n  dir: x\n";
  const std::string out = (fs::path(path_).parent_path() / "eval_test.json").string();
  write_eval_result(out, r, eval_protocol(f, "test", c, yaml, comm_.size()));
  nlohmann::json j = nlohmann::json::parse(std::ifstream(out));
  EXPECT_EQ(j["format"], "llmrec-eval");
  EXPECT_EQ(j["version"], 1);
  const auto& p = j["protocol"];
  EXPECT_EQ(p["dataset"], path_);
  EXPECT_EQ(p["dataset_sha256"], sha256_file(path_));
  EXPECT_EQ(p["dataset_settings"]["split_method"], "leave_last_out");
  EXPECT_EQ(p["dataset_settings"]["filtering"]["min_user_events"], 3);
  EXPECT_EQ(p["dataset_settings"]["filtering"]["kcore"], 0);
  EXPECT_EQ(p["dataset_settings"]["report"]["users"], f.num_users());
  EXPECT_EQ(p["split"], "test");
  EXPECT_EQ(p["ranking"], fmt::format("full ranking over {} items, history excluded", f.num_items()));
  EXPECT_THAT(p["history"].get<std::string>(), HasSubstr("validation event"));
  EXPECT_EQ(p["k"], nlohmann::json({5, 10, 20}));
  EXPECT_EQ(p["scorers"][0]["name"], "popularity");
  EXPECT_TRUE(p["scorers"][0]["params"].is_object());
  EXPECT_EQ(p["config_sha256"], sha256_hex(yaml));
  EXPECT_EQ(p["world_size"], comm_.size());
  const auto& res = j["results"][0];
  EXPECT_EQ(res["segments"]["k"], 10);
  EXPECT_EQ(res["segments"]["history_length"].size(), eval_history_segments().size());
  EXPECT_EQ(res["segments"]["target_popularity"][0]["range"], "0 (cold)");
  EXPECT_EQ(res["scorer"], "popularity");
  EXPECT_EQ(res["users"]["evaluated"], r.users_evaluated);
  EXPECT_EQ(res["users"]["skipped_without_test_event"], r.users_skipped);
  EXPECT_DOUBLE_EQ(res["all"]["ndcg@10"].get<double>(), r.all.ndcg[1]);
  EXPECT_DOUBLE_EQ(res["cold"]["recall@20"].get<double>(), r.cold.recall[2]);
  EXPECT_TRUE(res["all"].contains("diversity@5"));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
}

}  // namespace
}  // namespace llmrec
