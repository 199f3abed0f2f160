// The recommender loss: hand-computed small cases, the false-negative and
// duplicate masks, weights, sampled negatives, logQ correction, temperature,
// and autograd against central finite differences in float64.
#include <ATen/Parallel.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "common/error.h"
#include "models/loss.h"

namespace llmrec {
namespace {

using ::testing::HasSubstr;

torch::Tensor f64(const std::vector<double>& values, const std::vector<std::int64_t>& shape) {
  return torch::tensor(values, torch::kDouble).view(shape);
}
torch::Tensor ids(const std::vector<std::int64_t>& values) {
  return torch::tensor(values, torch::kLong);
}

/// -log(exp(z[pos]) / sum_c exp(z[c])) over the listed logits.
double nll(const std::vector<double>& z, std::size_t pos) {
  double denom = 0;
  for (double v : z) denom += std::exp(v);
  return -(z[pos] - std::log(denom));
}

// u = [[1, 0], [0, 1]]; keys = [[1, 0], [0, 2], [1, 1]]; ids 10, 11, 12.
// Scores: user 0 -> [1, 0, 1]; user 1 -> [0, 2, 1].
class RecommenderLoss : public ::testing::Test {
 protected:
  const torch::Tensor users_ = f64({1, 0, 0, 1}, {2, 2});
  const torch::Tensor keys_ = f64({1, 0, 0, 2, 1, 1}, {3, 2});
};

TEST_F(RecommenderLoss, HandComputedMeanOverUsers) {
  auto r = recommender_loss(users_, keys_, ids({10, 11, 12}), ids({10, 12}), {}, LossOptions());
  const double n0 = nll({1, 0, 1}, 0);
  const double n1 = nll({0, 2, 1}, 2);
  EXPECT_NEAR(r.loss.item<double>(), (n0 + n1) / 2, 1e-12);
  EXPECT_NEAR(r.nll[0].item<double>(), n0, 1e-12);
  EXPECT_NEAR(r.nll[1].item<double>(), n1, 1e-12);
  EXPECT_TRUE(torch::equal(r.positive_col, ids({0, 2})));
}

TEST_F(RecommenderLoss, EqualsCrossEntropyWithoutDuplicates) {
  // The peer: F.cross_entropy(u A l^T, label) with unique candidates, weight 1.
  torch::manual_seed(1);
  const torch::Tensor u = torch::randn({6, 8});
  const torch::Tensor keys = torch::randn({4, 8});
  const torch::Tensor cand = ids({7, 3, 9, 1});
  const torch::Tensor target = ids({3, 3, 1, 9, 7, 1});
  const torch::Tensor label = ids({1, 1, 3, 2, 0, 3});
  auto r = recommender_loss(u, keys, cand, target, torch::ones({6}), LossOptions());
  const torch::Tensor expected = torch::nn::functional::cross_entropy(torch::matmul(u, keys.t()), label);
  EXPECT_NEAR(r.loss.item<float>(), expected.item<float>(), 1e-5);
}

TEST_F(RecommenderLoss, WeightsScaleEachTermAndNormaliseByUsers) {
  auto r =
      recommender_loss(users_, keys_, ids({10, 11, 12}), ids({10, 12}), f64({2.0, 0.5}, {2}), LossOptions());
  const double expected = (2.0 * nll({1, 0, 1}, 0) + 0.5 * nll({0, 2, 1}, 2)) / 2;  // 1/B, not 1/sum(w)
  EXPECT_NEAR(r.loss.item<double>(), expected, 1e-12);
  auto zero =
      recommender_loss(users_, keys_, ids({10, 11, 12}), ids({10, 12}), f64({0.0, 0.0}, {2}), LossOptions());
  EXPECT_EQ(zero.loss.item<double>(), 0.0);
}

TEST_F(RecommenderLoss, TargetDuplicateIsNeverANegative) {
  // Item 10 appears twice (columns 0 and 2, different keys, e.g. from two
  // ranks): for user 0 (target 10) column 2 is not a negative, for user 1
  // (target 11) item 10 counts once (column 0).
  auto r = recommender_loss(users_, keys_, ids({10, 11, 10}), ids({10, 11}), {}, LossOptions());
  EXPECT_NEAR(r.nll[0].item<double>(), nll({1, 0}, 0), 1e-12);
  EXPECT_NEAR(r.nll[1].item<double>(), nll({0, 2}, 1), 1e-12);
  EXPECT_TRUE(
      torch::equal(candidate_first_occurrence(ids({10, 11, 10})), torch::tensor({1, 1, 0}, torch::kBool)));

  // The positive is the first column holding the target.
  EXPECT_TRUE(
      torch::equal(candidate_positive_columns(ids({11, 10, 10, 11}), ids({10, 11, 10})), ids({1, 0, 1})));
  // The masked column gets no gradient.
  torch::Tensor keys = keys_.clone().requires_grad_(true);
  recommender_loss(users_, keys, ids({10, 11, 10}), ids({10, 11}), {}, LossOptions()).loss.backward();
  EXPECT_EQ(keys.grad()[2].abs().sum().item<double>(), 0.0);
  EXPECT_GT(keys.grad()[0].abs().sum().item<double>(), 0.0);
}

TEST_F(RecommenderLoss, SampledNegativesAreExtraCandidates) {
  // In-batch 10, 11, 12 plus sampled 13 (key [2, 0]), 10 (a sampled copy
  // of user 0's target: masked), 14 (key [0, -1]).
  const torch::Tensor keys = torch::cat({keys_, f64({2, 0, 5, 5, 0, -1}, {3, 2})});
  auto r = recommender_loss(users_, keys, ids({10, 11, 12, 13, 10, 14}), ids({10, 12}), {}, LossOptions());
  const double n0 = nll({1, 0, 1, 2, 0}, 0);
  const double n1 = nll({0, 2, 1, 0, -1}, 2);
  EXPECT_NEAR(r.loss.item<double>(), (n0 + n1) / 2, 1e-12);
  auto in_batch = recommender_loss(users_, keys_, ids({10, 11, 12}), ids({10, 12}), {}, LossOptions());
  EXPECT_GT(r.loss.item<double>(), in_batch.loss.item<double>());
}

TEST_F(RecommenderLoss, LogQCorrectionSubtractsLogQFromEveryCandidate) {
  const torch::Tensor log_q = f64({-1.0, -2.0, -0.5}, {3});
  auto r = recommender_loss(users_, keys_, ids({10, 11, 12}), ids({10, 12}), {},
                            LossOptions().logq_correction(true), log_q);
  const double n0 = nll({1 + 1.0, 0 + 2.0, 1 + 0.5}, 0);
  const double n1 = nll({0 + 1.0, 2 + 2.0, 1 + 0.5}, 2);
  EXPECT_NEAR(r.loss.item<double>(), (n0 + n1) / 2, 1e-12);
  // Without the flag log_q is ignored; with it, it is required.
  auto plain = recommender_loss(users_, keys_, ids({10, 11, 12}), ids({10, 12}), {}, LossOptions(), log_q);
  EXPECT_NEAR(plain.loss.item<double>(), (nll({1, 0, 1}, 0) + nll({0, 2, 1}, 2)) / 2, 1e-12);
  EXPECT_THROW(recommender_loss(users_, keys_, ids({10, 11, 12}), ids({10, 12}), {},
                                LossOptions().logq_correction(true)),
               Error);
}

TEST_F(RecommenderLoss, TemperatureDividesScoresBeforeLogQ) {
  const torch::Tensor log_q = f64({-1.0, -2.0, -0.5}, {3});
  auto r = recommender_loss(users_, keys_, ids({10, 11, 12}), ids({10, 12}), {},
                            LossOptions().temperature(0.5).logq_correction(true), log_q);
  const double n0 = nll({2 + 1.0, 0 + 2.0, 2 + 0.5}, 0);
  const double n1 = nll({0 + 1.0, 4 + 2.0, 2 + 0.5}, 2);
  EXPECT_NEAR(r.loss.item<double>(), (n0 + n1) / 2, 1e-12);
  EXPECT_THROW(
      recommender_loss(users_, keys_, ids({10, 11, 12}), ids({10, 12}), {}, LossOptions().temperature(0.0)),
      Error);
}

TEST_F(RecommenderLoss, MissingTargetNamesTheItem) {
  try {
    recommender_loss(users_, keys_, ids({10, 11, 12}), ids({10, 42}), {}, LossOptions());
    FAIL() << "expected llmrec::Error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("target item id 42"));
  }
  EXPECT_THROW(recommender_loss(users_, keys_, ids({10, 11}), ids({10, 11}), {}, LossOptions()), Error);
  EXPECT_THROW(recommender_loss(users_, keys_, ids({10, 11, 12}), ids({10}), {}, LossOptions()), Error);
}

TEST_F(RecommenderLoss, EmptyBatchIsZero) {
  torch::Tensor u = torch::zeros({0, 2}, torch::kDouble).requires_grad_(true);
  auto r = recommender_loss(u, keys_, ids({10, 11, 12}), ids({}), {}, LossOptions());
  EXPECT_EQ(r.loss.item<double>(), 0.0);
  r.loss.backward();
}

TEST_F(RecommenderLoss, GradientsMatchFiniteDifferences) {
  torch::manual_seed(5);
  const torch::Tensor u0 = torch::randn({4, 3}, torch::kDouble);
  const torch::Tensor k0 = torch::randn({6, 3}, torch::kDouble);
  const torch::Tensor cand = ids({5, 8, 2, 8, 9, 5});  // duplicates of 5 and 8
  const torch::Tensor target = ids({8, 5, 9, 8});
  const torch::Tensor w = torch::rand({4}, torch::kDouble) + 0.5;
  const torch::Tensor log_q = torch::randn({6}, torch::kDouble);
  const LossOptions opts = LossOptions().temperature(0.7).logq_correction(true);

  auto loss_at = [&](const torch::Tensor& u, const torch::Tensor& k) {
    return recommender_loss(u, k, cand, target, w, opts, log_q).loss;
  };
  torch::Tensor u = u0.clone().requires_grad_(true);
  torch::Tensor k = k0.clone().requires_grad_(true);
  loss_at(u, k).backward();

  const double eps = 1e-6;
  auto check = [&](const torch::Tensor& base, const torch::Tensor& grad, bool is_user) {
    auto flat = base.view({-1});
    for (std::int64_t i = 0; i < flat.numel(); ++i) {
      torch::Tensor plus = base.clone();
      torch::Tensor minus = base.clone();
      plus.view({-1})[i] += eps;
      minus.view({-1})[i] -= eps;
      const double fd = ((is_user ? loss_at(plus, k0) : loss_at(u0, plus)) -
                         (is_user ? loss_at(minus, k0) : loss_at(u0, minus)))
                            .item<double>() /
                        (2 * eps);
      EXPECT_NEAR(grad.view({-1})[i].item<double>(), fd, 1e-7) << (is_user ? "u" : "k") << " " << i;
    }
  };
  check(u0, u.grad(), true);
  check(k0, k.grad(), false);
  // Columns 3 and 5 are duplicates: no gradient at all.
  EXPECT_EQ(k.grad()[3].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(k.grad()[5].abs().sum().item<double>(), 0.0);
}

TEST(LinearCrossEntropySum, EqualsCrossEntropyOfTheLinearLayerWithItsGradients) {
  // Repeated targets, a row far from zero (the max is subtracted), an
  // upstream gradient other than 1; float64 and float32.
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    torch::manual_seed(21);
    const auto o = torch::TensorOptions().dtype(dtype);
    const torch::Tensor x0 = torch::randn({6, 5}, o), w0 = torch::randn({11, 5}, o),
                        b0 = torch::randn({11}, o);
    x0[2] *= 40;
    const torch::Tensor target = torch::tensor({3, 0, 10, 3, 7, 3}, torch::kLong);
    auto run = [&](bool fused) {
      torch::Tensor x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true),
                    b = b0.clone().requires_grad_(true);
      torch::Tensor loss = fused
                               ? linear_cross_entropy_sum(x, w, b, target)
                               : torch::nn::functional::cross_entropy(
                                     torch::nn::functional::linear(x, w, b), target,
                                     torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
      (loss * 2.5).backward();
      return std::vector<torch::Tensor>{loss.detach(), x.grad(), w.grad(), b.grad()};
    };
    const auto want = run(false), got = run(true);
    const double tol = dtype == torch::kDouble ? 1e-12 : 1e-4;
    const char* names[] = {"loss", "d x", "d weight", "d bias"};
    for (std::size_t i = 0; i < want.size(); ++i) {
      ASSERT_TRUE(got[i].defined()) << names[i];
      EXPECT_TRUE(torch::allclose(got[i], want[i], tol, tol))
          << names[i] << ": max diff " << (got[i] - want[i]).abs().max().item<double>();
    }
    EXPECT_GT(want[0].item<double>(), 0.0);
  }
  // A vocabulary of vector width and more (the float32 CPU kernel's vector
  // body and scalar tail; rows over two threads); two losses alive at once.
  {
    at::set_num_threads(2);
    torch::manual_seed(22);
    const torch::Tensor x0 = torch::randn({37, 8}) * 3, w0 = torch::randn({1003, 8}),
                        b0 = torch::randn({1003});
    const torch::Tensor target = torch::randint(0, 1003, {37}, torch::kLong);
    auto grads = [&](bool fused, bool twice) {
      torch::Tensor x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true),
                    b = b0.clone().requires_grad_(true);
      auto one = [&](const torch::Tensor& xs) {
        return fused ? linear_cross_entropy_sum(xs, w, b, target)
                     : torch::nn::functional::cross_entropy(
                           torch::nn::functional::linear(xs, w, b), target,
                           torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
      };
      torch::Tensor loss = one(x);
      if (twice) loss = loss + one(x * 0.5);
      loss.backward();
      return std::vector<torch::Tensor>{loss.detach(), x.grad(), w.grad(), b.grad()};
    };
    for (bool twice : {false, true}) {
      const auto want = grads(false, twice), got = grads(true, twice);
      for (std::size_t i = 0; i < want.size(); ++i) {
        EXPECT_TRUE(torch::allclose(got[i], want[i], 1e-4, 1e-5))
            << "tensor " << i << (twice ? ", two losses" : "") << ": max diff "
            << (got[i] - want[i]).abs().max().item<double>();
      }
    }
    at::set_num_threads(1);
    // A NaN logit makes the loss NaN, as cross_entropy does.
    torch::Tensor xn = x0.clone();
    xn[3][1] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_TRUE(std::isnan(linear_cross_entropy_sum(xn, w0, b0, target).item<double>()));
  }
  // No rows: a zero loss, zero gradients.
  torch::Tensor w = torch::randn({4, 3}).requires_grad_(true);
  torch::Tensor none =
      linear_cross_entropy_sum(torch::zeros({0, 3}), w, torch::zeros({4}), torch::zeros({0}, torch::kLong));
  EXPECT_EQ(none.item<double>(), 0.0);
  none.backward();
  EXPECT_EQ(w.grad().abs().sum().item<double>(), 0.0);
  // Shapes are checked by name.
  try {
    linear_cross_entropy_sum(torch::zeros({2, 3}), w, torch::zeros({5}), torch::zeros({2}, torch::kLong));
    FAIL() << "a bias of the wrong size was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("bias must be [V = 4]"));
  }
  try {
    linear_cross_entropy_sum(torch::zeros({2, 3}), w, torch::zeros({4}), torch::tensor({1, 4}, torch::kLong));
    FAIL() << "a target past the vocabulary was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("targets must lie in [0, 4), got [1, 4]"));
  }
}

}  // namespace
}  // namespace llmrec
