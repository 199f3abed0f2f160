// The correctness oracle of docs/architecture.md (W = 2 equals W = 1), on real training steps (float64,
// AdamW):
//  - global negatives: W ranks x batch B == 1 process x batch W*B;
//  - local negatives: W ranks x batch B == 1 process accumulating the W
//    batches as micro-batches;
// both with and without gradient accumulation on top, and for the causal
// user tower (a loss at every position of each sequence window, with time
// and context features of every slot and target, and the users' profile
// tokens), and AdaLoRA's rank
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
    dataset_ = testing::make_test_dataset(test_comm(), "equiv", 120, 60, 8, 10, /*profiles=*/true);
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
      m.user.profile = true;
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
      so.profiles = true;
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

  /// The reference (one process, no communication) and this rank's replica
  /// of the same model, with their optimizers and step contexts.
  struct Replicas {
    Recommender ref{nullptr}, dist{nullptr};
    std::vector<std::pair<std::string, at::Tensor>> ref_params, dist_params;
    std::unique_ptr<torch::optim::AdamW> ref_opt, dist_opt;
    std::unique_ptr<GradientReducer> reducer;
    StepContext one, many;
  };
  Replicas make_replicas(const DatasetFile& f, bool adaptive = false) {
    const bool global = std::get<0>(GetParam());
    const int micro = std::get<1>(GetParam());
    TrainConfig tc;
    tc.lr = 3e-3;
    tc.micro_batches = micro;
    Replicas x;
    x.ref = make_model(f, adaptive);
    x.ref_params = trainable_named_parameters(*x.ref);
    x.ref_opt = make_adamw(x.ref_params, tc);
    x.one.global_negatives = global;
    x.one.text_len = 10;
    x.one.num_items = f.num_items();
    // Global negatives: one micro-batch of W*B per micro-step; local: the
    // W slices as W micro-batches per micro-step.
    x.one.micro_batches = global ? micro : micro * comm_.size();
    x.dist = make_model(f, adaptive);
    x.dist_params = trainable_named_parameters(*x.dist);
    x.reducer = std::make_unique<GradientReducer>(comm_, x.dist_params, ReducerOptions{0.01, ReduceOp::kAvg});
    x.dist_opt = make_adamw(x.dist_params, tc);
    x.many = x.one;
    x.many.comm = &comm_;
    x.many.reducer = x.reducer.get();
    x.many.micro_batches = micro;
    return x;
  }
  /// The micro-steps of optimizer step `step` (global batches of kb x W
  /// sequences) on the reference and, this rank's slice, on the replica,
  /// then the reducer; the optimizer steps are the caller's.
  void micro_steps(Replicas& x, BatchSampler& global_batches, int step, std::int64_t kb) {
    const bool global = std::get<0>(GetParam());
    const int micro = std::get<1>(GetParam());
    for (int m = 0; m < micro; ++m) {
      Batch g = to_double(global_batches.batch({0, static_cast<std::int64_t>(step) * micro + m}));
      if (global) {
        train_micro_step(x.ref, g, x.one, true);
      } else {
        for (int r = 0; r < comm_.size(); ++r)
          train_micro_step(x.ref, batch_slice(g, r * kb, (r + 1) * kb), x.one, true);
      }
      Batch mine = batch_slice(g, comm_.rank() * kb, (comm_.rank() + 1) * kb);
      train_micro_step(x.dist, mine, x.many, m + 1 == micro);
    }
    x.reducer->finish();
  }
  /// kSteps optimizer steps of the reference and this rank's replica, then
  /// their parameters compared. With `all_items` every item with training
  /// events is a candidate of every slice (model.loss.negatives: all) and
  /// the replica shares their encoding out (StepContext::shard_items).
  void train_both_and_compare(bool all_items) {
    const bool sequences = std::get<2>(GetParam());
    DatasetFile f(dataset_);
    // Windows carry several targets each: a smaller per-rank batch keeps
    // kSteps * micro steps in an epoch at 3 ranks.
    const std::int64_t kb = sequences ? kB - 2 : kB;
    SamplerOptions so = sampler_options(f, kb * comm_.size(), sequences);
    so.all_items = all_items;
    BatchSampler global_batches(f, 0, 1, so);
    ASSERT_GE(global_batches.steps_per_epoch(), kSteps * std::get<1>(GetParam()));
    Replicas x = make_replicas(f);
    x.many.shard_items = all_items;
    for (int step = 0; step < kSteps; ++step) {
      micro_steps(x, global_batches, step, kb);
      step_both(x);
    }
    Recommender fresh = make_model(f);
    expect_same_trained_parameters(x.ref_params, x.dist_params, fresh);
  }
  /// One AdamW step of the reference and of the replica.
  static void step_both(Replicas& x) {
    x.ref_opt->step();
    x.ref_opt->zero_grad();
    x.dist_opt->step();
    x.dist_opt->zero_grad();
  }
};
std::string EquivalenceTest::dataset_;

