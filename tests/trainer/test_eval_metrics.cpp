// The ranking metrics and the ranking itself, against hand-computed values:
// NDCG positions, the tie rule and the expected metrics under a random
// tie-break, history exclusion, the top-K list, recall vs
// hit rate, diversity, popularity, and the evaluation shards.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/error.h"
#include "trainer/evaluation.h"
#include "trainer/metrics.h"

namespace llmrec {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(EvalMetrics, NdcgOfOneHeldOutItem) {
  EXPECT_DOUBLE_EQ(metric_ndcg(1, 10), 1.0);
  EXPECT_DOUBLE_EQ(metric_ndcg(2, 10), 1.0 / std::log2(3.0));
  EXPECT_DOUBLE_EQ(metric_ndcg(3, 10), 0.5);  // 1 / log2(4)
  EXPECT_DOUBLE_EQ(metric_ndcg(10, 10), 1.0 / std::log2(11.0));
  EXPECT_DOUBLE_EQ(metric_ndcg(11, 10), 0.0);
  EXPECT_DOUBLE_EQ(metric_ndcg(3, 2), 0.0);
}

TEST(EvalMetrics, HitRateRecallAndReciprocalRank) {
  EXPECT_EQ(metric_hit_rate(1, 1), 1.0);
  EXPECT_EQ(metric_hit_rate(5, 5), 1.0);
  EXPECT_EQ(metric_hit_rate(6, 5), 0.0);
  EXPECT_DOUBLE_EQ(metric_reciprocal_rank(4), 0.25);
  const std::vector<std::int32_t> top = {7, 3, 9, 1};
  EXPECT_DOUBLE_EQ(metric_recall(top, 2, {3}), 1.0);
  EXPECT_DOUBLE_EQ(metric_recall(top, 2, {9}), 0.0);
  EXPECT_DOUBLE_EQ(metric_recall(top, 4, {9, 5}), 0.5);
  EXPECT_DOUBLE_EQ(metric_recall(top, 10, {1, 7}), 1.0);  // K beyond the list
  EXPECT_DOUBLE_EQ(metric_recall(top, 3, {}), 0.0);
}

TEST(EvalMetrics, RankAndTopKFollowScoresThenSmallerIdOnTies) {
  // item:            0     1     2     3     4     5
  const float s[] = {0.5f, 2.0f, 0.5f, 3.0f, 2.0f, -1.0f};
  ExclusionMask none(6);
  // Order: 3 (3.0), 1 (2.0), 4 (2.0, tie: larger id after), 0 (0.5), 2 (0.5), 5.
  UserRanking r = rank_user(s, 6, none.data(), 2, 4);
  EXPECT_EQ(r.rank, 5);
  EXPECT_THAT(r.top, ElementsAre(3, 1, 4, 0));
  EXPECT_EQ(rank_user(s, 6, none.data(), 4, 4).rank, 3);
  EXPECT_EQ(rank_user(s, 6, none.data(), 1, 4).rank, 2);
  EXPECT_EQ(rank_user(s, 6, none.data(), 3, 1).rank, 1);
  EXPECT_EQ(rank_user(s, 6, none.data(), 5, 2).rank, 6);
  // k_max larger than the catalogue: every item, in order.
  EXPECT_THAT(rank_user(s, 6, none.data(), 0, 50).top, ElementsAre(3, 1, 4, 0, 2, 5));
  // -inf ranks last but is rankable.
  const float never[] = {1.0f, -std::numeric_limits<float>::infinity(), 0.0f};
  EXPECT_EQ(rank_user(never, 3, none.data(), 1, 3).rank, 3);
}

TEST(EvalMetrics, TiedScoresCountAboveAndTies) {
  const float s[] = {0.5f, 2.0f, 0.5f, 3.0f, 2.0f, -1.0f, 0.5f};
  ExclusionMask mask(7);
  UserRanking r = rank_user(s, 7, mask.data(), 2, 4);
  EXPECT_EQ(r.above, 3);  // 3, 1, 4
  EXPECT_EQ(r.ties, 2);   // 0 and 6
  const std::int32_t history[] = {6};
  mask.set(history, 1, 2);
  r = rank_user(s, 7, mask.data(), 2, 4);
  EXPECT_EQ(r.ties, 1);  // an excluded item is no tie
}

TEST(EvalMetrics, ExpectedMetricsAverageEveryTieBreak) {
  // Brute force: the mean of the point metric over the ranks the held-out
  // item can take among its ties.
  for (std::int64_t above : {0, 3, 9, 25}) {
    for (std::int64_t ties : {0, 1, 4, 30, 300, 5000}) {
      double hit = 0, ndcg = 0, rr = 0;
      for (std::int64_t r = above + 1; r <= above + ties + 1; ++r) {
        hit += metric_hit_rate(r, 10);
        ndcg += metric_ndcg(r, 10);
        rr += metric_reciprocal_rank(r);
      }
      const double n = static_cast<double>(ties + 1);
      EXPECT_NEAR(expected_hit_rate(above, ties, 10), hit / n, 1e-12) << above << " " << ties;
      EXPECT_NEAR(expected_ndcg(above, ties, 10), ndcg / n, 1e-12) << above << " " << ties;
      EXPECT_NEAR(expected_reciprocal_rank(above, ties), rr / n, 1e-12) << above << " " << ties;
    }
  }
  // No ties: the point metrics.
  EXPECT_DOUBLE_EQ(expected_ndcg(2, 0, 10), metric_ndcg(3, 10));
  // A constant scorer over 100 candidates: every rank equally likely, so
  // HitRate@10 = 0.1 whatever the held-out item's id.
  std::vector<float> flat(100, 1.0f);
  ExclusionMask none(100);
  for (std::int32_t target : {0, 57, 99}) {
    const UserRanking r = rank_user(flat.data(), 100, none.data(), target, 10);
    EXPECT_DOUBLE_EQ(expected_hit_rate(r.above, r.ties, 10), 0.1);
  }
}

TEST(EvalMetrics, ExcludingTheHistoryChangesTheRank) {
  const float s[] = {0.9f, 0.8f, 0.7f, 0.6f, 0.5f};
  ExclusionMask mask(5);
  EXPECT_EQ(rank_user(s, 5, mask.data(), 3, 3).rank, 4);
  const std::vector<std::int32_t> history = {0, 2, 3};  // 3 is the held-out item: kept
  mask.set(history.data(), 3, /*keep=*/3);
  EXPECT_EQ(mask.num_excluded(), 2);
  UserRanking r = rank_user(s, 5, mask.data(), 3, 3);
  EXPECT_EQ(r.rank, 2);  // only item 1 is ahead now
  EXPECT_THAT(r.top, ElementsAre(1, 3, 4));
  EXPECT_DOUBLE_EQ(metric_ndcg(r.rank, 10), 1.0 / std::log2(3.0));
  mask.clear();
  EXPECT_EQ(mask.num_excluded(), 0);
  EXPECT_EQ(rank_user(s, 5, mask.data(), 3, 3).rank, 4);
  // The held-out item cannot be excluded from its own ranking.
  mask.set(history.data(), 3, /*keep=*/-1);
  EXPECT_THROW(rank_user(s, 5, mask.data(), 3, 3), Error);
}

TEST(EvalMetrics, HitRateEqualsRecallOfTheTopKListForOneHeldOutItem) {
  const float s[] = {0.1f, 0.4f, 0.4f, 0.9f, 0.3f, 0.4f, 0.0f};
  ExclusionMask mask(7);
  const std::vector<std::int32_t> history = {3};
  mask.set(history.data(), 1, -1);
  for (std::int32_t target : {0, 1, 2, 4, 5, 6}) {
    UserRanking r = rank_user(s, 7, mask.data(), target, 6);
    for (int k = 1; k <= 6; ++k) {
      EXPECT_EQ(metric_hit_rate(r.rank, k), metric_recall(r.top, k, {target}))
          << "target " << target << " k " << k;
    }
  }
}

TEST(EvalMetrics, NanAndPlusInfinityScoresAreErrorsNamingTheItem) {
  ExclusionMask none(3);
  const float nan[] = {0.0f, std::nanf(""), 1.0f};
  try {
    rank_user(nan, 3, none.data(), 0, 2);
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("item 1 has score nan"));
  }
  const float inf[] = {0.0f, 1.0f, std::numeric_limits<float>::infinity()};
  EXPECT_THROW(rank_user(inf, 3, none.data(), 0, 2), Error);
}

