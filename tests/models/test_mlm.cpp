// The masked-language-model pieces of pre-training: BERT's masking rule
// (how many pieces, whole words, never a special token, 80/10/10, a pure
// function of its seed), the head's maths and HF names (decoder tied to the
// word embeddings), and the HF directory it saves (load_hf_bert reads the
// encoder back, the head reloads, the decoder is not stored).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"
#include "models/hf_loader.h"
#include "models/mlm.h"
#include "models/safetensors.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

/// [PAD] [UNK] [CLS] [SEP] [MASK], then words w0..w19 and continuations ##c0..##c9.
std::vector<std::string> test_vocab() {
  std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (int i = 0; i < 20; ++i) v.push_back("w" + std::to_string(i));
  for (int i = 0; i < 10; ++i) v.push_back("##c" + std::to_string(i));
  return v;
}
constexpr std::int32_t kW0 = 5, kC0 = 25;

TEST(MlmVocab, FindsTheSpecialTokensAndTheContinuations) {
  MlmVocab v = MlmVocab::from(test_vocab(), "test");
  EXPECT_EQ(v.size, 35);
  EXPECT_EQ(v.mask, 4);
  EXPECT_EQ(v.cls, 2);
  EXPECT_EQ(v.continuation[kC0], 1);
  EXPECT_EQ(v.continuation[kW0], 0);
  EXPECT_EQ(v.special[1], 1);  // [UNK] is never predicted
  std::vector<std::string> no_mask = test_vocab();
  no_mask[4] = "mask";
  try {
    MlmVocab::from(no_mask, "runs/x/dataset.h5");
    FAIL() << "a vocabulary without [MASK] was accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("runs/x/dataset.h5"));
    EXPECT_THAT(e.what(), HasSubstr("[MASK]"));
  }
}

TEST(MlmMask, PredictsFifteenPercentOfTheCandidatesAndNeverASpecialToken) {
  const MlmVocab v = MlmVocab::from(test_vocab(), "test");
  // [CLS] w0..w19 [UNK] [SEP]: 20 candidates -> round(0.15 x 20) = 3 pieces.
  std::vector<std::int32_t> text = {2};
  for (int i = 0; i < 20; ++i) text.push_back(kW0 + i);
  text.push_back(1);
  text.push_back(3);
  std::set<std::vector<std::int32_t>> distinct;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    MaskedText m = mlm_mask_text(text.data(), static_cast<std::int64_t>(text.size()), v, {0.15, true}, seed);
    ASSERT_EQ(m.predicted, 3);
    ASSERT_EQ(m.input.size(), text.size());
    std::int64_t labelled = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (m.labels[i] >= 0) {
        ++labelled;
        EXPECT_EQ(m.labels[i], text[i]);
        EXPECT_EQ(v.special[static_cast<std::size_t>(text[i])], 0) << "a special token was chosen at " << i;
        EXPECT_EQ(v.special[static_cast<std::size_t>(m.input[i])] == 0 || m.input[i] == v.mask, true);
      } else {
        EXPECT_EQ(m.input[i], text[i]) << "an unchosen piece changed at " << i;
      }
    }
    EXPECT_EQ(labelled, 3);
    // A pure function of the seed.
    MaskedText again =
        mlm_mask_text(text.data(), static_cast<std::int64_t>(text.size()), v, {0.15, true}, seed);
    EXPECT_EQ(again.input, m.input);
    EXPECT_EQ(again.labels, m.labels);
    distinct.insert(m.labels);
  }
  EXPECT_GT(distinct.size(), 100u) << "different seeds should choose different pieces";
  // Only special tokens: nothing to predict.
  std::vector<std::int32_t> empty = {2, 3, 0, 0};
  EXPECT_EQ(mlm_mask_text(empty.data(), 4, v, {0.15, true}, 1).predicted, 0);
}

TEST(MlmMask, WholeWordsAreChosenTogether) {
  const MlmVocab v = MlmVocab::from(test_vocab(), "test");
  // [CLS] (w0 ##c0 ##c1) (w1) (w2 ##c2) (w3) ... [SEP]: 8 words, 12 pieces.
  const std::vector<std::int32_t> text = {2,       kW0,     kC0,     kC0 + 1, kW0 + 1, kW0 + 2, kC0 + 2,
                                          kW0 + 3, kW0 + 4, kW0 + 5, kW0 + 6, kW0 + 7, kC0 + 3, 3};
  const std::vector<std::vector<int>> words = {{1, 2, 3}, {4}, {5, 6}, {7}, {8}, {9}, {10}, {11, 12}};
  bool split_word_seen_without = false;
  for (std::uint64_t seed = 0; seed < 300; ++seed) {
    for (bool whole : {true, false}) {
      MaskedText m =
          mlm_mask_text(text.data(), static_cast<std::int64_t>(text.size()), v, {0.3, whole}, seed);
      EXPECT_LE(m.predicted, 4);  // round(0.3 x 12), whole words while they fit
      for (const auto& w : words) {
        int chosen = 0;
        for (int i : w) chosen += m.labels[static_cast<std::size_t>(i)] >= 0 ? 1 : 0;
        if (whole) {
          EXPECT_TRUE(chosen == 0 || chosen == static_cast<int>(w.size()))
              << "seed " << seed << " split a word";
        } else if (chosen != 0 && chosen != static_cast<int>(w.size())) {
          split_word_seen_without = true;
        }
      }
    }
  }
  EXPECT_TRUE(split_word_seen_without) << "without whole_word the pieces are chosen one by one";
}

