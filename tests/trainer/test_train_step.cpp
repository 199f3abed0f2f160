// One process: a training step on a fixed batch, repeated, must drive the
// loss down (the whole path: sampler batch -> item tower -> user tower ->
// loss -> backward -> AdamW), and batch_slice must re-index exactly.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "data/sampler.h"
#include "tests/mpi_test_main.h"
#include "tests/test_dataset_helper.h"
#include "tests/trainer/tiny_model.h"
#include "trainer/autocast.h"
#include "trainer/optimizer.h"
#include "trainer/train_step.h"

namespace llmrec {
namespace {

using ::llmrec::testing::test_comm;

SamplerOptions small_batches() {
  SamplerOptions so;
  so.batch_size = 32;
  so.history = 4;
  return so;
}

TEST(TrainStep, OverfitsAFixedBatch) {
  auto path = testing::make_test_dataset(test_comm(), "trainstep", 120, 60, 8, 10);
  DatasetFile f(path);
  BatchSampler sampler(f, 0, 1, small_batches());
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
    if (step == 0) first = r.loss_sum / static_cast<double>(r.examples);
    last = r.loss_sum / static_cast<double>(r.examples);
  }
  EXPECT_LT(last, 0.3 * first) << "first " << first << " last " << last;
  testing::dataset_helper_cleanup(test_comm(), path);
}

// run.precision bf16: the forward runs under autocast (matrix products in
// bfloat16), the loss and gradients agree with float32 to bf16 accuracy,
// weights and gradients stay float32, and autocast is off again afterwards.
// On the CPU here; the GPU uses the same code with the CUDA autocast.
TEST(TrainStep, Bf16AutocastAgreesWithFloat32) {
  auto path = testing::make_test_dataset(test_comm(), "trainstep_bf16", 120, 60, 8, 10);
  DatasetFile f(path);
  BatchSampler sampler(f, 0, 1, small_batches());
  ModelConfig m = testing::tiny_model_config(static_cast<int>(f.vocab().size()));
  m.bert.dropout = 0.0;
  m.id_dropout = 0.0;
  m.user.dropout = 0.0;
  torch::manual_seed(5);
  Recommender fp32(RecommenderOptions(m).id_items(f.num_items()));
  auto bf16 = std::dynamic_pointer_cast<RecommenderImpl>(fp32->clone());
  Recommender bf16_model(bf16);
  StepContext ctx;
  ctx.text_len = 10;
  ctx.num_items = f.num_items();
  for (int k = 0; k < 3; ++k) {
    Batch batch = sampler.batch({0, k});
    MicroStepResult a = train_micro_step(fp32, batch, ctx, true);
    StepContext half = ctx;
    half.bf16 = true;
    MicroStepResult b = train_micro_step(bf16_model, batch, half, true);
    EXPECT_FALSE(autocast_enabled(c10::DeviceType::CPU)) << "the guard must restore autocast";
    const double la = a.loss_sum / static_cast<double>(a.examples);
    const double lb = b.loss_sum / static_cast<double>(b.examples);
    EXPECT_NEAR(lb, la, 0.02 * la) << "batch " << k;  // bf16 has 8 bits of mantissa
    EXPECT_NE(lb, la) << "autocast had no effect: the step did not run in bf16";
  }
  auto ga = fp32->named_parameters(), gb = bf16_model->named_parameters();
  double dot = 0, na = 0, nb = 0;
  for (const auto& p : ga) {
    const torch::Tensor& x = p.value().grad();
    const torch::Tensor& y = gb[p.key()].grad();
    if (!x.defined()) continue;
    ASSERT_EQ(y.scalar_type(), torch::kFloat) << p.key();
    dot += (x * y).sum().item<double>();
    na += x.pow(2).sum().item<double>();
    nb += y.pow(2).sum().item<double>();
  }
  EXPECT_GT(dot / std::sqrt(na * nb), 0.99) << "accumulated gradients point the same way";
  testing::dataset_helper_cleanup(test_comm(), path);
}

TEST(Autocast, GuardSetsAndRestoresTheState) {
  EXPECT_FALSE(autocast_enabled(c10::DeviceType::CPU));
  {
    AutocastGuard off(c10::DeviceType::CPU, false);
    EXPECT_FALSE(autocast_enabled(c10::DeviceType::CPU));
  }
  {
    AutocastGuard on(c10::DeviceType::CPU, true);
    EXPECT_TRUE(autocast_enabled(c10::DeviceType::CPU));
    torch::Tensor a = torch::randn({4, 8}), b = torch::randn({8, 3});
    EXPECT_EQ(torch::matmul(a, b).scalar_type(), torch::kBFloat16);
  }
  EXPECT_FALSE(autocast_enabled(c10::DeviceType::CPU));
  EXPECT_EQ(torch::matmul(torch::randn({4, 8}), torch::randn({8, 3})).scalar_type(), torch::kFloat);
}

}  // namespace
}  // namespace llmrec