// count_above (what NDCG@k tuning reads): rank_user's above and ties where
// fewer than stop_at items are above; else at least stop_at above, so that
// NDCG@k is 0 for every k <= stop_at, as rank_user's counts give.
TEST(EvalMetrics, CountAboveStopsWhereNdcgIsZero) {
  std::vector<float> scores(300);
  std::vector<std::uint8_t> excluded(scores.size(), 0);
  for (std::size_t i = 0; i < scores.size(); ++i) {
    scores[i] = static_cast<float>((i * 37) % 23);  // many ties
    excluded[i] = i % 11 == 5;
  }
  scores[7] = -std::numeric_limits<float>::infinity();
  const auto n = static_cast<std::int64_t>(scores.size());
  int stopped = 0, counted = 0;
  for (std::int32_t target = 0; target < n; target += 3) {
    if (excluded[static_cast<std::size_t>(target)]) continue;
    const UserRanking full = rank_user(scores.data(), n, excluded.data(), target, 20);
    for (const std::int64_t stop_at : {1, 5, 10, 20, 100}) {
      const UserRanking c = count_above(scores.data(), n, excluded.data(), target, stop_at);
      if (full.above < stop_at) {
        EXPECT_EQ(c.above, full.above) << "target " << target << " stop_at " << stop_at;
        EXPECT_EQ(c.ties, full.ties) << "target " << target << " stop_at " << stop_at;
        ++counted;
      } else {
        EXPECT_GE(c.above, stop_at);
        ++stopped;
      }
      for (int k = 1; k <= stop_at; ++k)
        EXPECT_EQ(expected_ndcg(c.above, c.ties, k), expected_ndcg(full.above, full.ties, k));
    }
  }
  EXPECT_GT(stopped, 0);
  EXPECT_GT(counted, 0);
  scores[250] = std::nanf("");
  EXPECT_THROW(count_above(scores.data(), n, excluded.data(), 0, n), Error);
}