TEST(MlmMask, EightyPercentMaskTenRandomTenKept) {
  const MlmVocab v = MlmVocab::from(test_vocab(), "test");
  std::vector<std::int32_t> text = {2};
  for (int i = 0; i < 20; ++i) text.push_back(kW0 + i);
  text.push_back(3);
  double masked = 0, kept = 0, replaced = 0, total = 0;
  for (std::uint64_t seed = 0; seed < 4000; ++seed) {
    MaskedText m = mlm_mask_text(text.data(), static_cast<std::int64_t>(text.size()), v, {0.5, false}, seed);
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (m.labels[i] < 0) continue;
      ++total;
      if (m.input[i] == v.mask) {
        ++masked;
      } else if (m.input[i] == text[i]) {
        ++kept;
      } else {
        ++replaced;
        EXPECT_EQ(v.special[static_cast<std::size_t>(m.input[i])], 0) << "replaced by a special token";
      }
    }
  }
  ASSERT_EQ(total, 4000 * 10);
  EXPECT_NEAR(masked / total, 0.8, 0.01);
  // A random piece can be the piece itself (1 in 30 here): kept ~ 0.1 + 0.1/30.
  EXPECT_NEAR(kept / total, 0.1 + 0.1 / 30, 0.01);
  EXPECT_NEAR(replaced / total, 0.1 - 0.1 / 30, 0.01);
}

BertConfig tiny_config() {
  BertConfig c;
  c.vocab_size = 35;
  c.hidden_size = 16;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.intermediate_size = 32;
  c.max_position_embeddings = 16;
  c.hidden_dropout_prob = 0;
  c.attention_probs_dropout_prob = 0;
  return c;
}

TEST(BertForMaskedLM, HeadIsHfsWithTheDecoderTiedToTheWordEmbeddings) {
  torch::manual_seed(3);
  BertForMaskedLM mlm(tiny_config());
  mlm->eval();
  std::set<std::string> names;
  for (const auto& p : mlm->named_parameters()) names.insert(p.key());
  for (const char* n :
       {"bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.query.weight",
        "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
        "cls.predictions.bias"}) {
    EXPECT_EQ(names.count(n), 1u) << n;
  }
  EXPECT_EQ(names.count("cls.predictions.decoder.weight"), 0u) << "the decoder is the word embeddings";
  torch::NoGradGuard no_grad;
  mlm->bias.normal_();
  const torch::Tensor ids = torch::tensor({{2, 5, 4, 7, 3}, {2, 9, 4, 3, 0}}, torch::kLong);
  const torch::Tensor mask = torch::tensor({{1, 1, 1, 1, 1}, {1, 1, 1, 1, 0}}, torch::kLong);
  const torch::Tensor positions = torch::tensor({2, 6}, torch::kLong);  // row 0 col 2, row 1 col 1
  const torch::Tensor logits = mlm->logits_at(ids, mask, positions);
  ASSERT_EQ(logits.sizes(), (std::vector<std::int64_t>{2, 35}));
  const torch::Tensor h =
      mlm->bert->forward(ids, mask).last_hidden_state.reshape({-1, 16}).index_select(0, positions);
  const torch::Tensor t =
      torch::layer_norm(torch::gelu(torch::linear(h, mlm->dense->weight, mlm->dense->bias)), {16},
                        mlm->layer_norm->weight, mlm->layer_norm->bias, 1e-12);
  const torch::Tensor expect =
      torch::matmul(t, mlm->bert->embeddings->word_embeddings->weight.t()) + mlm->bias;
  EXPECT_TRUE(torch::allclose(logits, expect, 1e-5, 1e-6));
  // The loss sums cross-entropy over the labelled positions only.
  torch::Tensor labels = torch::full({2, 5}, -1, torch::kLong);
  labels[0][2] = 6;
  labels[1][1] = 9;
  MlmSums s = mlm->loss(ids, mask, labels);
  EXPECT_EQ(s.predicted, 2);
  const double ce =
      -(torch::log_softmax(expect, 1)[0][6] + torch::log_softmax(expect, 1)[1][9]).item<double>();
  EXPECT_NEAR(s.loss_sum.item<double>(), ce, 1e-4);
  // Training steps (no accuracy) take the fused loss: the same sum, the
  // same gradient for every parameter.
  auto grads_of = [&](bool accuracy) {
    mlm->zero_grad();
    MlmSums r = mlm->loss(ids, mask, labels, accuracy);
    r.loss_sum.backward();
    std::vector<torch::Tensor> out{r.loss_sum.detach()};
    for (const auto& p : mlm->parameters()) out.push_back(p.grad().clone());
    return out;
  };
  {
    torch::AutoGradMode enable(true);  // the guard above holds gradients off
    const auto plain = grads_of(true), fused = grads_of(false);
    for (std::size_t i = 0; i < plain.size(); ++i)
      EXPECT_TRUE(torch::allclose(fused[i], plain[i], 1e-4, 1e-6)) << "tensor " << i;
    // The word embeddings' lookup gradient (sparse rows) lands in the tied
    // decoder's dense one, also without a single masked piece.
    const torch::Tensor& word = mlm->bert->embeddings->word_embeddings->weight;
    EXPECT_FALSE(word.grad().is_sparse());
    auto& word_options = mlm->bert->embeddings->word_embeddings->options;
    word_options.sparse(false);  // a dense lookup gradient gives the same sum
    const auto dense = grads_of(false);
    word_options.sparse(true);
    for (std::size_t i = 0; i < dense.size(); ++i)
      EXPECT_TRUE(torch::allclose(fused[i], dense[i], 1e-6, 1e-7)) << "tensor " << i;
    mlm->zero_grad();
    mlm->loss(ids, mask, torch::full({2, 5}, -1, torch::kLong), false).loss_sum.backward();
    EXPECT_FALSE(word.grad().is_sparse());
  }
}

