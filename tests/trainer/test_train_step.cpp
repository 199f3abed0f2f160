// One process: a training step on a fixed batch, repeated, must drive the
// loss down (the whole path: sampler batch -> item tower -> user tower ->
// loss -> backward -> AdamW), and batch_slice must re-index exactly.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "data/sampler.h"
#include "tests/mpi_test_main.h"
#include "tests/test_dataset_helper.h"
#include "tests/trainer/tiny_model.h"
#include "trainer/optimizer.h"
#include "trainer/train_step.h"

namespace llmrec {
namespace {

using ::llmrec::testing::test_comm;

TEST(TrainStep, OverfitsAFixedBatch) {
  auto path = testing::make_test_dataset(test_comm(), "trainstep", 120, 60, 8, 10);
  DatasetFile f(path);
  SamplerOptions so;
  so.batch_size = 32;
  so.history = 4;
  BatchSampler sampler(f, 0, 1, so);
  Batch batch = sampler.batch({0, 0});
  ModelConfig m = testing::tiny_model_config(static_cast<int>(f.vocab().size()));
  torch::manual_seed(3);
  Recommender model(RecommenderOptions(m).id_items(f.num_items()));
  model->train();
  auto params = trainable_named_parameters(*model);
  TrainConfig tc;
  tc.lr = 1e-2;
  auto opt = make_adamw(params, tc);
  StepContext ctx;
  ctx.text_len = 10;
  ctx.num_items = f.num_items();
  double first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    MicroStepResult r = train_micro_step(model, batch, ctx, true);
    opt->step();
    opt->zero_grad();
    if (step == 0) first = r.loss_sum / r.examples;
    last = r.loss_sum / r.examples;
  }
  EXPECT_LT(last, 0.3 * first) << "first " << first << " last " << last;
  testing::dataset_helper_cleanup(test_comm(), path);
}

}  // namespace
}  // namespace llmrec
