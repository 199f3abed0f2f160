// One process: a training step on a fixed batch, repeated, must drive the
// loss down (the whole path: sampler batch -> item tower -> user tower ->
// loss -> backward -> AdamW), and batch_slice must re-index exactly.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>
#include <vector>

#include "common/error.h"
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

/// A one-process step context reading 10 tokens, with `cache` (or none).
StepContext text_context(std::int64_t num_items, TextFeatureCache* cache) {
  StepContext ctx;
  ctx.text_len = 10;
  ctx.num_items = num_items;
  ctx.text_cache = cache;
  return ctx;
}

/// The same random change (times `scale`) to both models' word embeddings,
/// behind any cache's back.
void move_encoder(Recommender& a, Recommender& b, double scale) {
  torch::NoGradGuard no_grad;
  const torch::Tensor change = scale * torch::randn_like(a->bert->embeddings->word_embeddings->weight);
  a->bert->embeddings->word_embeddings->weight.add_(change);
  b->bert->embeddings->word_embeddings->weight.add_(change);
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

// model.bert.freeze: no BERT weight trains, the encoder stays in inference
// mode under train(), and a step with TextFeatureCache gives the loss and
// gradients of encoding every step, from features it encodes once per item.
TEST(TrainStep, FrozenEncoderKeepsEachItemsFeaturesAndTrainsTheSame) {
  auto path = testing::make_test_dataset(test_comm(), "trainstep_frozen", 120, 60, 8, 10);
  DatasetFile f(path);
  BatchSampler sampler(f, 0, 1, small_batches());
  ModelConfig m = testing::tiny_model_config(static_cast<int>(f.vocab().size()));
  m.lora.r = 0;
  m.bert.freeze = true;
  m.bert.dropout = 0.3;  // must stay off: the encoder is a fixed function
  m.user.dropout = 0.0;
  torch::manual_seed(9);
  Recommender cached(RecommenderOptions(m).id_items(f.num_items()));
  Recommender fresh(std::dynamic_pointer_cast<RecommenderImpl>(cached->clone()));
  cached->train();
  fresh->train();
  EXPECT_TRUE(cached->is_training());
  EXPECT_FALSE(cached->bert->is_training());
  EXPECT_FALSE(fresh->bert->is_training()) << "a clone keeps the encoder in inference mode";
  for (const auto& [name, p] : trainable_named_parameters(*cached)) {
    EXPECT_NE(name.rfind("bert.", 0), 0U) << name << " trains although the encoder is frozen";
  }
  TextFeatureCache cache(f.num_items());
  const StepContext with = text_context(f.num_items(), &cache);
  const StepContext without = text_context(f.num_items(), nullptr);
  std::set<std::int64_t> seen;
  std::vector<double> first_losses;
  for (int k = 0; k < 3; ++k) {
    Batch batch = sampler.batch({0, k});
    for (std::int64_t i = 0; i < batch.item_ids.numel(); ++i)
      seen.insert(batch.item_ids[i].item<std::int64_t>());
    MicroStepResult a = train_micro_step(cached, batch, with, true);
    MicroStepResult b = train_micro_step(fresh, batch, without, true);
    EXPECT_NEAR(a.loss_sum, b.loss_sum, 1e-4 * std::abs(b.loss_sum)) << "batch " << k;
    first_losses.push_back(a.loss_sum);
    EXPECT_EQ(cache.size(), static_cast<std::int64_t>(seen.size())) << "each item encoded once";
  }
  auto pa = cached->named_parameters(), pb = fresh->named_parameters();
  std::size_t compared = 0;
  for (const auto& p : pa) {
    const torch::Tensor& x = p.value().grad();
    if (!x.defined()) continue;
    ++compared;
    EXPECT_TRUE(torch::allclose(x, pb[p.key()].grad(), 1e-4, 1e-6)) << p.key();
  }
  EXPECT_GT(compared, 3U);
  // The kept features are used: an encoder changed behind the cache's back
  // moves the loss of encoding every step, not the cached one.
  move_encoder(cached, fresh, 1.0);
  Batch batch = sampler.batch({0, 0});
  MicroStepResult a = train_micro_step(cached, batch, with, true);
  MicroStepResult b = train_micro_step(fresh, batch, without, true);
  EXPECT_NEAR(a.loss_sum, first_losses[0], 1e-5 * std::abs(first_losses[0]));
  EXPECT_GT(std::abs(b.loss_sum - first_losses[0]), 1e-3 * std::abs(first_losses[0]));
  testing::dataset_helper_cleanup(test_comm(), path);
}

// train.item_cache_refresh: with a trainable encoder every candidate is
// scored from kept rows (stale keys) and the encoder's gradient comes from
// the batch's own items (histories and targets) and a weighted sample of the
// other candidates, encoded again. Right after a clear the loss and every
// gradient but the encoder's are those of encoding every candidate (the
// encoder's too when every other candidate is drawn). When the encoder moves
// the kept rows stay (the same loss as before it moved) until clear().
TEST(TrainStep, KeptFeaturesScoreTheOtherCandidatesUntilCleared) {
  auto path = testing::make_test_dataset(test_comm(), "trainstep_kept", 120, 60, 8, 10);
  DatasetFile f(path);
  SamplerOptions so = small_batches();
  so.batch_size = 4;
  so.all_items = true;  // a full softmax: most candidates are not the batch's own
  BatchSampler sampler(f, 0, 1, so);
  ModelConfig m = testing::tiny_model_config(static_cast<int>(f.vocab().size()));
  m.lora.r = 0;  // every encoder weight trains
  m.loss.negatives = "all";
  m.bert.dropout = 0.0;
  m.user.dropout = 0.0;
  torch::manual_seed(13);
  Recommender kept(RecommenderOptions(m).id_items(f.num_items()));
  Recommender every(std::dynamic_pointer_cast<RecommenderImpl>(kept->clone()));
  kept->train();
  every->train();
  TextFeatureCache cache(f.num_items());
  const StepContext with = text_context(f.num_items(), &cache);
  const StepContext without = text_context(f.num_items(), nullptr);
  const Batch batch = sampler.batch({0, 0});
  ASSERT_GT(batch.item_ids.numel(), 4 * so.history) << "the batch must have candidates of its own and others";

  MicroStepResult a = train_micro_step(kept, batch, with, true);
  MicroStepResult b = train_micro_step(every, batch, without, true);
  EXPECT_NEAR(a.loss_sum, b.loss_sum, 1e-5 * std::abs(b.loss_sum));
  EXPECT_EQ(cache.size(), batch.item_ids.numel());
  auto pa = kept->named_parameters(), pb = every->named_parameters();
  std::size_t same = 0, encoder_differs = 0;
  for (const auto& p : pa) {
    const torch::Tensor& x = p.value().grad();
    const torch::Tensor& y = pb[p.key()].grad();
    ASSERT_EQ(x.defined(), y.defined()) << p.key();
    if (!x.defined()) continue;
    ASSERT_GT(x.abs().sum().item<double>(), 0.0) << p.key() << " gets no gradient";
    if (p.key().rfind("bert.", 0) == 0) {
      encoder_differs += torch::allclose(x, y, 1e-4, 1e-7) ? 0 : 1;
    } else {
      EXPECT_TRUE(torch::allclose(x, y, 1e-4, 1e-7)) << p.key();
      ++same;
    }
  }
  EXPECT_GT(same, 3U);
  EXPECT_GT(encoder_differs, 0U) << "a sample of the other candidates carries their encoder gradient";

  const double first = a.loss_sum;
  move_encoder(kept, every, 0.5);  // the kept rows do not move until cleared
  kept->zero_grad();
  a = train_micro_step(kept, batch, with, true);
  b = train_micro_step(every, batch, without, true);
  EXPECT_EQ(a.loss_sum, first) << "every candidate, the batch's own too, is scored from the kept rows";
  EXPECT_GT(std::abs(b.loss_sum - first), 1e-4 * std::abs(first)) << "the encoder did move";
  const torch::Tensor& word_grad = kept->bert->embeddings->word_embeddings->weight.grad();
  ASSERT_TRUE(word_grad.defined());
  EXPECT_GT(word_grad.abs().sum().item<double>(), 0.0) << "the encoder's gradient flows through the own rows";
  cache.clear();
  EXPECT_EQ(cache.size(), 0);
  a = train_micro_step(kept, batch, with, true);
  EXPECT_NEAR(a.loss_sum, b.loss_sum, 1e-5 * std::abs(b.loss_sum)) << "cleared: every row encoded again";
  EXPECT_TRUE(kept->bert->is_training()) << "the kept rows are encoded in inference mode, then back";

  // A batch whose own items outnumber the other candidates draws all of
  // those (weight 1): the encoder's gradient too is then exact.
  SamplerOptions wide_options = so;
  wide_options.batch_size = 32;
  BatchSampler wide_sampler(f, 0, 1, wide_options);
  const Batch wide = wide_sampler.batch({0, 0});
  const torch::Tensor hist = wide.history.flatten();
  const std::int64_t own =
      std::get<0>(torch::_unique(torch::cat({hist.masked_select(hist >= 0), wide.target}))).numel();
  ASSERT_GE(2 * own, wide.item_ids.numel()) << "the test needs more own items than others";
  cache.clear();
  kept->zero_grad();
  every->zero_grad();
  a = train_micro_step(kept, wide, with, true);
  b = train_micro_step(every, wide, without, true);
  EXPECT_NEAR(a.loss_sum, b.loss_sum, 1e-5 * std::abs(b.loss_sum));
  std::size_t compared = 0;
  for (const auto& p : kept->named_parameters()) {
    const torch::Tensor& x = p.value().grad();
    if (!x.defined()) continue;
    ++compared;
    EXPECT_TRUE(torch::allclose(x, every->named_parameters()[p.key()].grad(), 1e-4, 1e-7)) << p.key();
  }
  EXPECT_GT(compared, 3U);

  // state() / restore() round trip, and a table of another width is refused.
  auto [table, rows] = cache.state();
  TextFeatureCache back(f.num_items());
  back.restore(table, rows, table.size(1), "t.h5");
  EXPECT_EQ(back.size(), cache.size());
  EXPECT_TRUE(torch::equal(back.state().first, table));
  EXPECT_THROW(back.restore(table, rows, table.size(1) + 1, "t.h5"), IoError);
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