TEST(BertForMaskedLM, SavesAnHfDirectoryThatLoadsBack) {
  const fs::path dir = fs::temp_directory_path() / ("llmrec_mlm_test_" + std::to_string(::getpid()));
  torch::manual_seed(4);
  BertForMaskedLM mlm(tiny_config());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : mlm->parameters()) p.add_(torch::randn_like(p) * 0.1);  // not the init values
  }
  fs::create_directories(dir);
  const fs::path vocab_in = dir.string() + ".vocab.txt";
  {
    std::ofstream out(vocab_in);
    for (const auto& t : test_vocab()) out << t << "\n";
  }
  save_mlm_hf(dir.string(), *mlm, vocab_in.string());
  fs::remove(vocab_in);
  // config.json names the architecture; the decoder is not stored.
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  EXPECT_EQ(config["architectures"][0], "BertForMaskedLM");
  SafetensorsFile file = read_safetensors((dir / "model.safetensors").string());
  for (const auto& [name, t] : file.tensors) {
    EXPECT_TRUE(name.rfind("bert.", 0) == 0 || name.rfind("cls.predictions.", 0) == 0) << name;
  }
  EXPECT_EQ(file.tensors.count("cls.predictions.decoder.weight"), 0u);
  EXPECT_EQ(file.tensors.size(), mlm->named_parameters().size());
  // The encoder through load_hf_bert, the head through load_head.
  HfBertLoadOptions load;
  load.add_pooler = false;
  HfBert loaded = load_hf_bert(dir.string(), load);
  auto mine = mlm->bert->named_parameters();
  for (const auto& p : loaded.model->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), mine[p.key()])) << p.key();
  }
  EXPECT_EQ(loaded.head_tensors.size(), 5u);
  torch::manual_seed(5);
  BertForMaskedLM fresh(tiny_config());
  EXPECT_EQ(fresh->load_head(loaded.head_tensors, dir.string()), 5);
  for (const auto& [name, t] : mlm->head_tensors())
    EXPECT_TRUE(torch::equal(t, fresh->head_tensors().at(name))) << name;
  std::ifstream vocab(dir / "vocab.txt");
  std::string first;
  std::getline(vocab, first);
  EXPECT_EQ(first, "[PAD]");
  // A head of another shape is refused by name.
  std::map<std::string, torch::Tensor> wrong = {{"cls.predictions.bias", torch::zeros({7})}};
  try {
    fresh->load_head(wrong, "other.safetensors");
    FAIL() << "a mis-shaped head tensor was accepted";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("other.safetensors"));
    EXPECT_THAT(e.what(), HasSubstr("cls.predictions.bias"));
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmrec
