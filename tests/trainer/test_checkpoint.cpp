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

TEST(Checkpoint, RoundTripGivesTheSameModel) {
  fs::path dir = fs::temp_directory_path() / ("llmrec_ckpt_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "model.h5").string();
  torch::manual_seed(5);
  Recommender model(RecommenderOptions(testing::tiny_model_config(50)).id_items(20));
  // Make every weight non-default, so that the comparison means something.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);
  }
  model->eval();
  CheckpointParts parts;
  parts.model = model;
  parts.run_config_yaml = "run: {}\n";
  save_checkpoint(path, parts);
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

}  // namespace
}  // namespace llmrec
