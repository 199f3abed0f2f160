// The user tower (attention ranker) and the bilinear scorer: padding never
// changes a user's vector (values, count and place of padded slots), an
// empty history gives the documented vector and no NaN, the attention equals
// torch.nn.MultiheadAttention on real keys, mean pooling is the average of
// the real items, the causal tower's slots see only their past, and A
// starts as the identity.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "common/error.h"
#include "models/ranker.h"

namespace llmrec {
namespace {

constexpr std::int64_t kDim = 16;
constexpr std::int64_t kHistory = 8;

UserTower make_tower(std::int64_t layers, const std::string& pooling = "attention") {
  torch::manual_seed(7);
  UserTower tower(UserTowerOptions(kDim, kHistory).heads(2).layers(layers).pooling(pooling));
  // Non-trivial LayerNorm and bias parameters, so that a wrong "empty" path
  // or a leak from padding cannot hide behind zeros and ones.
  torch::NoGradGuard no_grad;
  for (auto& p : tower->parameters()) p.add_(torch::randn_like(p) * 0.1);
  tower->eval();
  return tower;
}

/// Places `items` [k, d] into a history of `slots` slots at the slot indices
/// `where` (increasing), every other slot filled with `pad_value`-scaled noise.
std::pair<torch::Tensor, torch::Tensor> place(const torch::Tensor& items, std::int64_t slots,
                                              const std::vector<std::int64_t>& where, double pad_value) {
  torch::Tensor h = torch::randn({1, slots, kDim}) * pad_value;
  torch::Tensor mask = torch::zeros({1, slots}, torch::kBool);
  for (std::size_t i = 0; i < where.size(); ++i) {
    h[0][where[i]] = items[static_cast<std::int64_t>(i)];
    mask[0][where[i]] = true;
  }
  return {h, mask};
}

/// (encoder layers, pooling)
class UserTowerPadding : public ::testing::TestWithParam<std::tuple<int, std::string>> {
 protected:
  UserTower tower() const { return make_tower(std::get<0>(GetParam()), std::get<1>(GetParam())); }
};

TEST_P(UserTowerPadding, OutputIgnoresPaddingValuesCountAndPlace) {
  UserTower tower = this->tower();
  torch::manual_seed(11);
  const torch::Tensor items = torch::randn({3, kDim});

  auto [h0, m0] = place(items, 3, {0, 1, 2}, 0.0);  // no padding at all
  const torch::Tensor u0 = tower(h0, m0);
  ASSERT_TRUE(torch::isfinite(u0).all().item<bool>());

  struct Layout {
    std::int64_t slots;
    std::vector<std::int64_t> where;
  };
  const std::vector<Layout> layouts = {
      {kHistory, {5, 6, 7}},  // right-aligned (the data layer's layout)
      {5, {2, 3, 4}},         // shorter window
      {kHistory, {0, 1, 2}},  // left-aligned
      {6, {0, 3, 5}},         // interleaved
  };
  for (const auto& layout : layouts) {
    for (double garbage : {0.0, 1.0, 1e6}) {
      auto [h, m] = place(items, layout.slots, layout.where, garbage);
      const torch::Tensor u = tower(h, m);
      EXPECT_TRUE(torch::allclose(u, u0, 1e-5, 1e-6))
          << "slots " << layout.slots << " garbage " << garbage << "\n"
          << (u - u0).abs().max();
      // Same layout, other garbage: bit-identical.
      auto [h2, m2] = place(items, layout.slots, layout.where, garbage + 3.0);
      EXPECT_TRUE(torch::equal(tower(h2, m2), u));
    }
  }
}

TEST_P(UserTowerPadding, NanInPaddedSlotsDoesNotLeakIntoOutputOrGradients) {
  UserTower tower = this->tower();
  tower->train();  // dropout is 0: train mode only enables the autograd paths
  torch::manual_seed(3);
  const torch::Tensor items = torch::randn({2, kDim});
  auto [h, m] = place(items, kHistory, {6, 7}, 1.0);
  auto [h_clean, m_clean] = place(items, kHistory, {6, 7}, 0.0);
  h.index_put_({0, 0}, std::numeric_limits<float>::quiet_NaN());
  h.index_put_({0, 3}, std::numeric_limits<float>::infinity());
  h.requires_grad_(true);

  const torch::Tensor u = tower(h, m);
  EXPECT_TRUE(torch::equal(u, tower(h_clean, m_clean)));
  u.sum().backward();
  for (const auto& p : tower->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
  EXPECT_EQ(h.grad().index({0, torch::indexing::Slice(0, 6)}).abs().sum().item<float>(), 0.0f);
  EXPECT_GT(h.grad().index({0, torch::indexing::Slice(6, 8)}).abs().sum().item<float>(), 0.0f);
}

TEST_P(UserTowerPadding, EachUserOfABatchIsComputedAlone) {
  UserTower tower = this->tower();
  torch::manual_seed(5);
  const torch::Tensor h = torch::randn({4, kHistory, kDim});
  torch::Tensor mask = torch::ones({4, kHistory}, torch::kBool);
  mask.index_put_({0, torch::indexing::Slice(0, 5)}, false);  // 3 items
  mask.index_put_({1, torch::indexing::Slice()}, false);      // empty
  mask.index_put_({3, torch::indexing::Slice(0, 7)}, false);  // 1 item
  const torch::Tensor u = tower(h, mask);
  for (std::int64_t b = 0; b < 4; ++b) {
    const torch::Tensor alone = tower(h.slice(0, b, b + 1), mask.slice(0, b, b + 1));
    EXPECT_TRUE(torch::allclose(u.slice(0, b, b + 1), alone, 1e-5, 1e-6)) << "user " << b;
  }
}

TEST_P(UserTowerPadding, EmptyHistoryIsTheLearnedNoHistoryVector) {
  UserTower tower = this->tower();
  tower->train();
  const torch::Tensor h = torch::randn({2, kHistory, kDim}) * 100;
  const torch::Tensor mask = torch::zeros({2, kHistory}, torch::kBool);
  const torch::Tensor u = tower(h, mask);
  ASSERT_TRUE(torch::isfinite(u).all().item<bool>());
  // Pooled vector 0 -> LayerNorm gives its bias -> proj.
  const torch::Tensor expected = torch::matmul(tower->proj->weight, tower->norm->bias) + tower->proj->bias;
  EXPECT_TRUE(torch::allclose(u[0], expected, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(u[1], expected, 1e-5, 1e-6));
  // Zero-length history too.
  const torch::Tensor u_none = tower(torch::zeros({1, 0, kDim}), torch::zeros({1, 0}, torch::kBool));
  EXPECT_TRUE(torch::allclose(u_none[0], expected, 1e-5, 1e-6));

  u.sum().backward();
  for (const auto& p : tower->named_parameters()) {
    if (!p.value().grad().defined()) continue;
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
  EXPECT_GT(tower->norm->bias.grad().abs().sum().item<float>(), 0.0f);
}

INSTANTIATE_TEST_SUITE_P(LayersPooling, UserTowerPadding,
                         ::testing::Combine(::testing::Values(0, 2),
                                            ::testing::Values("attention", "mean", "causal")),
                         [](const ::testing::TestParamInfo<std::tuple<int, std::string>>& info) {
                           return "layers" + std::to_string(std::get<0>(info.param)) + "_" +
                                  std::get<1>(info.param);
                         });

TEST(UserTower, MeanPoolingIsTheAverageOfTheRealItemsInAnyOrder) {
  UserTower tower = make_tower(0, "mean");
  std::vector<std::string> names;
  for (const auto& p : tower->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"norm.weight", "norm.bias", "proj.weight", "proj.bias"}));

  torch::manual_seed(13);
  const torch::Tensor items = torch::randn({3, kDim});
  auto [h, m] = place(items, kHistory, {5, 6, 7}, 1.0);
  const torch::Tensor u = tower(h, m);
  const torch::Tensor expected = tower->proj(tower->norm(items.mean(0, /*keepdim=*/true)));
  EXPECT_TRUE(torch::allclose(u, expected, 1e-5, 1e-6)) << u - expected;
  // Order-blind: the same items in another order and other slots.
  auto [h2, m2] = place(items.index_select(0, torch::tensor({2, 0, 1})), kHistory, {0, 3, 4}, 1.0);
  EXPECT_TRUE(torch::allclose(tower(h2, m2), u, 1e-5, 1e-6));
  // The attention tower does see the order (its positions differ per slot).
  UserTower attention = make_tower(0, "attention");
  EXPECT_FALSE(torch::allclose(attention(h2, m2), attention(h, m), 1e-5, 1e-6));
}

TEST(UserTower, CausalSlotsSeeOnlyTheirPastAndTheLastSlotIsTheUser) {
  // Training reads every slot of one pass; slot t must depend on slots
  // 0..t only (their values; positions count from the window's most
  // recent item, as SASRec's), and inference is the last real slot.
  for (std::int64_t layers : {1, 2}) {
    UserTower tower = make_tower(layers, "causal");
    std::vector<std::string> names;
    for (const auto& p : tower->named_parameters()) names.push_back(p.key());
    EXPECT_EQ(names.front(), "positions");
    EXPECT_EQ(std::count(names.begin(), names.end(), "query"), 0);
    torch::manual_seed(17);
    const torch::Tensor items = torch::randn({5, kDim});
    auto [h, m] = place(items, kHistory, {3, 4, 5, 6, 7}, 1.0);  // three padded slots first
    const torch::Tensor all = tower->forward_all(h, m);
    ASSERT_EQ(all.sizes(), (std::vector<std::int64_t>{1, kHistory, kDim}));
    for (std::int64_t t = 3; t < kHistory; ++t) {
      torch::Tensor later = h.clone();
      // Other later items (not a constant shift, which LayerNorm removes).
      for (std::int64_t j = t + 1; j < kHistory; ++j) later[0][j] += torch::randn({kDim});
      const torch::Tensor again = tower->forward_all(later, m);
      EXPECT_TRUE(torch::allclose(again.slice(1, 0, t + 1), all.slice(1, 0, t + 1), 1e-6, 1e-7))
          << "layers " << layers << " slot " << t;
      if (t + 1 < kHistory) {
        EXPECT_FALSE(torch::allclose(again[0][kHistory - 1], all[0][kHistory - 1], 1e-5, 1e-6));
      }
    }
    EXPECT_TRUE(torch::allclose(tower(h, m)[0], all[0][kHistory - 1], 1e-6, 1e-7));
    // Padding after the last real item: forward() still reads that item's slot.
    auto [h2, m2] = place(items, kHistory, {0, 1, 2, 3, 4}, 1.0);
    EXPECT_TRUE(torch::allclose(tower(h2, m2)[0], tower->forward_all(h2, m2)[0][4], 1e-6, 1e-7));
  }
  EXPECT_THROW(
      make_tower(1, "mean")->forward_all(torch::zeros({1, 2, kDim}), torch::ones({1, 2}, torch::kBool)),
      Error);
}

TEST(UserTower, TimeFeaturesAddToTheirSlotOnlyAndUnknownValuesAddNothing) {
  // Two context features of 3 and 5 values; value 0 (unknown) adds nothing.
  torch::manual_seed(7);
  UserTower tower(
      UserTowerOptions(kDim, kHistory).heads(2).layers(1).pooling("causal").context_sizes({3, 5}));
  tower->eval();
  EXPECT_EQ(tower->context.sizes(), (std::vector<std::int64_t>{8, kDim}));
  EXPECT_EQ(tower->query_context.abs().sum().item<double>(), 0.0);  // starts without effect
  torch::manual_seed(17);
  const torch::Tensor items = torch::randn({5, kDim});
  auto [h, m] = place(items, kHistory, {3, 4, 5, 6, 7}, 1.0);
  const torch::Tensor none = torch::zeros({1, kHistory, 2}, torch::kLong);
  torch::Tensor values = none.clone();
  values[0][5][0] = 2;
  values[0][5][1] = 4;
  const torch::Tensor base = tower->forward_all(h, m, none);
  const torch::Tensor with = tower->forward_all(h, m, values);
  // Slots before 5 do not see slot 5's context; slot 5 and later do.
  EXPECT_TRUE(torch::allclose(with.slice(1, 0, 5), base.slice(1, 0, 5), 1e-6, 1e-7));
  EXPECT_FALSE(torch::allclose(with[0][5], base[0][5], 1e-4, 1e-5));
  EXPECT_FALSE(torch::allclose(with[0][7], base[0][7], 1e-4, 1e-5));
  // The same as adding the two rows (offsets 0 and 3) to slot 5's input by hand.
  {
    torch::NoGradGuard no_grad;
    torch::Tensor by_hand = h.clone();
    by_hand[0][5] += (tower->context[2] + tower->context[3 + 4]) / std::sqrt(static_cast<double>(kDim));
    EXPECT_TRUE(torch::allclose(tower->forward_all(by_hand, m, none), with, 1e-5, 1e-6));
  }
  // A context value in a padded slot changes nothing.
  torch::Tensor padded = none.clone();
  padded[0][1][0] = 1;
  EXPECT_TRUE(torch::allclose(tower->forward_all(h, m, padded), base, 1e-6, 1e-7));
  // Query vectors: the sum of the rows of the values given, zeros for unknown.
  {
    torch::NoGradGuard no_grad;
    tower->query_context.normal_();
  }
  const torch::Tensor q = tower->query_vectors(torch::tensor({{0, 0}, {1, 0}, {1, 2}}, torch::kLong));
  EXPECT_EQ(q[0].abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(torch::allclose(q[1], tower->query_context[1]));
  EXPECT_TRUE(torch::allclose(q[2], tower->query_context[1] + tower->query_context[5]));
  // Values outside their feature's range, or a missing context, are errors.
  EXPECT_THROW(tower->query_vectors(torch::tensor({{3, 0}}, torch::kLong)), Error);
  EXPECT_THROW(tower->query_vectors(torch::tensor({{0, -1}}, torch::kLong)), Error);
  EXPECT_THROW(tower->forward_all(h, m), Error);
  // Without context features the tower has no such parameters and needs no values.
  UserTower plain = make_tower(1, "causal");
  EXPECT_FALSE(plain->context.defined());
  EXPECT_EQ(plain->query_vectors(torch::zeros({2, 0}, torch::kLong)).abs().sum().item<double>(), 0.0);
}

UserTower make_profile_tower(std::int64_t layers, const std::string& pooling) {
  torch::manual_seed(7);
  UserTower tower(UserTowerOptions(kDim, kHistory).heads(2).layers(layers).pooling(pooling).profile(true));
  torch::NoGradGuard no_grad;
  for (auto& p : tower->parameters()) p.add_(torch::randn_like(p) * 0.1);
  tower->eval();
  return tower;
}

TEST(UserTower, ProfileIsOneMoreTokenThatEverySlotReadsAndAbsentProfilesChangeNothing) {
  for (const std::string pooling : {"attention", "mean", "causal"}) {
    for (std::int64_t layers : {0, 2}) {
      if (pooling == "causal" && layers == 0) continue;  // a causal tower needs a layer to read anything
      SCOPED_TRACE(pooling + " layers " + std::to_string(layers));
      UserTower tower = make_profile_tower(layers, pooling);
      std::vector<std::string> names;
      for (const auto& p : tower->named_parameters()) names.push_back(p.key());
      EXPECT_EQ(std::count(names.begin(), names.end(), "profile_tag"), 1);
      torch::manual_seed(19);
      const torch::Tensor items = torch::randn({3, kDim});
      auto [h, m] = place(items, kHistory, {5, 6, 7}, 1.0);
      const torch::Tensor profile = torch::randn({1, kDim});
      const torch::Tensor yes = torch::ones({1}, torch::kBool), no = torch::zeros({1}, torch::kBool);
      // A user without a profile: exactly the tower without the option.
      const torch::Tensor plain = tower(h, m);
      EXPECT_TRUE(torch::allclose(tower->forward(h, m, {}, profile * 100, no), plain, 1e-5, 1e-6));
      // With one, the user vector reads it, and another profile gives another vector.
      const torch::Tensor with = tower->forward(h, m, {}, profile, yes);
      EXPECT_FALSE(torch::allclose(with, plain, 1e-4, 1e-5));
      EXPECT_FALSE(torch::allclose(tower->forward(h, m, {}, torch::randn({1, kDim}), yes), with, 1e-4, 1e-5));
      // No history at all: the profile alone makes the vector, the
      // no-history vector without one.
      const torch::Tensor empty = torch::zeros({1, kHistory, kDim});
      const torch::Tensor none = torch::zeros({1, kHistory}, torch::kBool);
      const torch::Tensor expected =
          torch::matmul(tower->proj->weight, tower->norm->bias) + tower->proj->bias;
      EXPECT_TRUE(torch::allclose(tower->forward(empty, none, {}, profile, no)[0], expected, 1e-5, 1e-6));
      EXPECT_FALSE(torch::allclose(tower->forward(empty, none, {}, profile, yes)[0], expected, 1e-4, 1e-5));
      EXPECT_FALSE(torch::allclose(tower->forward(empty, none, {}, profile, yes),
                                   tower->forward(empty, none, {}, torch::randn({1, kDim}), yes), 1e-4,
                                   1e-5));
      if (pooling != "causal") continue;
      // Every slot sees the profile (the causal mask included), the user is
      // the last slot, and forward_all keeps one output per history slot.
      const torch::Tensor all = tower->forward_all(h, m, {}, profile, yes);
      ASSERT_EQ(all.sizes(), (std::vector<std::int64_t>{1, kHistory, kDim}));
      EXPECT_TRUE(torch::allclose(all[0][kHistory - 1], with[0], 1e-6, 1e-7));
      const torch::Tensor all_plain = tower->forward_all(h, m);
      EXPECT_TRUE(torch::allclose(tower->forward_all(h, m, {}, profile, no), all_plain, 1e-5, 1e-6));
      for (std::int64_t t = 5; t < kHistory; ++t)
        EXPECT_FALSE(torch::allclose(all[0][t], all_plain[0][t], 1e-4, 1e-5)) << "slot " << t;
    }
  }
  UserTower without = make_tower(1, "attention");
  EXPECT_THROW(without->forward(torch::zeros({1, 2, kDim}), torch::ones({1, 2}, torch::kBool), {},
                                torch::zeros({1, kDim}), torch::ones({1}, torch::kBool)),
               Error);
  UserTower tower = make_profile_tower(1, "attention");
  EXPECT_THROW(tower->forward(torch::zeros({2, 2, kDim}), torch::ones({2, 2}, torch::kBool), {},
                              torch::zeros({1, kDim}), torch::ones({1}, torch::kBool)),
               Error);
}

TEST(UserTower, UnknownPoolingIsAnError) {
  EXPECT_THROW(UserTower(UserTowerOptions(kDim, kHistory).pooling("max")), Error);
  EXPECT_THROW(UserTower(UserTowerOptions(kDim, kHistory).activation("tanh")), Error);
}

TEST(UserTower, SasrecHeadIsNormOfTheLastSlotWithReluAndNoTrainedProjection) {
  // projection false: u = norm(h) exactly, proj neither trained nor changed;
  // activation relu: the feed-forward layers use ReLU (another output than GELU).
  torch::manual_seed(5);
  UserTower gelu(UserTowerOptions(kDim, kHistory).heads(2).layers(1).pooling("causal"));
  torch::manual_seed(5);
  UserTower relu(UserTowerOptions(kDim, kHistory)
                     .heads(2)
                     .layers(1)
                     .pooling("causal")
                     .activation("relu")
                     .projection(false));
  gelu->eval();
  relu->eval();
  EXPECT_FALSE(relu->proj->weight.requires_grad());
  EXPECT_FALSE(relu->proj->bias.requires_grad());
  EXPECT_TRUE(gelu->proj->weight.requires_grad());
  std::int64_t trainable_gelu = 0, trainable_relu = 0;
  for (const auto& p : gelu->parameters()) trainable_gelu += p.requires_grad() ? p.numel() : 0;
  for (const auto& p : relu->parameters()) trainable_relu += p.requires_grad() ? p.numel() : 0;
  EXPECT_EQ(trainable_gelu - trainable_relu, kDim * kDim + kDim);
  torch::manual_seed(17);
  auto [h, m] = place(torch::randn({5, kDim}), kHistory, {3, 4, 5, 6, 7}, 1.0);
  // norm(h_T) by hand: the layers' output at the last slot, then LayerNorm.
  torch::Tensor x = relu->positions.index_select(0, relu->position_rows(m)[0]).unsqueeze(0) +
                    h * std::sqrt(static_cast<double>(kDim));
  x = x.masked_fill(~m.unsqueeze(-1), 0.0);
  for (const auto& layer : *relu->layers) x = layer->as<HistoryEncoderLayer>()->forward(x, m);
  const torch::Tensor want = relu->norm(x[0][kHistory - 1]);
  EXPECT_TRUE(torch::allclose(relu(h, m)[0], want, 1e-5, 1e-6));
  // The same weights but ReLU: another output.
  torch::NoGradGuard no_grad;
  for (const auto& p : gelu->named_parameters()) {
    if (p.key().rfind("layers", 0) == 0 || p.key() == "positions" || p.key().rfind("norm", 0) == 0) {
      p.value().copy_(relu->named_parameters()[p.key()]);
    }
  }
  gelu->proj->weight.copy_(torch::eye(kDim));
  gelu->proj->bias.zero_();
  EXPECT_FALSE(torch::allclose(gelu(h, m), relu(h, m), 1e-4, 1e-5));
}

TEST(UserTower, PositionRowsCountRecencyAmongRealItems) {
  UserTower tower(UserTowerOptions(kDim, 5));
  const torch::Tensor mask =
      torch::tensor({0, 0, 1, 1, 1, /**/ 1, 0, 1, 0, 1, /**/ 1, 1, 1, 1, 1}, torch::kBool).view({3, 5});
  const torch::Tensor rows = tower->position_rows(mask);
  const torch::Tensor expected =
      torch::tensor({4, 4, 2, 3, 4, /**/ 2, 4, 3, 4, 4, /**/ 0, 1, 2, 3, 4}, torch::kLong).view({3, 5});
  EXPECT_TRUE(torch::equal(rows, expected)) << rows;
}

TEST(UserTower, FullHistoryMatchesTorchMultiheadAttentionPooling) {
  // The peer: h = item[hist] + hist_pos; nn.MultiheadAttention(q, h, h,
  // key_padding_mask) -> LayerNorm -> Linear. With every slot real the
  // position rows are the slot indices, as in the peer.
  torch::manual_seed(21);
  UserTower tower(UserTowerOptions(kDim, kHistory).heads(2));
  tower->eval();
  torch::nn::MultiheadAttention mha(torch::nn::MultiheadAttentionOptions(kDim, 2));
  {
    torch::NoGradGuard no_grad;
    mha->in_proj_weight.copy_(tower->attn->in_proj_weight);
    mha->in_proj_bias.copy_(tower->attn->in_proj_bias + 0.05);
    tower->attn->in_proj_bias.copy_(mha->in_proj_bias);
    mha->out_proj->weight.copy_(tower->attn->out_proj->weight);
    mha->out_proj->bias.fill_(0.1);
    tower->attn->out_proj->bias.fill_(0.1);
  }
  mha->eval();
  const torch::Tensor items = torch::randn({3, kHistory, kDim});
  torch::Tensor mask = torch::ones({3, kHistory}, torch::kBool);
  mask.index_put_({1, torch::indexing::Slice(0, 4)}, false);  // padded user (right-aligned)

  const torch::Tensor u = tower(items, mask);
  // Reference for the full users (0 and 2): slot t uses position row t.
  const torch::Tensor h = items + tower->positions.unsqueeze(0);
  const torch::Tensor q = tower->query.expand({3, 1, kDim});
  auto ref = std::get<0>(mha(q.transpose(0, 1), h.transpose(0, 1), h.transpose(0, 1),
                             /*key_padding_mask=*/mask.logical_not()));
  const torch::Tensor u_ref = tower->proj(tower->norm(ref.squeeze(0)));
  EXPECT_TRUE(torch::allclose(u[0], u_ref[0], 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(u[2], u_ref[2], 1e-5, 1e-6));
  // The padded user: its 4 real items took rows 4..7, as in the peer.
  EXPECT_TRUE(torch::allclose(u[1], u_ref[1], 1e-5, 1e-6));
}

TEST(UserTower, MoreSlotsThanPositionsIsAnError) {
  UserTower tower(UserTowerOptions(kDim, 4));
  EXPECT_THROW(tower(torch::randn({1, 5, kDim}), torch::ones({1, 5}, torch::kBool)), Error);
  EXPECT_THROW(tower(torch::randn({1, 4, kDim}), torch::ones({1, 4}, torch::kLong)), Error);
}

TEST(UserTower, BenchTinyParameterCountsEqualThePeer) {
  UserTower tower(UserTowerOptions(128, 20).heads(2));
  std::map<std::string, std::int64_t> counts;
  std::int64_t total = 0;
  for (const auto& p : tower->named_parameters()) {
    counts[p.key()] = p.value().numel();
    total += p.value().numel();
  }
  EXPECT_EQ(counts.at("positions"), 2560);
  EXPECT_EQ(counts.at("query"), 128);
  EXPECT_EQ(counts.at("attn.in_proj_weight") + counts.at("attn.in_proj_bias") +
                counts.at("attn.out_proj.weight") + counts.at("attn.out_proj.bias"),
            66048);
  EXPECT_EQ(counts.at("norm.weight") + counts.at("norm.bias"), 256);
  EXPECT_EQ(counts.at("proj.weight") + counts.at("proj.bias"), 16512);
  EXPECT_EQ(total, 2560 + 128 + 66048 + 256 + 16512);
}

TEST(UserTower, CloneCopiesEveryParameter) {
  UserTower tower = make_tower(1);
  auto copy = std::dynamic_pointer_cast<UserTowerImpl>(tower->clone());
  ASSERT_TRUE(copy);
  const torch::Tensor h = torch::randn({2, kHistory, kDim});
  const torch::Tensor mask = torch::ones({2, kHistory}, torch::kBool);
  EXPECT_TRUE(torch::equal(copy->forward(h, mask), tower(h, mask)));
}

TEST(BilinearScorer, DotIsTheFixedIdentity) {
  BilinearScorer dot(BilinearScorerOptions(kDim).learned(false));
  EXPECT_FALSE(dot->weight.requires_grad());
  EXPECT_EQ(dot->parameters().size(), 1u);
  const torch::Tensor l = torch::randn({5, kDim});
  EXPECT_TRUE(torch::equal(dot->item_keys(l), l));
}

TEST(BilinearScorer, StartsAsIdentityAndKeysGiveTheSameScores) {
  BilinearScorer scorer(kDim);
  EXPECT_TRUE(torch::equal(scorer->weight, torch::eye(kDim)));
  const torch::Tensor u = torch::randn({3, kDim});
  const torch::Tensor l = torch::randn({5, kDim});
  EXPECT_TRUE(torch::allclose(scorer(u, l), torch::matmul(u, l.t())));

  {
    torch::NoGradGuard no_grad;
    scorer->weight.copy_(torch::randn({kDim, kDim}));
  }
  const torch::Tensor s = scorer(u, l);
  const torch::Tensor keys = scorer->item_keys(l);
  const auto A = scorer->weight;
  for (std::int64_t b = 0; b < 3; ++b) {
    for (std::int64_t c = 0; c < 5; ++c) {
      const float expected = torch::dot(u[b], torch::mv(A, l[c])).item<float>();  // u^T A l
      EXPECT_NEAR(s[b][c].item<float>(), expected, 1e-3f * (1 + std::abs(expected)));
      EXPECT_NEAR(torch::dot(u[b], keys[c]).item<float>(), expected, 1e-3f * (1 + std::abs(expected)));
    }
  }
}

}  // namespace
}  // namespace llmrec
