// The learning-rate schedule (trainer/optimizer.h) that train and pretrain
// follow: linear warm-up (a share of the steps or a count), then cosine,
// linear or constant decay to lr x min_lr_ratio at the last step; the
// fused AdamW step against LibTorch's AdamW.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "trainer/optimizer.h"

namespace llmrec {
namespace {

TrainConfig schedule(const std::string& kind, double warmup, double min_ratio = 0.0) {
  TrainConfig t;
  t.lr = 1e-3;
  t.schedule = kind;
  t.warmup = warmup;
  t.min_lr_ratio = min_ratio;
  return t;
}

TEST(Schedule, WarmupIsLinearFromLrOverWarmupToLr) {
  const TrainConfig t = schedule("constant", 10);  // 10 steps
  EXPECT_EQ(warmup_steps(t, 1000), 10);
  EXPECT_DOUBLE_EQ(learning_rate(t, 0, 1000), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(t, 4, 1000), 5e-4);
  EXPECT_DOUBLE_EQ(learning_rate(t, 9, 1000), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(t, 500, 1000), 1e-3);
  EXPECT_EQ(warmup_steps(schedule("constant", 0.05), 1000), 50);  // a share of the steps
  EXPECT_EQ(warmup_steps(schedule("constant", 0.0), 1000), 0);
  EXPECT_DOUBLE_EQ(learning_rate(schedule("constant", 0.0), 0, 1000), 1e-3);
}

TEST(Schedule, DecaysReachTheFloorAtTheLastStep) {
  for (const char* kind : {"cosine", "linear"}) {
    const TrainConfig t = schedule(kind, 10, 0.1);
    EXPECT_DOUBLE_EQ(learning_rate(t, 10, 111), 1e-3) << kind;     // first step after warm-up
    EXPECT_NEAR(learning_rate(t, 110, 111), 1e-4, 1e-15) << kind;  // the last step: lr x min_lr_ratio
    double previous = 1.0;
    for (std::int64_t s = 10; s < 111; ++s) {
      const double lr = learning_rate(t, s, 111);
      EXPECT_LE(lr, previous) << kind << " rose at step " << s;
      previous = lr;
    }
  }
  // Halfway: cosine at the mean of lr and the floor, linear too.
  EXPECT_NEAR(learning_rate(schedule("cosine", 0, 0.0), 50, 101), 5e-4, 1e-12);
  EXPECT_NEAR(learning_rate(schedule("linear", 0, 0.0), 50, 101), 5e-4, 1e-12);
  // A quarter: cosine above linear.
  EXPECT_NEAR(learning_rate(schedule("cosine", 0, 0.0), 25, 101), 1e-3 * 0.5 * (1 + std::cos(M_PI / 4)),
              1e-12);
  EXPECT_NEAR(learning_rate(schedule("linear", 0, 0.0), 25, 101), 7.5e-4, 1e-12);
}

/// Parameters of several sizes (a scalar, a tail shorter than a vector, a
/// block split across threads), their gradients drawn afresh each step, run
/// `steps` steps of make_adamw's optimizer or of LibTorch's AdamW with the
/// same groups; returns parameters, moments and steps, in that order.
std::vector<torch::Tensor> adamw_run(bool fused, int steps, c10::ScalarType dtype, int threads) {
  const int before = at::get_num_threads();
  at::set_num_threads(threads);
  torch::manual_seed(5);
  std::vector<std::pair<std::string, torch::Tensor>> params;
  for (std::int64_t n : {1, 13, 70001})
    params.emplace_back("b" + std::to_string(n), torch::randn({n}, dtype));
  params.emplace_back("w", torch::randn({300, 77}, dtype));
  for (auto& [name, p] : params) p.requires_grad_(true);
  TrainConfig t;
  t.lr = 3e-3;
  t.weight_decay = 0.05;
  t.beta1 = 0.8;
  t.beta2 = 0.95;
  t.eps = 1e-6;
  std::unique_ptr<torch::optim::AdamW> opt = make_adamw(params, t);
  if (!fused) {  // LibTorch's own, the same groups and options
    std::vector<torch::optim::OptimizerParamGroup> groups;
    for (auto& g : opt->param_groups()) groups.emplace_back(g.params(), g.options().clone());
    opt = std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(t.lr));
  }
  for (int s = 0; s < steps; ++s) {
    for (auto& [name, p] : params) p.mutable_grad() = torch::randn_like(p) * (s % 3 + 0.1);
    opt->step();
  }
  std::vector<torch::Tensor> out;
  for (auto& [name, p] : params) {
    auto& st = static_cast<torch::optim::AdamWParamState&>(
        *opt->state().at(c10::guts::to_string(p.unsafeGetTensorImpl())));
    out.push_back(p.detach().clone());
    out.push_back(st.exp_avg().clone());
    out.push_back(st.exp_avg_sq().clone());
    out.push_back(torch::tensor(static_cast<double>(st.step())));
  }
  at::set_num_threads(before);
  return out;
}

TEST(FusedAdamW, FollowsLibTorchsAdamW) {
  const auto want = adamw_run(false, 7, torch::kFloat, 1), got = adamw_run(true, 7, torch::kFloat, 1);
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_TRUE(torch::allclose(got[i], want[i], 1e-5, 1e-6))
        << "tensor " << i << ": max diff " << (got[i] - want[i]).abs().max().item<double>();
  }
  EXPECT_FALSE(torch::allclose(got[0], adamw_run(true, 6, torch::kFloat, 1)[0], 1e-5, 1e-6))
      << "the seventh step changed nothing";
  // Bit for bit the same with two threads (other chunk boundaries, other
  // vector/scalar splits).
  const auto two = adamw_run(true, 7, torch::kFloat, 2);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(torch::equal(two[i], got[i])) << "tensor " << i;
  // Other dtypes take AdamW's own step: equal.
  const auto want64 = adamw_run(false, 3, torch::kDouble, 1), got64 = adamw_run(true, 3, torch::kDouble, 1);
  for (std::size_t i = 0; i < want64.size(); ++i) EXPECT_TRUE(torch::equal(got64[i], want64[i])) << i;
}

}  // namespace
}  // namespace llmrec