TEST(EvalMetrics, DiversityAndPopularityOfTheTopK) {
  const std::vector<std::int32_t> category = {0, 0, 1, 2, 1};
  const std::vector<std::int32_t> top = {0, 1, 2, 3};
  EXPECT_DOUBLE_EQ(metric_diversity(top, 2, category), 0.0);        // 0,0
  EXPECT_DOUBLE_EQ(metric_diversity(top, 3, category), 2.0 / 3.0);  // (0,0) same; (0,1),(0,1) differ
  EXPECT_DOUBLE_EQ(metric_diversity(top, 4, category), 5.0 / 6.0);
  EXPECT_DOUBLE_EQ(metric_diversity({2, 4}, 2, category), 0.0);
  EXPECT_DOUBLE_EQ(metric_diversity({3}, 10, category), 0.0);  // fewer than 2 items
  const std::vector<std::int64_t> count = {10, 0, 4, 7, 1};
  EXPECT_DOUBLE_EQ(metric_mean_popularity(top, 2, count), 5.0);
  EXPECT_DOUBLE_EQ(metric_mean_popularity(top, 10, count), 21.0 / 4.0);
  EXPECT_DOUBLE_EQ(metric_mean_popularity({}, 10, count), 0.0);
}

TEST(EvalShard, GlobalBlocksAreContiguousCompleteAndEqualInCalls) {
  for (std::int64_t users : {0, 1, 7, 64, 100, 257}) {
    for (std::int64_t batch : {1, 3, 16, 256}) {
      const std::int64_t blocks = (users + batch - 1) / batch;
      for (int world = 1; world <= 5; ++world) {
        std::int64_t next_user = 0, next_block = 0, most = 0;
        for (int rank = 0; rank < world; ++rank) {
          EvalShard s = eval_shard(users, batch, rank, world);
          EXPECT_EQ(s.user_begin, next_user);
          EXPECT_EQ(s.block_begin, next_block);
          EXPECT_LE(s.user_begin, s.user_end);
          // Blocks start at multiples of the batch: the same for any world size.
          EXPECT_EQ(s.user_begin, std::min(users, s.block_begin * batch));
          next_user = s.user_end;
          next_block = s.block_end;
          most = std::max(most, s.block_end - s.block_begin);
          EXPECT_EQ(s.calls, (blocks + world - 1) / world);
        }
        EXPECT_EQ(next_user, users);
        EXPECT_EQ(next_block, blocks);
        EXPECT_EQ(most, (blocks + world - 1) / world);
      }
    }
  }
}

}  // namespace
}  // namespace llmrec
