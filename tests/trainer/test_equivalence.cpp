// The correctness oracle of docs/architecture.md (W = 2 equals W = 1), on real training steps (float64,
// AdamW):
//  - global negatives: W ranks x batch B == 1 process x batch W*B;
//  - local negatives: W ranks x batch B == 1 process accumulating the W
//    batches as micro-batches;
// both with and without gradient accumulation on top, and for the causal
// user tower (a loss at every position of each sequence window, with time
// and context features of every slot and target), and AdaLoRA's rank
// allocation (the same triplets kept on every rank as in one process).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <numeric>

#include "data/sampler.h"
#include "distributed/gradient_reducer.h"
#include "models/adalora.h"
#include "tests/mpi_test_main.h"
#include "tests/test_dataset_helper.h"
#include "tests/trainer/tiny_model.h"
#include "trainer/optimizer.h"
#include "trainer/train_step.h"

namespace llmrec {
namespace {

using ::llmrec::testing::test_comm;

constexpr std::int64_t kB = 6;  // per-rank batch
constexpr int kSteps = 4;
const std::vector<std::string> kTimeFeatures = {"gap", "weekday", "hour"};

/// (global negatives, micro-batches, causal user tower with a loss at every position)
class EquivalenceTest : public ::testing::TestWithParam<std::tuple<bool, int, bool>> {
 protected:
  static std::string dataset_;
  static void SetUpTestSuite() {
    dataset_ = testing::make_test_dataset(test_comm(), "equiv", 120, 60, 8, 10);
  }
  static void TearDownTestSuite() { testing::dataset_helper_cleanup(test_comm(), dataset_); }

  Communicator& comm_ = test_comm();

