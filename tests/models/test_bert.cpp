// BertModel without goldens: HF parameter names and initialisation, mask
// forms, padding that cannot leak into real tokens, float32/float64, dropout
// in train mode only, input validation, clone().
#include <ATen/Parallel.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "models/batched_matmul.h"
#include "models/bert.h"

namespace llmrec {
namespace {

using ::testing::HasSubstr;

BertConfig small_config() {
  BertConfig c;
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 24;
  c.max_position_embeddings = 12;
  c.type_vocab_size = 2;
  c.hidden_dropout_prob = 0.1;
  c.attention_probs_dropout_prob = 0.1;
  return c;
}

/// A model with noisy LayerNorm and biases, so that nothing hides behind 1/0.
BertModel noisy_model(const BertConfig& config, c10::ScalarType dtype = torch::kDouble) {
  torch::manual_seed(11);
  BertModel model(config);
  model->to(dtype);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);
  model->eval();
  return model;
}

/// noisy_model of small_config() with `layers` layers.
BertModel model_with_layers(std::int64_t layers) {
  BertConfig config = small_config();
  config.num_hidden_layers = layers;
  return noisy_model(config);
}

std::string error_of(BertModel& model, const torch::Tensor& ids, const torch::Tensor& mask,
                     const torch::Tensor& types = {}) {
  try {
    model->forward(ids, mask, types);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Bert, ParameterNamesAndShapesAreHfs) {
  BertModel model(small_config());
  std::map<std::string, std::vector<std::int64_t>> got;
  for (const auto& p : model->named_parameters()) got[p.key()] = p.value().sizes().vec();
  std::map<std::string, std::vector<std::int64_t>> want = {
      {"embeddings.word_embeddings.weight", {50, 16}},
      {"embeddings.position_embeddings.weight", {12, 16}},
      {"embeddings.token_type_embeddings.weight", {2, 16}},
      {"embeddings.LayerNorm.weight", {16}},
      {"embeddings.LayerNorm.bias", {16}},
      {"pooler.dense.weight", {16, 16}},
      {"pooler.dense.bias", {16}},
  };
  for (int l = 0; l < 2; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    for (const char* n : {"query", "key", "value"}) {
      want[p + "attention.self." + n + ".weight"] = {16, 16};
      want[p + "attention.self." + n + ".bias"] = {16};
    }
    want[p + "attention.output.dense.weight"] = {16, 16};
    want[p + "attention.output.dense.bias"] = {16};
    want[p + "attention.output.LayerNorm.weight"] = {16};
    want[p + "attention.output.LayerNorm.bias"] = {16};
    want[p + "intermediate.dense.weight"] = {24, 16};
    want[p + "intermediate.dense.bias"] = {24};
    want[p + "output.dense.weight"] = {16, 24};
    want[p + "output.dense.bias"] = {16};
    want[p + "output.LayerNorm.weight"] = {16};
    want[p + "output.LayerNorm.bias"] = {16};
  }
  EXPECT_EQ(got, want);
  EXPECT_TRUE(model->buffers().empty());

  BertModel bare(small_config(), /*add_pooler=*/false);
  for (const auto& p : bare->named_parameters())
    EXPECT_EQ(p.key().rfind("pooler.", 0), std::string::npos) << p.key();
  EXPECT_FALSE(bare->has_pooler());
}

TEST(Bert, InitialisationFollowsHf) {
  BertConfig c = small_config();
  c.vocab_size = 2000;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.initializer_range = 0.05;
  c.pad_token_id = 3;
  torch::manual_seed(1);
  BertModel model(c);
  for (const auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    const torch::Tensor& t = p.value();
    SCOPED_TRACE(name);
    if (name.find("LayerNorm.weight") != std::string::npos) {
      EXPECT_TRUE(torch::equal(t, torch::ones_like(t)));
    } else if (name.find("LayerNorm.bias") != std::string::npos || name.find(".bias") != std::string::npos) {
      EXPECT_TRUE(torch::equal(t, torch::zeros_like(t)));
    } else if (t.numel() >= 4096) {
      EXPECT_NEAR(t.std().item<double>(), 0.05, 0.005);
      EXPECT_NEAR(t.mean().item<double>(), 0.0, 0.005);
    }
  }
  torch::Tensor pad_row = model->embeddings->word_embeddings->weight[3];
  EXPECT_TRUE(torch::equal(pad_row, torch::zeros_like(pad_row)));
}

TEST(Bert, MaskFormsAgree) {
  BertModel model = noisy_model(small_config());
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::tensor({{2, 7, 9, 3, 0}, {2, 4, 0, 0, 0}});
  torch::Tensor mask = torch::tensor({{1, 1, 1, 1, 0}, {1, 1, 0, 0, 0}});
  BertOutput a = model(ids, mask);
  BertOutput b = model(ids.to(torch::kInt), mask.to(torch::kBool));
  BertOutput c = model(ids, mask.to(torch::kFloat), torch::zeros_like(ids));
  EXPECT_TRUE(torch::equal(a.last_hidden_state, b.last_hidden_state));
  EXPECT_TRUE(torch::equal(a.last_hidden_state, c.last_hidden_state));
  EXPECT_TRUE(torch::equal(a.pooler_output, b.pooler_output));
  // No mask = every token attends everywhere.
  BertOutput none = model(ids, torch::Tensor());
  BertOutput ones = model(ids, torch::ones_like(ids));
  EXPECT_TRUE(torch::equal(none.last_hidden_state, ones.last_hidden_state));
  EXPECT_FALSE(torch::allclose(none.last_hidden_state, a.last_hidden_state));
  // Token types matter.
  BertOutput typed = model(ids, mask, torch::ones_like(ids));
  EXPECT_FALSE(torch::allclose(typed.last_hidden_state, a.last_hidden_state));
}

TEST(Bert, PaddingNeverReachesRealTokens) {
  BertModel model = noisy_model(small_config());
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::tensor({{2, 7, 9, 3}});
  BertOutput plain = model(ids, torch::ones_like(ids));
  // Same sequence padded with arbitrary ids, masked out.
  torch::Tensor padded = torch::tensor({{2, 7, 9, 3, 41, 17, 5}});
  torch::Tensor mask = torch::tensor({{1, 1, 1, 1, 0, 0, 0}});
  BertOutput out = model(padded, mask);
  EXPECT_TRUE(torch::allclose(out.last_hidden_state.slice(1, 0, 4), plain.last_hidden_state, 0, 1e-13));
  EXPECT_TRUE(torch::allclose(out.pooler_output, plain.pooler_output, 0, 1e-13));
  EXPECT_FALSE(torch::isnan(out.last_hidden_state).any().item<bool>());
  // A sequence that is all padding gives finite numbers (uniform attention, as HF).
  BertOutput empty = model(padded, torch::zeros_like(padded));
  EXPECT_TRUE(torch::isfinite(empty.last_hidden_state).all().item<bool>());
}

/// Right-padded rows of the given lengths (arbitrary ids in the padding)
/// with a hole in row 8's mask; random token types.
struct RaggedRows {
  torch::Tensor ids, mask, types;
};

RaggedRows ragged_rows(const std::vector<std::int64_t>& lengths, std::int64_t L, std::uint64_t seed) {
  torch::manual_seed(seed);
  const auto n = static_cast<std::int64_t>(lengths.size());
  RaggedRows r;
  r.ids = torch::randint(1, 50, {n, L}, torch::kLong);
  r.mask = (torch::arange(L).unsqueeze(0) < torch::tensor(lengths).unsqueeze(1)).to(torch::kLong);
  r.mask[8][2] = 0;  // a hole inside a row
  r.types = torch::randint(0, 2, {n, L}, torch::kLong);
  return r;
}

/// `fast()` equals `reference()` ([N, H] each) in value and in the gradient
/// of every parameter of `model`.
void expect_same_with_gradients(BertModel& model, const std::function<torch::Tensor()>& reference,
                                const std::function<torch::Tensor()>& fast, const std::string& what) {
  const torch::Tensor want = reference(), got = fast();
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_TRUE(torch::allclose(got, want, 0, 1e-12))
      << what << ": max diff " << (got - want).abs().max().item<double>();
  auto g_want =
      torch::autograd::grad({reference().pow(2).sum()}, model->parameters(), {}, false, false, true);
  auto g_got = torch::autograd::grad({fast().pow(2).sum()}, model->parameters(), {}, false, false, true);
  ASSERT_EQ(g_want.size(), g_got.size());
  for (std::size_t i = 0; i < g_want.size(); ++i) {
    if (!g_want[i].defined()) {
      EXPECT_TRUE(!g_got[i].defined() || g_got[i].abs().max().item<double>() == 0)
          << what << ", parameter " << i;
      continue;
    }
    ASSERT_TRUE(g_got[i].defined()) << what << ", parameter " << i;
    EXPECT_TRUE(torch::allclose(g_got[i], g_want[i], 0, 1e-11)) << what << ", parameter " << i;
  }
}

TEST(Bert, FirstTokenEqualsTheFullForwardWithItsGradients) {
  // Rows of many lengths, all shorter than L (packed and cut by
  // first_token); 0 layers (the embeddings) to 3.
  for (std::int64_t layers : {0, 1, 2, 3}) {
    BertModel model = model_with_layers(layers);
    const RaggedRows r = ragged_rows({1, 2, 3, 5, 7, 8, 10, 9, 6}, 12, 3);
    expect_same_with_gradients(
        model, [&] { return model(r.ids, r.mask, r.types).last_hidden_state.select(1, 0); },
        [&] { return model->first_token(r.ids, r.mask, r.types); }, std::to_string(layers) + " layers");
  }
  // A row without real tokens attends over all of its padding, as forward.
  BertModel model = model_with_layers(2);
  const RaggedRows r = ragged_rows({1, 2, 3, 5, 7, 8, 10, 9, 6, 0}, 12, 6);
  expect_same_with_gradients(
      model, [&] { return model(r.ids, r.mask, r.types).last_hidden_state.select(1, 0); },
      [&] { return model->first_token(r.ids, r.mask, r.types); }, "a row without real tokens");
  EXPECT_EQ(model->first_token(r.ids.narrow(0, 0, 0), r.mask.narrow(0, 0, 0)).sizes(),
            (std::vector<std::int64_t>{0, 16}));
  try {
    model->first_token(r.ids.narrow(1, 0, 0), r.mask.narrow(1, 0, 0));
    FAIL() << "first_token of empty sequences was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("first_token needs sequences of length >= 1"));
  }
}

TEST(Bert, MeanPooledEqualsTheMaskedMeanOfTheFullForwardWithItsGradients) {
  // The same kind of rows and one without real tokens (zeros); 0 layers
  // (embeddings alone: a bag of word pieces) to 2.
  for (std::int64_t layers : {0, 1, 2}) {
    BertModel model = model_with_layers(layers);
    const RaggedRows r = ragged_rows({1, 2, 3, 5, 7, 8, 10, 9, 6, 0}, 12, 4);
    auto masked_mean = [&] {
      const torch::Tensor h = model(r.ids, r.mask, r.types).last_hidden_state;
      const torch::Tensor m = r.mask.to(h.scalar_type()).unsqueeze(-1);
      return (h * m).sum(1) / m.sum(1).clamp_min(1.0);
    };
    expect_same_with_gradients(
        model, masked_mean, [&] { return model->mean_pooled(r.ids, r.mask, r.types); },
        std::to_string(layers) + " layers");
    const torch::Tensor empty_row = model->mean_pooled(r.ids, r.mask, r.types)[9];
    EXPECT_TRUE(torch::equal(empty_row, torch::zeros_like(empty_row)));
  }
}

TEST(Bert, HiddenAtEqualsTheFullForwardAtThosePositionsWithItsGradients) {
  // Positions in any order, repeated, several in one row, none in others,
  // padding included; 1 to 3 layers (the last runs at the positions alone,
  // the others on the real tokens and the asked ones).
  for (std::int64_t layers : {1, 2, 3}) {
    BertModel model = model_with_layers(layers);
    // Row 9 has no real token (its attention spreads over its padding).
    const RaggedRows r = ragged_rows({1, 2, 3, 5, 7, 8, 11, 12, 6, 0}, 12, 5);
    const torch::Tensor positions =
        torch::tensor({40, 3, 100, 41, 0, 40, 107, 13, 50, 49, 96, 113}, torch::kLong);
    expect_same_with_gradients(
        model,
        [&] {
          return model(r.ids, r.mask, r.types).last_hidden_state.reshape({-1, 16}).index_select(0, positions);
        },
        [&] { return model->hidden_at(r.ids, r.mask, positions, r.types); },
        std::to_string(layers) + " layers");
  }
  BertModel model = noisy_model(small_config());
  const RaggedRows r = ragged_rows({1, 2, 3, 5, 7, 8, 11, 12, 6}, 12, 5);
  EXPECT_EQ(model->hidden_at(r.ids, r.mask, torch::zeros({0}, torch::kLong)).sizes(),
            (std::vector<std::int64_t>{0, 16}));
  try {
    model->hidden_at(r.ids, r.mask, torch::tensor({3, 108}, torch::kLong));
    FAIL() << "a position past N x L was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("positions must lie in [0, 108)"));
  }
}

TEST(Bert, Float32AndFloat64Agree) {
  BertModel f64 = noisy_model(small_config(), torch::kDouble);
  BertModel f32(std::dynamic_pointer_cast<BertModelImpl>(f64->clone()));
  f32->to(torch::kFloat);
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::tensor({{2, 7, 9, 3, 0}, {2, 4, 5, 0, 0}});
  torch::Tensor mask = torch::tensor({{1, 1, 1, 1, 0}, {1, 1, 1, 0, 0}});
  BertOutput a = f64(ids, mask);
  BertOutput b = f32(ids, mask);
  EXPECT_EQ(a.last_hidden_state.scalar_type(), torch::kDouble);
  EXPECT_EQ(b.last_hidden_state.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::allclose(a.last_hidden_state, b.last_hidden_state.to(torch::kDouble), 0, 1e-5));
  EXPECT_TRUE(torch::allclose(a.pooler_output, b.pooler_output.to(torch::kDouble), 0, 1e-5));
}

TEST(Bert, DropoutOnlyInTrainMode) {
  BertModel model = noisy_model(small_config());
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::tensor({{2, 7, 9, 3}});
  torch::Tensor mask = torch::ones_like(ids);
  torch::Tensor e1 = model(ids, mask).last_hidden_state;
  torch::Tensor e2 = model(ids, mask).last_hidden_state;
  EXPECT_TRUE(torch::equal(e1, e2));
  model->train();
  torch::Tensor t1 = model(ids, mask).last_hidden_state;
  torch::Tensor t2 = model(ids, mask).last_hidden_state;
  EXPECT_FALSE(torch::allclose(t1, t2));
}

TEST(Bert, InvalidInputsAreNamed) {
  BertModel model = noisy_model(small_config());
  torch::Tensor ids = torch::tensor({{2, 7, 9}});
  torch::Tensor mask = torch::ones_like(ids);
  EXPECT_THAT(error_of(model, torch::tensor({2, 7, 9}), mask), HasSubstr("input_ids must be [N, L]"));
  EXPECT_THAT(error_of(model, torch::tensor({{2, 50, 9}}), mask),
              HasSubstr("input_ids has values in [2, 50]"));
  EXPECT_THAT(error_of(model, torch::tensor({{2, -1, 9}}), mask), HasSubstr("outside [0, 50)"));
  EXPECT_THAT(error_of(model, ids.to(torch::kFloat), mask), HasSubstr("input_ids must be an integer tensor"));
  EXPECT_THAT(error_of(model, ids, torch::ones({1, 4})), HasSubstr("attention_mask has shape [1, 4]"));
  EXPECT_THAT(error_of(model, ids, mask, torch::full_like(ids, 2)), HasSubstr("token_type_ids has values"));
  torch::Tensor long_ids = torch::ones({1, 13}, torch::kLong);
  EXPECT_THAT(error_of(model, long_ids, torch::ones_like(long_ids)),
              HasSubstr("sequence length 13 exceeds max_position_embeddings 12"));
  // Empty batch is fine.
  torch::Tensor none = torch::zeros({0, 3}, torch::kLong);
  EXPECT_EQ(model(none, none).last_hidden_state.sizes(), (std::vector<std::int64_t>{0, 3, 16}));
}

TEST(Bert, InvalidConfigIsAConfigError) {
  BertConfig c = small_config();
  c.hidden_act = "gelu_new";
  EXPECT_THROW(BertModel{c}, ConfigError);
  c = small_config();
  c.num_attention_heads = 5;
  EXPECT_THROW(BertModel{c}, ConfigError);
}

TEST(Bert, CloneIsDeepAndEqual) {
  BertModel model = noisy_model(small_config());
  auto copy = std::dynamic_pointer_cast<BertModelImpl>(model->clone());
  ASSERT_TRUE(copy != nullptr);
  BertModel other(copy);
  other->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::tensor({{2, 7, 9, 3}});
  EXPECT_TRUE(torch::equal(model(ids, torch::ones_like(ids)).last_hidden_state,
                           other(ids, torch::ones_like(ids)).last_hidden_state));
  other->encoder->layer->at<BertLayerImpl>(1).output->dense->weight.add_(1.0);
  EXPECT_FALSE(torch::equal(model(ids, torch::ones_like(ids)).last_hidden_state,
                            other(ids, torch::ones_like(ids)).last_hidden_state));
}

// ---------------------------------------------------------------- batched_matmul

/// batched_matmul(a, b) and its gradients against torch::matmul's.
void expect_matches_matmul(const torch::Tensor& a0, const torch::Tensor& b0) {
  ASSERT_TRUE(batched_matmul_uses_blas(a0, b0)) << a0.sizes() << " x " << b0.sizes();
  torch::Tensor a = a0.detach().requires_grad_(true), b = b0.detach().requires_grad_(true);
  torch::Tensor c = batched_matmul(a, b);
  torch::Tensor a_ref = a0.detach().requires_grad_(true), b_ref = b0.detach().requires_grad_(true);
  torch::Tensor c_ref = torch::matmul(a_ref, b_ref);
  ASSERT_EQ(c.sizes(), c_ref.sizes());
  EXPECT_TRUE(torch::allclose(c, c_ref, 1e-5, 1e-5));
  const torch::Tensor g = torch::randn_like(c_ref);
  (c * g).sum().backward();
  (c_ref * g).sum().backward();
  EXPECT_TRUE(torch::allclose(a.grad(), a_ref.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(b.grad(), b_ref.grad(), 1e-5, 1e-5));
}

TEST(BatchedMatmul, EqualsMatmulOnTheViewsAttentionPasses) {
  torch::manual_seed(3);
  // q k^T and p v as BERT's attention forms them: [N, A, L, d] permuted
  // views of [N, L, A, d] (row stride A*d), k transposed (column-major).
  const torch::Tensor q = torch::randn({5, 7, 2, 4}).permute({0, 2, 1, 3});
  const torch::Tensor k = torch::randn({5, 7, 2, 4}).permute({0, 2, 1, 3});
  expect_matches_matmul(q, k.transpose(-1, -2));
  expect_matches_matmul(torch::softmax(torch::randn({5, 2, 7, 7}), -1), k);
  // Contiguous 3-d, a column-major left operand, an operand that needs a copy
  // (every other column), and degenerate sizes.
  expect_matches_matmul(torch::randn({3, 6, 5}), torch::randn({3, 5, 4}));
  expect_matches_matmul(torch::randn({3, 5, 6}).transpose(-1, -2), torch::randn({3, 5, 4}));
  expect_matches_matmul(torch::randn({3, 6, 10}).slice(-1, 0, 10, 2), torch::randn({3, 5, 4}));
  expect_matches_matmul(torch::randn({4, 1, 3}), torch::randn({4, 3, 1}));
  expect_matches_matmul(torch::randn({4, 6, 1}), torch::randn({4, 1, 5}));
  expect_matches_matmul(torch::randn({0, 6, 3}), torch::randn({0, 3, 5}));
  const torch::Tensor empty_k = batched_matmul(torch::randn({2, 3, 0}), torch::randn({2, 0, 4}));
  EXPECT_TRUE(torch::equal(empty_k, torch::zeros({2, 3, 4})));
}

TEST(BatchedMatmul, WritesTheAskedLayoutAndGradientsInTheInputsLayouts) {
  torch::manual_seed(5);
  // Attention's heads: q, k, v [N, A, L, d] permuted views of [N, L, A, d].
  auto heads = [](const torch::Tensor& t) { return t.permute({0, 2, 1, 3}).detach().requires_grad_(true); };
  const torch::Tensor q = heads(torch::randn({3, 6, 2, 4})), k = heads(torch::randn({3, 6, 2, 4})),
                      v = heads(torch::randn({3, 6, 2, 4}));
  const torch::Tensor p = torch::softmax(batched_matmul(q, k.transpose(-1, -2)), -1);
  const torch::Tensor ctx = batched_matmul(p, v, {0, 2, 1, 3});
  const torch::Tensor want = torch::matmul(torch::softmax(torch::matmul(q, k.transpose(-1, -2)), -1), v);
  EXPECT_TRUE(torch::allclose(ctx, want, 1e-5, 1e-5));
  // Stored as [N, L, A, d]: merging the heads back is a view.
  EXPECT_TRUE(ctx.permute({0, 2, 1, 3}).is_contiguous());
  EXPECT_FALSE(batched_matmul(p, v).permute({0, 2, 1, 3}).is_contiguous());
  const torch::Tensor g = torch::randn_like(want);
  auto grads = torch::autograd::grad({(ctx * g).sum()}, {q, k, v});
  auto grads_want = torch::autograd::grad({(want * g).sum()}, {q, k, v});
  for (std::size_t i = 0; i < grads.size(); ++i) {
    EXPECT_TRUE(torch::allclose(grads[i], grads_want[i], 1e-5, 1e-5)) << "input " << i;
    // In the input's layout: the permuted-back gradient is contiguous.
    EXPECT_TRUE(grads[i].permute({0, 2, 1, 3}).is_contiguous()) << "input " << i;
  }
  try {
    batched_matmul(p, v, {0, 2, 2, 3});
    FAIL() << "a layout that is not a permutation was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("layout must be a permutation of 0..3"));
  }
}

TEST(BatchedMatmul, ResultsDoNotDependOnTheThreadCount) {
  torch::manual_seed(4);
  const torch::Tensor a = torch::randn({300, 2, 16, 8});
  const torch::Tensor b = torch::randn({300, 2, 8, 16});
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  const torch::Tensor one = batched_matmul(a, b);
  at::set_num_threads(2);
  const torch::Tensor two = batched_matmul(a, b);
  at::set_num_threads(before);
  EXPECT_TRUE(torch::equal(one, two));
}

TEST(BatchedMatmul, OtherInputsAreTorchMatmul) {
  const torch::Tensor a = torch::randn({3, 4, 5}, torch::kFloat64),
                      b = torch::randn({3, 5, 2}, torch::kFloat64);
  EXPECT_FALSE(batched_matmul_uses_blas(a, b));
  EXPECT_TRUE(torch::equal(batched_matmul(a, b), torch::matmul(a, b)));
  // Broadcast batch dimensions and plain matrices.
  const torch::Tensor x = torch::randn({3, 4, 5}), y = torch::randn({1, 5, 2});
  EXPECT_FALSE(batched_matmul_uses_blas(x, y));
  EXPECT_TRUE(torch::equal(batched_matmul(x, y), torch::matmul(x, y)));
  EXPECT_FALSE(batched_matmul_uses_blas(torch::randn({4, 5}), torch::randn({5, 2})));
}

}  // namespace
}  // namespace llmrec
