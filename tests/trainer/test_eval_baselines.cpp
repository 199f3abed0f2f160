// Baselines on W = 1, 2, 3 ranks: popularity and ItemKNN on a hand-made
// dataset against hand-computed values, the evaluation of that dataset
// figure by figure, ItemKNN rows identical however they are distributed,
// and BPR: deterministic for a seed, the same on every rank, far better than
// a random ranking on a small synthetic shop. The validation tuning of
// ItemKNN and BPR: the choice is the best grid point evaluated independently
// here, the same on every rank; tune: false keeps the configured values.
// TF-IDF: hand-computed cosines, the profile window, the max_df stop terms,
// top terms, a cold item ranked first, and the same scores on every rank.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "tests/mpi_test_main.h"
#include "tests/trainer/eval_test_util.h"
#include "trainer/baselines.h"
#include "trainer/evaluation.h"

namespace llmrec {
namespace {

using ::llmrec::testing::test_comm;
using ::testing::ElementsAre;

// Items 0..4 (categories x x y y z); users, events oldest first:
//   u0: 0 1 2 | valid 3 | test 4      (4 has no training event: cold)
//   u1: 0 1   | valid 2 | test 3
//   u2: 1 2 3 | valid 0 | test 0      (the test item was consumed before)
//   u3: 0     | valid 1 | test 2
//   u4: 3 (training only: skipped in both splits)
// Training counts: 3 3 2 2 0. |U_i|: 3 3 2 2 0. Common users:
//   (0,1) 2   (0,2) 1   (1,2) 2   (1,3) 1   (2,3) 1
class HandDataset : public ::testing::Test {
 protected:
  static std::string path_;
  Communicator& comm_ = test_comm();