  Recommender make_model(const DatasetFile& f, bool adaptive = false) {
    ModelConfig m = testing::tiny_model_config(static_cast<int>(f.vocab().size()));
    m.lora.adaptive.enabled = adaptive;  // AdaLoRA: r 4 on query and value, pruned to 1 on average
    m.lora.adaptive.target_r = 1;
    if (std::get<2>(GetParam())) {
      m.user.pooling = "causal";
      m.user.layers = 1;
      m.user.time_features = kTimeFeatures;
      m.user.context_columns = {"device"};
    }
    torch::manual_seed(11);
    const std::vector<std::int64_t> values = {static_cast<std::int64_t>(f.context_values("device").size())};
    Recommender model(RecommenderOptions(m)
                          .id_items(f.num_items())
                          .context_values(std::get<2>(GetParam()) ? values : std::vector<std::int64_t>{}));
    model->to(torch::kDouble);
    model->train();
    return model;
  }
  /// The global batches of `global_batch` sequences (windows with every
  /// target when `sequences`, with time and device features).
  static SamplerOptions sampler_options(const DatasetFile& f, std::int64_t global_batch, bool sequences) {
    SamplerOptions so;
    so.batch_size = global_batch;  // the same on every rank
    so.history = 4;
    so.seed = 5;
    so.sequences = sequences;  // batch_slice then cuts windows with all their targets
    if (sequences) {
      so.context.time = parse_time_features(kTimeFeatures);
      so.context.column_values = {static_cast<std::int64_t>(f.context_values("device").size())};
      so.context_columns = {"device"};
    }
    return so;
  }
  /// Every parameter of `a` equals `b`'s within 1e-9, and they moved from
  /// `fresh` (the comparison is not vacuous).
  static void expect_same_trained_parameters(const std::vector<std::pair<std::string, at::Tensor>>& a,
                                             const std::vector<std::pair<std::string, at::Tensor>>& b,
                                             Recommender& fresh) {
    double worst = 0;
    std::string worst_name;
    for (std::size_t i = 0; i < a.size(); ++i) {
      double diff = (a[i].second - b[i].second).abs().max().item<double>();
      if (diff > worst) {
        worst = diff;
        worst_name = a[i].first;
      }
    }
    EXPECT_LT(worst, 1e-9) << "largest difference in '" << worst_name << "'";
    double moved = 0;
    auto fresh_params = fresh->named_parameters();
    for (const auto& [name, p] : b)
      moved = std::max(moved, (p - fresh_params[name]).abs().max().item<double>());
    EXPECT_GT(moved, 1e-4);
  }
  static Batch to_double(Batch b) {
    b.weight = b.weight.to(torch::kDouble);
    b.item_log_q = b.item_log_q.to(torch::kDouble);
    return b;
  }
};
std::string EquivalenceTest::dataset_;

TEST_P(EquivalenceTest, DistributedStepsEqualOneProcess) {
  const auto [global, micro, sequences] = GetParam();
  const int w = comm_.size();
  if (w < 2) GTEST_SKIP() << "needs 2 or more ranks";
  DatasetFile f(dataset_);
  // Windows carry several targets each: a smaller per-rank batch keeps
  // kSteps * micro steps in an epoch at 3 ranks.
  const std::int64_t kb = sequences ? kB - 2 : kB;
  BatchSampler global_batches(f, 0, 1, sampler_options(f, kb * w, sequences));
  ASSERT_GE(global_batches.steps_per_epoch(), kSteps * micro);
  TrainConfig tc;
  tc.lr = 3e-3;
  tc.micro_batches = micro;

  // Reference: one process, no communication.
  Recommender ref = make_model(f);
  auto ref_params = trainable_named_parameters(*ref);
  auto ref_opt = make_adamw(ref_params, tc);
  StepContext one;
  one.global_negatives = global;
  one.text_len = 10;
  one.cold = nullptr;
  one.num_items = f.num_items();
  // Distributed: this rank's slice of every global batch.
  Recommender dist = make_model(f);
  auto dist_params = trainable_named_parameters(*dist);
  GradientReducer reducer(comm_, dist_params, {0.01, ReduceOp::kAvg});
  auto dist_opt = make_adamw(dist_params, tc);
  StepContext many = one;
  many.comm = &comm_;
  many.reducer = &reducer;
  many.micro_batches = micro;

  std::int64_t cursor = 0;
  for (int step = 0; step < kSteps; ++step) {
    // Reference: global negatives -> one micro-batch of W*B per micro-step;
    // local -> the W slices as W micro-batches per micro-step.
    one.micro_batches = global ? micro : micro * w;
    for (int m = 0; m < micro; ++m) {
      Batch g = to_double(global_batches.batch({0, cursor + m}));
      if (global) {
        train_micro_step(ref, g, one, true);
      } else {
        for (int r = 0; r < w; ++r) train_micro_step(ref, batch_slice(g, r * kb, (r + 1) * kb), one, true);
      }
      Batch mine = batch_slice(g, comm_.rank() * kb, (comm_.rank() + 1) * kb);
      train_micro_step(dist, mine, many, m + 1 == micro);
    }
    cursor += micro;
    reducer.finish();
    ref_opt->step();
    ref_opt->zero_grad();
    dist_opt->step();
    dist_opt->zero_grad();
  }
  Recommender fresh = make_model(f);
  expect_same_trained_parameters(ref_params, dist_params, fresh);
}

/// AdaLoRA's allocator reads the all-reduced gradients after each step:
/// every rank keeps the triplets one process keeps, and the orthogonality
/// penalty (added on every rank and micro-step) trains the same weights.
TEST_P(EquivalenceTest, AdaLoraAllocatesTheSameRanksOnEveryWorldSize) {
  const auto [global, micro, sequences] = GetParam();
  const int w = comm_.size();
  if (w < 2 || sequences) GTEST_SKIP() << "needs 2 or more ranks; the item tower is what it prunes";
  DatasetFile f(dataset_);
  BatchSampler global_batches(f, 0, 1, sampler_options(f, kB * w, false));
  TrainConfig tc;
  tc.lr = 3e-3;
  tc.micro_batches = micro;
  AdaLoraSchedule schedule;
  schedule.target_r = 1;
  schedule.tfinal = 1;
  schedule.total_step = kSteps;  // steps 1-2 prune, 3 is final, 4 keeps the pattern

  Recommender ref = make_model(f, true);
  auto ref_params = trainable_named_parameters(*ref);
  auto ref_opt = make_adamw(ref_params, tc);
  StepContext one;
  one.global_negatives = global;
  one.text_len = 10;
  one.num_items = f.num_items();
  one.micro_batches = global ? micro : micro * w;
  Recommender dist = make_model(f, true);
  auto dist_params = trainable_named_parameters(*dist);
  GradientReducer reducer(comm_, dist_params, {0.01, ReduceOp::kAvg});
  auto dist_opt = make_adamw(dist_params, tc);
  StepContext many = one;
  many.comm = &comm_;
  many.reducer = &reducer;
  many.micro_batches = micro;

  for (int step = 0; step < kSteps; ++step) {
    for (int m = 0; m < micro; ++m) {
      Batch g = to_double(global_batches.batch({0, step * micro + m}));
      if (global) {
        train_micro_step(ref, g, one, true);
      } else {
        for (int r = 0; r < w; ++r) train_micro_step(ref, batch_slice(g, r * kB, (r + 1) * kB), one, true);
      }
      train_micro_step(dist, batch_slice(g, comm_.rank() * kB, (comm_.rank() + 1) * kB), many,
                       m + 1 == micro);
    }
    reducer.finish();
    ref_opt->step();
    dist_opt->step();
    EXPECT_EQ(adalora_update_and_allocate(*ref->bert, schedule, step + 1).budget,
              adalora_update_and_allocate(*dist->bert, schedule, step + 1).budget);
    ref_opt->zero_grad();
    dist_opt->zero_grad();
  }
  Recommender fresh = make_model(f, true);
  expect_same_trained_parameters(ref_params, dist_params, fresh);
  const auto pattern = adalora_rank_pattern(*dist->bert);
  EXPECT_EQ(pattern, adalora_rank_pattern(*ref->bert));
  std::vector<double> kept;
  for (const auto& [name, flags] : pattern) kept.insert(kept.end(), flags.begin(), flags.end());
  EXPECT_EQ(std::accumulate(kept.begin(), kept.end(), 0.0), 2.0);  // target_r x 2 modules
  at::Tensor on_all = torch::tensor(kept, torch::kDouble);         // every rank the same
  comm_.all_reduce(on_all);
  EXPECT_TRUE(torch::equal(on_all, torch::tensor(kept, torch::kDouble) * w));
}

INSTANTIATE_TEST_SUITE_P(NegativesAndAccumulation, EquivalenceTest,
                         ::testing::Combine(::testing::Values(true, false), ::testing::Values(1, 2),
                                            ::testing::Values(false)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "global" : "local") + "_micro" +
                                  std::to_string(std::get<1>(info.param)) +
                                  (std::get<2>(info.param) ? "_causal" : "");
                         });
// Causal windows carry different numbers of targets, so local negatives
// (each rank normalising by its own share) match one process only where
// every slice has as many targets; global negatives normalise by the
// global count and match exactly.
INSTANTIATE_TEST_SUITE_P(CausalEveryPosition, EquivalenceTest,
                         ::testing::Combine(::testing::Values(true), ::testing::Values(1, 2),
                                            ::testing::Values(true)),
                         [](const auto& info) {
                           return "global_micro" + std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace llmrec