TEST_P(EquivalenceTest, DistributedStepsEqualOneProcess) {
  if (comm_.size() < 2) GTEST_SKIP() << "needs 2 or more ranks";
  train_both_and_compare(/*all_items=*/false);
}

/// A full softmax over local negatives (model.loss.negatives: all): every
/// rank holds every item, encodes a share of them (StepContext::shard_items)
/// and gets the others' vectors and its share's summed gradient; the steps
/// equal one process encoding every item for each slice.
TEST_P(EquivalenceTest, ShardedItemEncodingEqualsOneProcess) {
  if (comm_.size() < 2 || std::get<0>(GetParam()))
    GTEST_SKIP() << "needs 2 or more ranks and local negatives";
  train_both_and_compare(/*all_items=*/true);
}

/// The same with the last rank's batch empty (the tail of an epoch): it
/// holds no items, encodes none and still joins the collectives; the steps
/// equal one process accumulating the other ranks' slices.
TEST_P(EquivalenceTest, ShardedItemEncodingWithAnEmptyRank) {
  const bool global = std::get<0>(GetParam());
  const int w = comm_.size();
  if (w < 2 || global || std::get<1>(GetParam()) != 1 || std::get<2>(GetParam()))
    GTEST_SKIP() << "needs 2 or more ranks, local negatives, no accumulation";
  DatasetFile f(dataset_);
  SamplerOptions so = sampler_options(f, kB * w, false);
  so.all_items = true;
  BatchSampler global_batches(f, 0, 1, so);
  Replicas x = make_replicas(f);
  x.one.micro_batches = w - 1;
  x.many.shard_items = true;
  for (int step = 0; step < kSteps; ++step) {
    const Batch g = to_double(global_batches.batch({0, step}));
    for (int r = 0; r + 1 < w; ++r)
      train_micro_step(x.ref, batch_slice(g, r * kB, (r + 1) * kB), x.one, true);
    Batch mine = batch_slice(g, comm_.rank() * kB, (comm_.rank() + 1) * kB);
    if (comm_.rank() + 1 == w) {  // as the batch builder makes it: no rows, no items
      mine = batch_slice(g, 0, 0);
      for (at::Tensor* t :
           {&mine.item_ids, &mine.item_tokens, &mine.item_mask, &mine.item_log_q, &mine.negatives})
        if (t->defined()) *t = t->narrow(0, 0, 0);
    }
    const MicroStepResult result = train_micro_step(x.dist, mine, x.many, true);
    EXPECT_EQ(result.global_examples, (w - 1) * kB);
    x.reducer->finish();
    step_both(x);
  }
  Recommender fresh = make_model(f);
  expect_same_trained_parameters(x.ref_params, x.dist_params, fresh);
}

/// AdaLoRA's allocator reads the all-reduced gradients after each step:
/// every rank keeps the triplets one process keeps, and the orthogonality
/// penalty (added on every rank and micro-step) trains the same weights.
TEST_P(EquivalenceTest, AdaLoraAllocatesTheSameRanksOnEveryWorldSize) {
  const bool sequences = std::get<2>(GetParam());
  const int w = comm_.size();
  if (w < 2 || sequences) GTEST_SKIP() << "needs 2 or more ranks; the item tower is what it prunes";
  DatasetFile f(dataset_);
  BatchSampler global_batches(f, 0, 1, sampler_options(f, kB * w, false));
  ModelAdaLoraConfig schedule;
  schedule.target_r = 1;
  schedule.tfinal = 1;
  schedule.total_step = kSteps;  // steps 1-2 prune, 3 is final, 4 keeps the pattern
  Replicas x = make_replicas(f, true);
  for (int step = 0; step < kSteps; ++step) {
    micro_steps(x, global_batches, step, kB);
    x.ref_opt->step();
    x.dist_opt->step();
    EXPECT_EQ(adalora_update_and_allocate(*x.ref->bert, schedule, step + 1).budget,
              adalora_update_and_allocate(*x.dist->bert, schedule, step + 1).budget);
    x.ref_opt->zero_grad();
    x.dist_opt->zero_grad();
  }
  Recommender fresh = make_model(f, true);
  expect_same_trained_parameters(x.ref_params, x.dist_params, fresh);
  const auto pattern = adalora_rank_pattern(*x.dist->bert);
  EXPECT_EQ(pattern, adalora_rank_pattern(*x.ref->bert));
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