  static void SetUpTestSuite() {
    path_ = ::llmrec::testing::make_dataset_with(test_comm(), "hand", [](const std::string& p) {
      ::llmrec::testing::write_hand_dataset(p, {{0, 1, 2, 3, 4}, {0, 1, 2, 3}, {1, 2, 3, 0, 0}, {0, 1, 2}},
                                            {{3}}, {"x", "x", "y", "y", "z"});
    });
  }
  static void TearDownTestSuite() { ::llmrec::testing::remove_dataset_dir(test_comm(), path_); }
  static EvalConfig config(std::vector<int> k, int batch) {
    EvalConfig c;
    c.k = std::move(k);
    c.batch_users = batch;
    return c;
  }
};
std::string HandDataset::path_;

TEST_F(HandDataset, TrainingHistoriesAreGatheredInUserOrder) {
  DatasetFile f(path_);
  TrainingHistories h = gather_training_histories(f, comm_);
  EXPECT_THAT(h.offsets, ElementsAre(0, 3, 5, 8, 9, 10));
  EXPECT_THAT(h.items, ElementsAre(0, 1, 2, 0, 1, 1, 2, 3, 0, 3));
  EXPECT_EQ(h.num_items, 5);
}

TEST_F(HandDataset, PopularityScoresAreTrainingCounts) {
  DatasetFile f(path_);
  PopularityScorer pop(f.read_items().train_count);
  ScoreRequest r;
  const std::int32_t items[] = {0};
  const std::int64_t times[] = {1};
  r.add_user(0, items, times, 1, 2);
  r.add_user(3, items, times, 0, 2);
  at::Tensor s = pop.score(r);
  ASSERT_EQ(s.sizes(), (std::vector<std::int64_t>{2, 5}));
  for (int b = 0; b < 2; ++b) {
    EXPECT_TRUE(at::equal(s[b], at::tensor({3.0f, 3.0f, 2.0f, 2.0f, 0.0f})));
  }
  EXPECT_EQ(pop.score(ScoreRequest{}).size(0), 0);
}

TEST_F(HandDataset, ItemKnnCosineWithShrinkAndTopNeighbours) {
  DatasetFile f(path_);
  TrainingHistories h = gather_training_histories(f, comm_);
  const double r6 = std::sqrt(6.0);
  {  // shrink 0, every neighbour
    ItemKnnScorer knn(h, {100, 0.0}, comm_);
    const auto& rows = knn.rows();
    ASSERT_EQ(rows.size(), 5u);
    EXPECT_THAT(rows[0].items, ElementsAre(1, 2));  // 2/3, 1/sqrt(6)
    EXPECT_FLOAT_EQ(rows[0].similarity[0], static_cast<float>(2.0 / 3.0));
    EXPECT_FLOAT_EQ(rows[0].similarity[1], static_cast<float>(1.0 / r6));
    EXPECT_THAT(rows[1].items, ElementsAre(2, 0, 3));  // 2/sqrt(6), 2/3, 1/sqrt(6)
    EXPECT_THAT(rows[2].items, ElementsAre(1, 3, 0));  // 2/sqrt(6), 1/2, 1/sqrt(6)
    EXPECT_FLOAT_EQ(rows[2].similarity[1], 0.5f);
    EXPECT_THAT(rows[3].items, ElementsAre(2, 1));  // 1/2, 1/sqrt(6)
    EXPECT_TRUE(rows[4].items.empty());             // cold: no co-occurrence
    // A history {0, 1, 0}: distinct items 0 and 1.
    ScoreRequest r;
    const std::int32_t items[] = {0, 1, 0};
    const std::int64_t times[] = {1, 2, 3};
    r.add_user(2, items, times, 3, 4);
    at::Tensor s = knn.score(r);
    const float want[] = {static_cast<float>(2.0 / 3.0), static_cast<float>(2.0 / 3.0),
                          static_cast<float>(1.0 / r6 + 2.0 / r6), static_cast<float>(1.0 / r6), 0.0f};
    for (int i = 0; i < 5; ++i) EXPECT_FLOAT_EQ(s[0][i].item<float>(), want[i]) << "item " << i;
  }
  {  // shrink 1 damps the rare pairs; one neighbour per item
    ItemKnnScorer knn(h, {1, 1.0}, comm_);
    const auto& rows = knn.rows();
    EXPECT_THAT(rows[0].items, ElementsAre(1));
    EXPECT_FLOAT_EQ(rows[0].similarity[0], 0.5f);  // 2 / (3 + 1)
    EXPECT_THAT(rows[1].items, ElementsAre(2));
    EXPECT_FLOAT_EQ(rows[1].similarity[0], static_cast<float>(2.0 / (r6 + 1.0)));
    EXPECT_THAT(rows[3].items, ElementsAre(2));
    EXPECT_FLOAT_EQ(rows[3].similarity[0], 1.0f / 3.0f);  // 1 / (2 + 1)
  }
}

TEST_F(HandDataset, ItemKnnRowsDoNotDependOnHowTheyAreDistributed) {
  DatasetFile f(path_);
  TrainingHistories h = gather_training_histories(f, comm_);
  ItemKnnScorer knn(h, {2, 0.5}, comm_);
  std::vector<ItemNeighbours> whole = itemknn_rows(h, 0, 5, {2, 0.5});
  ASSERT_EQ(knn.rows().size(), whole.size());
  for (std::size_t i = 0; i < whole.size(); ++i) {
    EXPECT_EQ(knn.rows()[i].items, whole[i].items);
    EXPECT_EQ(knn.rows()[i].similarity, whole[i].similarity);
  }
}

TEST_F(HandDataset, PopularityEvaluationFigureByFigure) {
  DatasetFile f(path_);
  PopularityScorer pop(f.read_items().train_count);
  // Test split, histories = training + validation events:
  //   u0 excl 0 1 2 3 -> [4]        target 4 (cold) rank 1
  //   u1 excl 0 1 2   -> [3 4]      target 3 rank 1
  //   u2 excl 1 2 3 (0 kept: held out) -> [0 4]  target 0 rank 1
  //   u3 excl 0 1     -> [2 3 4]    target 2 ties 3: rank 1 or 2, each with
  //                                  probability 1/2 (the figures are expectations)
  for (int batch : {1, 2, 64}) {
    EvalResult r = evaluate(pop, f, comm_, "test", config({1, 2}, batch));
    EXPECT_EQ(r.users, 5);
    EXPECT_EQ(r.users_evaluated, 4);
    EXPECT_EQ(r.users_skipped, 1);
    EXPECT_EQ(r.repeat_targets, 1);
    EXPECT_TRUE(r.has_categories);
    EXPECT_EQ(r.all.users, 4);
    const double u3_ndcg2 = (1.0 + 1.0 / std::log2(3.0)) / 2;
    EXPECT_DOUBLE_EQ(r.all.mrr, (3.0 + 0.75) / 4);
    EXPECT_THAT(r.all.ndcg,
                ElementsAre(::testing::DoubleEq((3.0 + 0.5) / 4), ::testing::DoubleEq((3.0 + u3_ndcg2) / 4)));
    EXPECT_THAT(r.all.hit_rate, ElementsAre((3.0 + 0.5) / 4, 1.0));
    EXPECT_THAT(r.all.recall, ElementsAre((3.0 + 0.5) / 4, 1.0));
    // top-2 lists (ties: smaller id first) [4] [3 4] [0 4] [2 3]: categories z | y z | x z | y y.
    EXPECT_DOUBLE_EQ(r.all.diversity[1], (0.0 + 1.0 + 1.0 + 0.0) / 4);
    EXPECT_DOUBLE_EQ(r.all.mean_popularity[0], (0.0 + 2.0 + 3.0 + 2.0) / 4);
    EXPECT_DOUBLE_EQ(r.all.mean_popularity[1], (0.0 + 1.0 + 1.5 + 2.0) / 4);
    EXPECT_DOUBLE_EQ(r.all.coverage[0], 4.0 / 5.0);  // top-1: 4 3 0 2
    EXPECT_DOUBLE_EQ(r.all.coverage[1], 4.0 / 5.0);
    EXPECT_EQ(r.cold.users, 1);  // u0
    EXPECT_DOUBLE_EQ(r.cold.ndcg[0], 1.0);
    EXPECT_DOUBLE_EQ(r.cold.coverage[0], 1.0 / 5.0);
  }
  // Validation split, histories = training events:
  //   u0 excl 0 1 2 -> [3 4] target 3 rank 1; u1 excl 0 1 -> [2 3 4] target 2 rank 1;
  //   u2 excl 1 2 3 -> [0 4] target 0 rank 1; u3 excl 0 -> [1 2 3 4] target 1 rank 1.
  EvalResult v = evaluate(pop, f, comm_, "valid", config({1}, 3));
  EXPECT_EQ(v.users_evaluated, 4);
  EXPECT_EQ(v.repeat_targets, 0);
  EXPECT_EQ(v.cold.users, 0);
  EXPECT_TRUE(std::isnan(v.cold.ndcg[0]));
  EXPECT_DOUBLE_EQ(v.all.coverage[0], 4.0 / 5.0);  // 3 2 0 1
}

TEST_F(HandDataset, AReversedRankingGivesTheHandComputedRanks) {
  DatasetFile f(path_);
  // Lower ids score higher: order 0 1 2 3 4.
  ::llmrec::testing::FixedScorer fixed("fixed", {5, 4, 3, 2, 1});
  // Test split: u0 [4] rank 1; u1 [3 4] target 3 rank 1; u2 [0 4] target 0 rank 1;
  // u3 [2 3 4] target 2 rank 1. Validation: u0 [3 4] t3 r1; u1 [2 3 4] t2 r1;
  // u2 [0 4] t0 r1; u3 [1 2 3 4] t1 r1. Now reverse it:
  ::llmrec::testing::FixedScorer reversed("reversed", {1, 2, 3, 4, 5});
  EvalResult v = evaluate(reversed, f, comm_, "valid", config({1, 2}, 2));
  // u0 [4 3] t3 r2; u1 [4 3 2] t2 r3; u2 [4 0] t0 r2; u3 [4 3 2 1] t1 r4.
  EXPECT_DOUBLE_EQ(v.all.mrr, (1.0 / 2 + 1.0 / 3 + 1.0 / 2 + 1.0 / 4) / 4);
  EXPECT_DOUBLE_EQ(v.all.ndcg[1], (1.0 / std::log2(3.0) + 0 + 1.0 / std::log2(3.0) + 0) / 4);
  EXPECT_DOUBLE_EQ(v.all.hit_rate[1], 0.5);
  EXPECT_DOUBLE_EQ(v.all.ndcg[0], 0.0);
  EvalResult t = evaluate(fixed, f, comm_, "valid", config({1}, 2));
  EXPECT_DOUBLE_EQ(t.all.ndcg[0], 1.0);
}

// ---------------------------------------------------------------- BPR

class SynthShop : public ::testing::Test {
 protected:
  static std::string path_;
  Communicator& comm_ = test_comm();
  static void SetUpTestSuite() {
    SynthOptions o;
    o.items = 300;
    o.users = 400;
    o.mean_history = 15;
    o.seed = 77;
    path_ = ::llmrec::testing::make_synth_dataset(test_comm(), "bpr", o);
  }
  static void TearDownTestSuite() { ::llmrec::testing::remove_dataset_dir(test_comm(), path_); }
};
std::string SynthShop::path_;

TEST_F(SynthShop, BprIsDeterministicForASeedAndTheSameOnEveryRank) {
  DatasetFile f(path_);
  TrainingHistories h = gather_training_histories(f, comm_);
  EvalBprConfig c;
  c.dim = 8;
  c.epochs = 3;
  BprScorer a(h, c, comm_);  // also checks that every rank trained the same factors
  BprScorer b(h, c);
  EXPECT_TRUE(at::equal(a.user_factors(), b.user_factors()));
  EXPECT_TRUE(at::equal(a.item_factors(), b.item_factors()));
  EXPECT_TRUE(at::equal(a.item_bias(), b.item_bias()));
  c.seed = 2;
  BprScorer other(h, c);
  EXPECT_FALSE(at::equal(a.item_factors(), other.item_factors()));
  // Rank 0's factors, broadcast, equal every rank's own.
  at::Tensor mine = a.item_factors().clone();
  comm_.broadcast(mine);
  EXPECT_TRUE(at::equal(mine, a.item_factors()));
}

TEST_F(SynthShop, BprLearnsAndRanksFarBetterThanRandom) {
  DatasetFile f(path_);
  TrainingHistories h = gather_training_histories(f, comm_);
  EvalConfig c;
  BprScorer bpr(h, c.bpr, comm_);
  ASSERT_EQ(bpr.epoch_loss().size(), static_cast<std::size_t>(c.bpr.epochs));
  EXPECT_LT(bpr.epoch_loss().back(), 0.6 * bpr.epoch_loss().front());
  ::llmrec::testing::RandomScorer random(f.num_items());
  Evaluator ev(f, comm_, "valid", c);
  EvalResult rb = ev.evaluate(bpr);
  EvalResult rr = ev.evaluate(random);
  // A random ranking of ~285 candidates: NDCG@10 ~ 0.015.
  EXPECT_LT(rr.all.ndcg[0], 0.04);
  EXPECT_GT(rb.all.ndcg[0], rr.all.ndcg[0] + 0.05);
  EXPECT_GT(rb.all.ndcg[0], 3 * rr.all.ndcg[0]);
  EXPECT_GT(rb.all.recall[1], 2 * rr.all.recall[1]);
  if (comm_.rank() == 0) {
    std::printf("valid NDCG@10: bpr %.4f, random %.4f\n", rb.all.ndcg[0], rr.all.ndcg[0]);
  }
}

TEST_F(SynthShop, FactoryBuildsTheNamedBaselinesInOrderAndRefusesBadNames) {
  DatasetFile f(path_);
  EvalConfig c;
  c.bpr.epochs = 1;
  c.itemknn.tune = false;
  c.bpr.tune = false;
  auto scorers = create_baseline_scorers({"bpr", "popularity", "itemknn"}, f, comm_, c);
  ASSERT_EQ(scorers.size(), 3u);
  EXPECT_EQ(scorers[0]->name(), "bpr");
  EXPECT_EQ(scorers[1]->name(), "popularity");
  EXPECT_EQ(scorers[2]->name(), "itemknn");
  EXPECT_EQ(create_baseline_scorers({"tfidf"}, f, comm_, c).at(0)->name(), "tfidf");
  EXPECT_THROW(create_baseline_scorers({"popularity", "sasrec"}, f, comm_, c), ConfigError);
  try {
    create_baseline_scorers({"oracle"}, f, comm_, c);
    FAIL() << "oracle without eval.oracle_dir accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("eval.oracle_dir"));
  }
}

// ---------------------------------------------------------------- TF-IDF

// Vocabulary of the TF-IDF tests: the special tokens, then words.
const std::vector<std::string> kTfidfVocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red",  "blue",
                                              "shoe",  "hat",   "wool",  "the",   "scarf",  "boot", "green"};
// clang-format off
enum : std::int32_t { kPad, kUnk, kCls, kSep, kMask,
                      kRed, kBlue, kShoe, kHat, kWool, kThe, kScarf, kBoot, kGreen };
// clang-format on

/// An item table whose item i holds [CLS] words[i] [SEP], padded to text_len.
ItemTable tfidf_items(const std::vector<std::vector<std::int32_t>>& words, int text_len) {
  ItemTable t;
  for (const auto& w : words) {
    std::vector<std::int32_t> row = {kCls};
    row.insert(row.end(), w.begin(), w.end());
    row.push_back(kSep);
    t.length.push_back(static_cast<std::int32_t>(row.size()));
    row.resize(static_cast<std::size_t>(text_len), kPad);
    t.tokens.insert(t.tokens.end(), row.begin(), row.end());
  }
  return t;
}

// Items (N = 4; "the" is in all 4 > 0.5 * 4: dropped; [UNK], [MASK] are no terms):
//   0: red shoe the      1: blue shoe the      2: red red hat the      3: wool [UNK] [MASK] the
// df: red 2, shoe 2 (kept: not more than half), blue 1, hat 1, wool 1.
// idf a = ln(5/3) + 1 (df 2), b = ln(5/2) + 1 (df 1). Normalised vectors over
// (red, blue, shoe, hat, wool):
//   v0 = (a, 0, a, 0, 0) / (a sqrt 2)        v1 = (0, b, a, 0, 0) / sqrt(a^2 + b^2)
//   v2 = (2a, 0, 0, b, 0) / sqrt(4a^2 + b^2) v3 = (0, 0, 0, 0, 1)
ItemTable hand_tfidf_items() {
  return tfidf_items(
      {{kRed, kShoe, kThe}, {kBlue, kShoe, kThe}, {kRed, kRed, kHat, kThe}, {kWool, kUnk, kMask, kThe}}, 8);
}

/// Row 0 of the scores for one history.
std::vector<float> tfidf_scores(TfidfScorer& s, const std::vector<std::int32_t>& history) {
  ScoreRequest r;
  std::vector<std::int64_t> times(history.size(), 1);
  r.add_user(0, history.data(), times.data(), static_cast<std::int64_t>(history.size()), 2);
  at::Tensor t = s.score(r);
  EXPECT_EQ(t.sizes(), (std::vector<std::int64_t>{1, s.matrix().num_items()}));
  return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
}

TEST(Tfidf, MatrixIsHandComputedSmoothIdfL2Normalised) {
  const TfidfMatrix m = tfidf_matrix(hand_tfidf_items(), 8, kTfidfVocab, {});
  const double a = std::log(5.0 / 3.0) + 1.0, b = std::log(5.0 / 2.0) + 1.0;
  EXPECT_EQ(m.num_items(), 4);
  EXPECT_EQ(m.num_terms, 14);
  EXPECT_EQ(m.terms_kept, 5);  // red blue shoe hat wool
  EXPECT_THAT(m.df, ElementsAre(0, 0, 0, 0, 0, 2, 1, 2, 1, 1, 4, 0, 0, 0));
  EXPECT_THAT(m.offsets, ElementsAre(0, 2, 4, 6, 7));
  EXPECT_THAT(m.terms, ElementsAre(kRed, kShoe, kBlue, kShoe, kRed, kHat, kWool));
  const double n1 = std::sqrt(a * a + b * b), n2 = std::sqrt(4 * a * a + b * b);
  const double want[] = {1 / std::sqrt(2.0), 1 / std::sqrt(2.0), b / n1, a / n1, 2 * a / n2, b / n2, 1.0};
  for (std::size_t k = 0; k < 7; ++k) EXPECT_FLOAT_EQ(m.weights[k], static_cast<float>(want[k])) << k;
  EXPECT_FLOAT_EQ(m.weights[4], 0.8444932f);  // worked out apart: 2a / sqrt(4a^2 + b^2)
}

/// New texts weighted with a corpus's idf: the idf the matrix carries, rows
/// of the corpus's own texts equal to the matrix's, terms the corpus
/// dropped or never saw left out.
TEST(Tfidf, RowsOfNewTextsUseTheCorpusIdf) {
  const TfidfMatrix m = tfidf_matrix(hand_tfidf_items(), 8, kTfidfVocab, {});
  const double a = std::log(5.0 / 3.0) + 1.0, b = std::log(5.0 / 2.0) + 1.0;
  ASSERT_EQ(m.idf.size(), kTfidfVocab.size());
  EXPECT_DOUBLE_EQ(m.idf[kRed], a);
  EXPECT_DOUBLE_EQ(m.idf[kWool], b);
  EXPECT_EQ(m.idf[kThe], 0.0);  // in every item: dropped
  const TfidfMatrix same = tfidf_rows(hand_tfidf_items(), 8, kTfidfVocab, m.idf);
  EXPECT_EQ(same.offsets, m.offsets);
  EXPECT_EQ(same.terms, m.terms);
  EXPECT_EQ(same.weights, m.weights);
  EXPECT_EQ(same.idf, m.idf);
  // "the blue wool hat hat": the = 0 and counts 1, 1, 2 with idf b each.
  const TfidfMatrix fresh =
      tfidf_rows(tfidf_items({{kThe, kBlue, kWool, kHat, kHat}}, 8), 8, kTfidfVocab, m.idf);
  EXPECT_THAT(fresh.terms, ElementsAre(kBlue, kHat, kWool));
  const double n = std::sqrt(6.0) * b;
  EXPECT_THAT(fresh.weights, ::testing::Pointwise(
                                 ::testing::FloatNear(1e-7f),
                                 std::vector<float>{static_cast<float>(b / n), static_cast<float>(2 * b / n),
                                                    static_cast<float>(b / n)}));
  EXPECT_THROW(tfidf_rows(hand_tfidf_items(), 8, kTfidfVocab, {1.0, 2.0}), Error);
}

TEST(Tfidf, ScoresAreHandComputedCosines) {
  TfidfScorer s(hand_tfidf_items(), 8, kTfidfVocab, {});
  // Values from the vectors above (cosine of the normalised mean profile).
  EXPECT_THAT(tfidf_scores(s, {0}),
              ::testing::Pointwise(::testing::FloatNear(1e-6f),
                                   std::vector<float>{1.0f, 0.4377912f, 0.5971469f, 0.0f}));
  EXPECT_THAT(tfidf_scores(s, {0, 1}),
              ::testing::Pointwise(::testing::FloatNear(1e-6f),
                                   std::vector<float>{0.8478771f, 0.8478771f, 0.3521423f, 0.0f}));
  // A repeated item counts once per event: mean of v2, v3, v3.
  EXPECT_THAT(tfidf_scores(s, {2, 3, 3}),
              ::testing::Pointwise(::testing::FloatNear(1e-6f),
                                   std::vector<float>{0.2670522f, 0.0f, 0.4472136f, 0.8944272f}));
  // No history: no profile, every item 0.
  EXPECT_THAT(tfidf_scores(s, {}), ElementsAre(0.0f, 0.0f, 0.0f, 0.0f));
  // Rows of a block are independent; an empty block is [0, items].
  ScoreRequest r;
  const std::int32_t h[] = {0, 1, 2, 3, 3};
  const std::int64_t t[] = {1, 2, 3, 4, 5};
  r.add_user(0, h, t, 1, 9);
  r.add_user(1, h + 2, t, 3, 9);
  r.add_user(2, h, t, 2, 9);
  at::Tensor block = s.score(r);
  EXPECT_TRUE(at::equal(block[0], at::tensor(tfidf_scores(s, {0}))));
  EXPECT_TRUE(at::equal(block[1], at::tensor(tfidf_scores(s, {2, 3, 3}))));
  EXPECT_TRUE(at::equal(block[2], at::tensor(tfidf_scores(s, {0, 1}))));
  EXPECT_EQ(s.score(ScoreRequest{}).sizes(), (std::vector<std::int64_t>{0, 4}));
  // History items outside the catalogue are refused.
  EXPECT_THROW(tfidf_scores(s, {4}), Error);
  // params: the options and the vocabulary kept.
  const nlohmann::json p = s.params();
  EXPECT_EQ(p["profile_items"], 20);
  EXPECT_EQ(p["max_df"], 0.5);
  EXPECT_EQ(p["vocabulary"], 5);
}

TEST(Tfidf, TermsInMoreThanMaxDfOfTheItemsAreIgnored) {
  // "the" (in every item) is the only term items 0 and 3 share: with the
  // default max_df 0.5 they are unrelated, with max_df 1 they are not.
  TfidfScorer dropped(hand_tfidf_items(), 8, kTfidfVocab, {20, 0.5});
  EXPECT_EQ(tfidf_scores(dropped, {3})[0], 0.0f);
  TfidfScorer kept(hand_tfidf_items(), 8, kTfidfVocab, {20, 1.0});
  EXPECT_EQ(kept.matrix().terms_kept, 6);
  EXPECT_GT(tfidf_scores(kept, {3})[0], 0.05f);
  // max_df 0.25 = 1 item: red and shoe (2 items each) go too; item 0 has no term left.
  TfidfScorer strict(hand_tfidf_items(), 8, kTfidfVocab, {20, 0.25});
  EXPECT_EQ(strict.matrix().terms_kept, 3);  // blue hat wool
  EXPECT_TRUE(strict.tfidf_top_terms(0, 5).empty());
  EXPECT_THAT(tfidf_scores(strict, {0}), ElementsAre(0.0f, 0.0f, 0.0f, 0.0f));
  EXPECT_THROW(TfidfScorer(hand_tfidf_items(), 8, kTfidfVocab, {20, 0.0}), Error);
  EXPECT_THROW(TfidfScorer(hand_tfidf_items(), 8, kTfidfVocab, {0, 0.5}), Error);
}

TEST(Tfidf, ProfileIsTheLastProfileItemsEventsOnly) {
  TfidfScorer s(hand_tfidf_items(), 8, kTfidfVocab, {});
  std::vector<std::int32_t> twenty(20, 0);
  std::vector<std::int32_t> older_3 = twenty;
  older_3.insert(older_3.begin(), 3);  // 21 events: item 3 falls out of the window
  EXPECT_EQ(tfidf_scores(s, older_3), tfidf_scores(s, twenty));
  EXPECT_EQ(tfidf_scores(s, older_3)[3], 0.0f);
  std::vector<std::int32_t> in_window(19, 0);
  in_window.insert(in_window.begin(), 3);  // 20 events: item 3 counts
  EXPECT_GT(tfidf_scores(s, in_window)[3], 0.0f);
  // A window of 2: history 3 0 1 scores as 0 1.
  TfidfScorer two(hand_tfidf_items(), 8, kTfidfVocab, {2, 0.5});
  EXPECT_EQ(tfidf_scores(two, {3, 0, 1}), tfidf_scores(two, {0, 1}));
  EXPECT_NE(tfidf_scores(s, {3, 0, 1}), tfidf_scores(s, {0, 1}));
}

TEST(Tfidf, TopTermsOfAnItem) {
  TfidfScorer s(hand_tfidf_items(), 8, kTfidfVocab, {});
  using P = std::pair<std::int32_t, float>;
  EXPECT_THAT(s.tfidf_top_terms(2, 5),
              ElementsAre(P{kRed, s.matrix().weights[4]}, P{kHat, s.matrix().weights[5]}));
  EXPECT_THAT(s.tfidf_top_terms(2, 1), ElementsAre(::testing::Pair(kRed, ::testing::FloatEq(0.8444932f))));
  // Item 1: shoe (idf a) weighs less than blue (idf b).
  EXPECT_THAT(s.tfidf_top_terms(1, 2),
              ElementsAre(::testing::Pair(kBlue, ::testing::_), ::testing::Pair(kShoe, ::testing::_)));
  // Item 0: red and shoe tie; the smaller term id first.
  EXPECT_THAT(s.tfidf_top_terms(0, 1),
              ElementsAre(::testing::Pair(kRed, ::testing::FloatEq(1 / std::sqrt(2.0f)))));
  EXPECT_THAT(s.tfidf_top_terms(3, 3), ElementsAre(P{kWool, 1.0f}));
  EXPECT_TRUE(s.tfidf_top_terms(3, 0).empty());
  EXPECT_THROW(s.tfidf_top_terms(4, 1), Error);
  EXPECT_THROW(s.tfidf_top_terms(-1, 1), Error);
  EXPECT_THROW(s.tfidf_top_terms(0, -1), Error);
}

TEST(Tfidf, RefusesTokenIdsOutsideTheVocabulary) {
  ItemTable t = tfidf_items({{kRed, 99}}, 4);
  try {
    TfidfScorer s(t, 4, kTfidfVocab, {});
    FAIL() << "token id 99 accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("token id 99"));
  }
}

// Items 0..6: red shoe | blue hat | wool scarf | red shoe (item 3: cold, the
// text of item 0) | red boot | green hat | wool. Users, events oldest first:
//   u0: 1 0 | valid 2 | test 3      u1: 4 5 6 | valid 0 | test 1
//   u2: 2 5 | valid 4 | test 6      (item 3 is the only one without a training event)
class TfidfDataset : public ::testing::Test {
 protected:
  static std::string path_;
  Communicator& comm_ = test_comm();

  static void SetUpTestSuite() {
    path_ = ::llmrec::testing::make_dataset_with(test_comm(), "tfidf", [](const std::string& p) {
      ::llmrec::testing::write_hand_dataset(p, {{1, 0, 2, 3}, {4, 5, 6, 0, 1}, {2, 5, 4, 6}}, {},
                                            {"a", "a", "b", "a", "a", "b", "b"}, kTfidfVocab,
                                            {{kRed, kShoe},
                                             {kBlue, kHat},
                                             {kWool, kScarf},
                                             {kRed, kShoe},
                                             {kRed, kBoot},
                                             {kGreen, kHat},
                                             {kWool}});
    });
  }
  static void TearDownTestSuite() { ::llmrec::testing::remove_dataset_dir(test_comm(), path_); }
};
std::string TfidfDataset::path_;

TEST_F(TfidfDataset, ColdItemWithTheTextOfAHistoryItemRanksFirst) {
  DatasetFile f(path_);
  const ItemTable items = f.read_items();
  ASSERT_EQ(items.cold[3], 1);  // no training event
  EvalConfig c;
  c.k = {1};
  c.batch_users = 2;
  auto scorers = create_baseline_scorers({"tfidf", "popularity"}, f, comm_, c);
  ASSERT_EQ(scorers[0]->name(), "tfidf");
  // u0's test history 1 0 2: item 3 (cosine with item 0's vector) tops the candidates 3 4 5 6.
  auto& tfidf = dynamic_cast<TfidfScorer&>(*scorers[0]);
  const std::vector<float> s = tfidf_scores(tfidf, {1, 0, 2});
  EXPECT_FLOAT_EQ(s[3], s[0]);
  for (int j : {4, 5, 6}) EXPECT_LT(s[j], s[3]) << "item " << j;
  EXPECT_GT(s[3], 0.5f);
  // Through the evaluation: the one cold test event is ranked first by
  // TF-IDF, not by popularity (no training event: score 0).
  EvalResult r = evaluate(*scorers[0], f, comm_, "test", c);
  EXPECT_EQ(r.cold.users, 1);
  EXPECT_DOUBLE_EQ(r.cold.ndcg[0], 1.0);
  EXPECT_DOUBLE_EQ(r.cold.mrr, 1.0);
  EvalResult p = evaluate(*scorers[1], f, comm_, "test", c);
  EXPECT_EQ(p.cold.users, 1);
  EXPECT_DOUBLE_EQ(p.cold.ndcg[0], 0.0);
}

TEST_F(SynthShop, TfidfGivesTheSameScoresOnEveryRankAndRanksColdItems) {
  DatasetFile f(path_);
  EvalConfig c;
  auto scorers = create_baseline_scorers({"tfidf"}, f, comm_, c);
  ASSERT_EQ(scorers.size(), 1u);
  auto& tfidf = dynamic_cast<TfidfScorer&>(*scorers[0]);
  EXPECT_EQ(tfidf.matrix().num_items(), f.num_items());
  EXPECT_GT(tfidf.matrix().terms_kept, 10);
  EXPECT_EQ(tfidf.params()["vocabulary"], tfidf.matrix().terms_kept);
  // Users 0..7, each with its first 25 training events as history (beyond the window of 20).
  UserSlice slice = f.read_users(0, 8);
  ScoreRequest r;
  for (std::int64_t u = 0; u < 8; ++u) {
    const auto first = slice.users.offsets[static_cast<std::size_t>(u)];
    const auto n = std::min<std::int64_t>(25, slice.users.train_end[static_cast<std::size_t>(u)]);
    r.add_user(u, slice.events.item.data() + first, slice.events.time.data() + first, n, 0);
  }
  at::Tensor s = tfidf.score(r);
  EXPECT_GE(s.min().item<float>(), 0.0f);
  EXPECT_LE(s.max().item<float>(), 1.0f + 1e-5f);
  at::Tensor mine = s.clone();
  comm_.broadcast(mine);
  EXPECT_TRUE(at::equal(mine, s));
  // Cold items get scores too.
  const ItemTable items = f.read_items();
  double cold_score = 0;
  for (std::int64_t i = 0; i < f.num_items(); ++i) {
    if (items.cold[static_cast<std::size_t>(i)]) cold_score += s.select(1, i).sum().item<double>();
  }
  EXPECT_GT(cold_score, 0.0);
  // And it ranks better than chance on the validation split.
  ::llmrec::testing::RandomScorer random(f.num_items());
  Evaluator ev(f, comm_, "valid", c);
  EvalResult rt = ev.evaluate(tfidf);
  EvalResult rr = ev.evaluate(random);
  if (comm_.rank() == 0) {
    std::printf("valid NDCG@10: tfidf %.4f, random %.4f\n", rt.all.ndcg[0], rr.all.ndcg[0]);
  }
  EXPECT_GT(rt.all.ndcg[0], rr.all.ndcg[0]);
}

// ---------------------------------------------------------------- tuning

/// The first grid point with the highest validation NDCG@10; the grid must
/// matter on the shop (else picking the first point would pass too).
std::size_t best_point(const std::vector<double>& want) {
  std::size_t best = 0;
  for (std::size_t g = 0; g < want.size(); ++g) {
    if (want[g] > want[best]) best = g;
  }
  EXPECT_GT(want[best], *std::min_element(want.begin(), want.end()) + 1e-3);
  return best;
}

/// Rank 0's `text` on every rank.
std::string rank0_text(Communicator& comm, const std::string& text) {
  return ::llmrec::testing::broadcast_string(comm, comm.rank() == 0 ? text : std::string());
}

TEST_F(SynthShop, ItemKnnTuningChoosesTheBestGridPointOnValidationOnEveryRank) {
  DatasetFile f(path_);
  TrainingHistories h = gather_training_histories(f, comm_);
  EvalConfig c;  // k = {10, 20}: ndcg[0] is NDCG@10
  Evaluator valid(f, comm_, "valid", c);
  std::shared_ptr<ItemKnnScorer> tuned = tune_itemknn(h, valid);
  // Every grid point built and evaluated the ordinary way, in grid order.
  std::vector<double> want;
  std::vector<ItemKnnOptions> points;
  for (double shrink : itemknn_tune_shrinks()) {
    for (int k : itemknn_tune_neighbours()) {
      points.push_back({k == 0 ? static_cast<int>(f.num_items()) : k, shrink});
      ItemKnnScorer knn(h, points.back(), comm_);
      want.push_back(valid.evaluate(knn).all.ndcg[0]);
    }
  }
  ASSERT_EQ(points.size(), 6u);
  const std::size_t best = best_point(want);
  EXPECT_EQ(tuned->options().neighbours, points[best].neighbours);
  EXPECT_EQ(tuned->options().shrink, points[best].shrink);
  const nlohmann::json p = tuned->params();
  ASSERT_TRUE(p.contains("tuning"));
  EXPECT_EQ(p["tuning"]["split"], "valid");
  ASSERT_EQ(p["tuning"]["tried"].size(), want.size());
  for (std::size_t g = 0; g < want.size(); ++g) {
    EXPECT_EQ(p["tuning"]["tried"][g]["neighbours"].get<int>(), points[g].neighbours) << g;
    EXPECT_DOUBLE_EQ(p["tuning"]["tried"][g]["valid_ndcg@10"].get<double>(), want[g]) << g;
  }
  EXPECT_DOUBLE_EQ(p["tuning"]["best_valid_ndcg@10"].get<double>(), want[best]);
  // Its rows are those of the chosen options computed directly.
  ItemKnnScorer direct(h, points[best], comm_);
  ASSERT_EQ(tuned->rows().size(), direct.rows().size());
  for (std::size_t i = 0; i < direct.rows().size(); ++i) {
    ASSERT_EQ(tuned->rows()[i].items, direct.rows()[i].items) << "item " << i;
    ASSERT_EQ(tuned->rows()[i].similarity, direct.rows()[i].similarity) << "item " << i;
  }
  // The same choice (and record) on every rank.
  EXPECT_EQ(rank0_text(comm_, p.dump()), p.dump());
}

TEST_F(SynthShop, BprTuningChoosesTheBestGridPointAndEpochOnValidationOnEveryRank) {
  DatasetFile f(path_);
  TrainingHistories h = gather_training_histories(f, comm_);
  EvalConfig c;
  c.bpr.dim = 8;
  c.bpr.tune_max_epochs = 10;
  c.bpr.tune_eval_every = 4;  // evaluations after epochs 4, 8 and 10 (the last)
  c.bpr.tune_patience = 100;  // no early stop: every evaluation counts
  Evaluator valid(f, comm_, "valid", c);
  const std::vector<double> lrs = {0.01, 0.05};  // small steps: this shop is learnt in a few epochs
  std::shared_ptr<BprScorer> tuned = tune_bpr(h, c.bpr, valid, lrs);
  // Every (lr, reg, epochs) trained from scratch and evaluated the ordinary way.
  std::vector<EvalBprConfig> points;
  std::vector<double> want;
  for (double lr : lrs) {
    for (double reg : bpr_tune_regs()) {
      for (int epochs : {4, 8, 10}) {
        EvalBprConfig b = c.bpr;
        b.lr = lr;
        b.reg = reg;
        b.epochs = epochs;
        BprScorer bpr(h, b);
        points.push_back(b);
        want.push_back(valid.evaluate(bpr).all.ndcg[0]);
      }
    }
  }
  ASSERT_EQ(points.size(), 18u);
  const std::size_t best = best_point(want);
  EXPECT_EQ(tuned->config().lr, points[best].lr);
  EXPECT_EQ(tuned->config().reg, points[best].reg);
  EXPECT_EQ(tuned->config().epochs, points[best].epochs);
  const nlohmann::json p = tuned->params();
  EXPECT_EQ(p["epochs"].get<int>(), points[best].epochs);
  EXPECT_DOUBLE_EQ(p["tuning"]["best_valid_ndcg@10"].get<double>(), want[best]);
  ASSERT_EQ(p["tuning"]["tried"].size(), 6u);
  for (std::size_t g = 0; g < 6; ++g) {
    const auto& curve = p["tuning"]["tried"][g]["valid_ndcg@10_by_epoch"];
    ASSERT_EQ(curve.size(), 3u);
    for (std::size_t e = 0; e < 3; ++e)
      EXPECT_DOUBLE_EQ(curve[e][1].get<double>(), want[g * 3 + e]) << g << " " << e;
  }
  // The tuned factors are exactly what the chosen values train.
  BprScorer again(h, tuned->config());
  EXPECT_TRUE(at::equal(tuned->user_factors(), again.user_factors()));
  EXPECT_TRUE(at::equal(tuned->item_factors(), again.item_factors()));
  EXPECT_TRUE(at::equal(tuned->item_bias(), again.item_bias()));
  EXPECT_EQ(rank0_text(comm_, p.dump()), p.dump());
  at::Tensor mine = tuned->item_factors().clone();
  comm_.broadcast(mine);
  EXPECT_TRUE(at::equal(mine, tuned->item_factors()));
}

TEST_F(SynthShop, BprTuningStopsAGridPointAfterPatienceEvaluationsWithoutProgress) {
  DatasetFile f(path_);
  TrainingHistories h = gather_training_histories(f, comm_);
  EvalConfig c;
  c.bpr.dim = 8;
  c.bpr.tune_max_epochs = 40;
  c.bpr.tune_eval_every = 2;
  c.bpr.tune_patience = 2;
  Evaluator valid(f, comm_, "valid", c);
  const nlohmann::json tried = tune_bpr(h, c.bpr, valid, {0.01, 0.05})->params()["tuning"]["tried"];
  int stopped_early = 0;
  for (const auto& point : tried) {
    const auto& curve = point["valid_ndcg@10_by_epoch"];
    double best = -1;
    int bad = 0, best_epoch = 0;
    for (std::size_t e = 0; e < curve.size(); ++e) {
      ASSERT_LT(bad, 2) << "an evaluation after the patience ran out, lr " << point["lr"] << " reg "
                        << point["reg"];
      EXPECT_EQ(curve[e][0].get<int>(), 2 * static_cast<int>(e + 1));
      const double v = curve[e][1].get<double>();
      if (v > best) {
        best = v;
        best_epoch = curve[e][0].get<int>();
        bad = 0;
      } else {
        ++bad;
      }
    }
    const bool early = curve.back()[0].get<int>() < 40;
    EXPECT_TRUE(!early || bad == 2) << "stopped at epoch " << curve.back()[0] << " with patience left";
    stopped_early += early;
    EXPECT_EQ(point["epochs_trained"].get<int>(), curve.back()[0].get<int>());
    EXPECT_EQ(point["best_epoch"].get<int>(), best_epoch);
    EXPECT_DOUBLE_EQ(point["valid_ndcg@10"].get<double>(), best);
  }
  EXPECT_GT(stopped_early, 0);  // lr 0.05 overfits this small shop within 40 epochs
}

TEST_F(SynthShop, FactoryTunesOnValidationByDefaultAndKeepsConfiguredValuesWithoutTune) {
  DatasetFile f(path_);
  EvalConfig c;
  c.bpr.dim = 8;
  c.bpr.tune_max_epochs = 6;
  c.bpr.tune_eval_every = 3;
  ASSERT_TRUE(c.itemknn.tune && c.bpr.tune);  // the defaults
  auto tuned = create_baseline_scorers({"itemknn", "bpr"}, f, comm_, c);
  {  // the factory's choice is the tuning's, on the validation split
    TrainingHistories h = gather_training_histories(f, comm_);
    Evaluator valid(f, comm_, "valid", c);
    EXPECT_EQ(tuned[0]->params().dump(), tune_itemknn(h, valid)->params().dump());
    EXPECT_EQ(tuned[1]->params().dump(), tune_bpr(h, c.bpr, valid)->params().dump());
  }
  EXPECT_EQ(tuned[0]->params()["tuning"]["split"], "valid");
  EXPECT_EQ(tuned[1]->params()["tuning"]["split"], "valid");

  c.itemknn = {};
  c.itemknn.tune = false;
  c.itemknn.neighbours = 7;
  c.itemknn.shrink = 3.0;
  c.bpr.tune = false;
  c.bpr.epochs = 2;
  c.bpr.lr = 0.02;
  c.bpr.reg = 0.001;
  auto fixed = create_baseline_scorers({"itemknn", "bpr"}, f, comm_, c);
  const nlohmann::json k = fixed[0]->params(), b = fixed[1]->params();
  EXPECT_EQ(k["neighbours"].get<int>(), 7);
  EXPECT_EQ(k["shrink"].get<double>(), 3.0);
  EXPECT_FALSE(k.contains("tuning"));
  EXPECT_EQ(b["epochs"].get<int>(), 2);
  EXPECT_EQ(b["lr"].get<double>(), 0.02);
  EXPECT_EQ(b["reg"].get<double>(), 0.001);
  EXPECT_FALSE(b.contains("tuning"));
  TrainingHistories h = gather_training_histories(f, comm_);
  BprScorer direct(h, c.bpr);
  EXPECT_TRUE(at::equal(dynamic_cast<BprScorer&>(*fixed[1]).item_factors(), direct.item_factors()));
}

}  // namespace
}  // namespace llmrec
