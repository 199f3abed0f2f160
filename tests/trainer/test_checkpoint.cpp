// Model checkpoints: save -> load gives the same weights and outputs;
// a wrong file or a damaged one is a clear error.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "tests/trainer/tiny_model.h"
#include "trainer/checkpoint.h"

namespace llmrec {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

/// A saved model of `mc` with every weight moved off its initialisation.
std::string save_perturbed(const fs::path& dir, const std::string& name, const ModelConfig& mc,
                           std::int64_t id_items, Recommender* out) {
  torch::manual_seed(11);
  Recommender model(RecommenderOptions(mc).id_items(id_items));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);
  }
  CheckpointParts parts;
  parts.model = model;
  parts.run_config_yaml = "run: {}\n";
  std::string path = (dir / name).string();
  save_checkpoint(path, parts);
  if (out != nullptr) *out = model;
  return path;
}

TEST(Checkpoint, RoundTripGivesTheSameModel) {
  fs::path dir = fs::temp_directory_path() / ("llmrec_ckpt_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  // Every weight non-default, so that the comparison means something.
  Recommender model{nullptr};
  const std::string path = save_perturbed(dir, "model.h5", testing::tiny_model_config(50), 20, &model);
  model->eval();
  Recommender loaded = checkpoint_load_model(path);
  auto a = model->named_parameters(), b = loaded->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();

  torch::Tensor tokens = torch::randint(5, 50, {3, 10}, torch::kLong);
  torch::Tensor mask = torch::ones({3, 10}, torch::kLong);
  torch::Tensor ids = torch::tensor({1, 7, 30}, torch::kLong);  // 30: no ID vector
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model->encode_items(tokens, mask, ids), loaded->encode_items(tokens, mask, ids)));

  // Damage one byte at a time at 199 places across the file: loading either
  // fails with an IoError naming the file, or (a byte HDF5 never reads,
  // such as free space) gives exactly the original weights. Never
  // different weights.
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  int refused = 0;
  for (int k = 1; k <= 199; ++k) {
    std::string damaged = bytes;
    const std::size_t at = damaged.size() * static_cast<std::size_t>(k) / 200;
    damaged[at] = static_cast<char>(damaged[at] ^ 0x41);
    std::ofstream(path, std::ios::binary) << damaged;
    try {
      Recommender again = checkpoint_load_model(path);
      auto c = again->named_parameters();
      for (const auto& p : a)
        EXPECT_TRUE(torch::equal(p.value(), c[p.key()])) << "byte " << at << ": " << p.key();
    } catch (const IoError& e) {
      EXPECT_THAT(e.what(), HasSubstr(path));
      ++refused;
    }
  }
  EXPECT_GT(refused, 0) << "some damaged bytes lie in checksummed tensor data";
  std::ofstream(path, std::ios::binary) << "not a checkpoint";
  EXPECT_THROW(checkpoint_load_model(path), IoError);
  fs::remove_all(dir);
}

TEST(Checkpoint, InitFromLoadsEveryWeightAndStartsNewAdaptersAtZero) {
  fs::path dir = fs::temp_directory_path() / ("llmrec_init_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  ModelConfig plain = testing::tiny_model_config(50);
  plain.lora.r = 0;
  Recommender source{nullptr};
  const std::string path = save_perturbed(dir, "plain.h5", plain, 20, &source);

  // Fine-tuning it with adapters, another loss and dropout: allowed.
  ModelConfig tuned = plain;
  tuned.lora.r = 4;
  tuned.loss.temperature = 0.5;
  tuned.id_dropout = 0.3;
  torch::manual_seed(99);
  Recommender model(RecommenderOptions(tuned).id_items(20));
  std::vector<std::string> fresh;
  const std::int64_t loaded = checkpoint_init_model(path, model, &fresh);
  auto src = source->named_parameters();
  std::int64_t source_tensors = static_cast<std::int64_t>(src.size() + source->named_buffers().size());
  EXPECT_EQ(loaded, source_tensors);
  ASSERT_FALSE(fresh.empty());
  for (const auto& n : fresh) EXPECT_THAT(n, HasSubstr("lora_"));
  auto got = model->named_parameters();
  EXPECT_EQ(got.size(), src.size() + fresh.size());
  for (const auto& p : src) EXPECT_TRUE(torch::equal(p.value(), got[p.key()])) << p.key();
  // The adapters add nothing yet: the model scores items as the file's.
  source->eval();
  model->eval();
  torch::Tensor tokens = torch::randint(5, 50, {3, 10}, torch::kLong);
  torch::Tensor mask = torch::ones({3, 10}, torch::kLong);
  torch::Tensor ids = torch::tensor({1, 7, 30}, torch::kLong);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::allclose(model->encode_items(tokens, mask, ids),
                                source->encode_items(tokens, mask, ids), 1e-6, 1e-6));
  }

  // A file with adapters into a model with them: they are loaded too.
  const std::string adapted = save_perturbed(dir, "adapted.h5", tuned, 20, &source);
  torch::manual_seed(98);
  Recommender again(RecommenderOptions(tuned).id_items(20));
  fresh.clear();
  EXPECT_EQ(checkpoint_init_model(adapted, again, &fresh),
            static_cast<std::int64_t>(source->named_parameters().size() + source->named_buffers().size()));
  EXPECT_TRUE(fresh.empty());
  auto adapted_src = source->named_parameters(), adapted_got = again->named_parameters();
  for (const auto& p : adapted_src) EXPECT_TRUE(torch::equal(p.value(), adapted_got[p.key()])) << p.key();

  auto refused = [&](const std::string& file, const ModelConfig& mc, std::int64_t id_items) {
    Recommender m(RecommenderOptions(mc).id_items(id_items));
    try {
      checkpoint_init_model(file, m, nullptr);
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(), HasSubstr(file));
      return std::string(e.what());
    }
    ADD_FAILURE() << "not refused";
    return std::string();
  };
  // ... but not into a model without them (they would be lost),
  EXPECT_THAT(refused(adapted, plain, 20), HasSubstr("model.lora.r"));
  // nor into another shape or another dataset.
  ModelConfig wider = plain;
  wider.dim = 32;
  EXPECT_THAT(refused(path, wider, 20), HasSubstr("model.dim"));
  EXPECT_THAT(refused(path, plain, 21), HasSubstr("another dataset"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmrec
