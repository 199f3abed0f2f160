// AdaLoRA (models/adalora.h): the SVD-form adapter computes
// x W^T + b + alpha / (r + 1e-5) B diag(E) A x and starts as a no-op; the
// budget follows PEFT's cubic schedule; the allocator masks the triplets of
// least smoothed importance |w x grad w| x uncertainty down to the budget,
// over all modules at once, and keeps the final pattern; the orthogonality
// penalty is 0 exactly for orthonormal factors; a PEFT AdaLoRA directory
// holds the kept triplets with their rank_pattern and loads back into the
// same outputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/adalora.h"
#include "models/lora.h"
#include "models/safetensors.h"
#include "tests/models/lora_test_util.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

BertModel make_model() {
  torch::manual_seed(3);
  BertModel model(::llmrec::testing::small_bert_config());
  model->to(torch::kDouble);
  model->eval();
  return model;
}

LoraOptions adaptive_options(std::int64_t r, int target_r) {
  LoraOptions o{r, 8.0, 0.0, {"query", "value"}};
  o.adaptive.enabled = true;
  o.adaptive.target_r = target_r;
  return o;
}

torch::Tensor run(BertModel& model) {
  const torch::Tensor ids = torch::tensor({{2, 7, 9, 3, 0}, {2, 4, 5, 0, 0}});
  const torch::Tensor mask = torch::tensor({{1, 1, 1, 1, 0}, {1, 1, 1, 0, 0}});
  return model(ids, mask).last_hidden_state;
}

std::vector<LoraLinearImpl*> adapters(BertModel& model) {
  std::vector<LoraLinearImpl*> out;
  for (const auto& m : model->named_modules("", false)) {
    auto* l = dynamic_cast<LoraLinearImpl*>(m.value().get());
    if (l != nullptr && l->has_adapter()) out.push_back(l);
  }
  return out;
}

/// Every E random (as after training), so each triplet counts.
void randomize_e(BertModel& model) {
  torch::NoGradGuard no_grad;
  for (LoraLinearImpl* a : adapters(model)) a->svd_e.normal_(0.0, 0.5);
}

TEST(AdaLoraLayer, StartsAsANoOpAndComputesTheSvdForm) {
  BertModel model = make_model();
  torch::NoGradGuard no_grad;
  const torch::Tensor base = run(model);
  apply_lora(model, adaptive_options(6, 2));
  EXPECT_TRUE(torch::equal(run(model), base));  // E = 0
  LoraLinearImpl& q = *adapters(model).front();
  ASSERT_TRUE(q.adaptive());
  EXPECT_EQ(q.svd_a.sizes(), (std::vector<std::int64_t>{6, 16}));
  EXPECT_EQ(q.svd_b.sizes(), (std::vector<std::int64_t>{16, 6}));
  EXPECT_EQ(q.svd_e.sizes(), (std::vector<std::int64_t>{6, 1}));
  EXPECT_EQ(q.svd_a.scalar_type(), torch::kDouble);
  EXPECT_NEAR(q.svd_a.std().item<double>(), 0.02, 0.005);  // PEFT's normal(0, 0.02)
  EXPECT_DOUBLE_EQ(q.scaling(), 8.0 / (6 + 1e-5));
  // The names a checkpoint and PEFT use.
  std::set<std::string> names;
  for (const auto& p : q.named_parameters(false)) names.insert(p.key());
  EXPECT_EQ(names, (std::set<std::string>{"weight", "bias", "lora_A", "lora_B", "lora_E"}));

  randomize_e(model);
  const torch::Tensor x = torch::randn({3, 16}, torch::kDouble);
  const torch::Tensor want =
      torch::linear(x, q.weight, q.bias) +
      torch::matmul(torch::matmul(x, (q.svd_a * q.svd_e).t()), q.svd_b.t()) * q.scaling();
  EXPECT_TRUE(torch::allclose(q.forward(x), want, 0, 1e-12));
  const torch::Tensor unmerged = run(model);
  merge_lora(*model);
  EXPECT_TRUE(torch::allclose(run(model), unmerged, 0, 1e-12));
  unmerge_lora(*model);
  EXPECT_TRUE(torch::allclose(run(model), unmerged, 0, 1e-12));
}

TEST(AdaLoraSchedule, FollowsPeftsCubicBudget) {
  ModelAdaLoraConfig s;
  s.tinit = 2;
  s.tfinal = 3;
  s.delta_t = 2;
  s.total_step = 15;
  // 4 modules: 48 triplets at r = 12, 32 at target_r = 8.
  EXPECT_EQ(adalora_budget(s, 48, 32, 1).budget, 48);
  EXPECT_FALSE(adalora_budget(s, 48, 32, 2).mask);
  // step 3: 1 - (3 - 2) / (15 - 3 - 2) = 0.9 -> 16 x 0.729 + 32 = 43.66 -> 43
  EXPECT_EQ(adalora_budget(s, 48, 32, 3).budget, 43);
  EXPECT_FALSE(adalora_budget(s, 48, 32, 3).mask);  // 3 % delta_t
  EXPECT_TRUE(adalora_budget(s, 48, 32, 4).mask);
  // step 7: 0.5 -> 16 x 0.125 + 32 = 34
  EXPECT_EQ(adalora_budget(s, 48, 32, 7).budget, 34);
  EXPECT_EQ(adalora_budget(s, 48, 32, 12).budget, 32);  // total - tfinal
  EXPECT_EQ(adalora_budget(s, 48, 32, 13).budget, 32);
  EXPECT_TRUE(adalora_budget(s, 48, 32, 13).mask);

  EXPECT_NO_THROW(adalora_check_schedule(s, 12));
  s.tinit = 12;
  EXPECT_THAT([&] { adalora_check_schedule(s, 12); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("leaves no step for the budget to fall in")));
  s.tinit = 2;
  s.target_r = 13;
  EXPECT_THAT([&] { adalora_check_schedule(s, 12); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("model.lora.adaptive.target_r (13)")));
}

/// Sets every adapter's gradients so that triplet i of adapter m has
/// importance growing with m * r + i, one step of the allocator.
void importance_by_position(BertModel& model) {
  std::int64_t m = 0;
  for (LoraLinearImpl* a : adapters(model)) {
    const std::int64_t r = a->adapter().r();
    const torch::Tensor rank = (torch::arange(r, torch::kDouble) + static_cast<double>(m * r) + 1.0);
    torch::NoGradGuard no_grad;
    a->svd_a.fill_(1.0);
    a->svd_b.fill_(1.0);
    a->svd_e.fill_(1.0);
    a->svd_a.mutable_grad() = rank.unsqueeze(1).expand_as(a->svd_a).clone();
    a->svd_b.mutable_grad() = rank.unsqueeze(0).expand_as(a->svd_b).clone();
    a->svd_e.mutable_grad() = rank.unsqueeze(1).clone();
    ++m;
  }
}

TEST(AdaLoraAllocator, MasksTheLeastImportantTripletsOverAllModules) {
  BertModel model = make_model();
  apply_lora(model, adaptive_options(4, 1));  // 4 modules: budget 16 -> 4
  ModelAdaLoraConfig s;
  s.target_r = 1;
  s.tfinal = 2;
  s.total_step = 6;
  importance_by_position(model);  // one smoothing step: scores ~ ipt^2, growing with position
  // Step 1 of 4 budgeted ones: 1 - 1/4 = 0.75 -> 12 x 0.421875 + 4 = 9.06 -> 9 kept.
  AdaLoraUpdate u = adalora_update_and_allocate(*model, s, 1);
  EXPECT_EQ(u.budget, 9);
  EXPECT_TRUE(u.masked);
  // Scores grow with position, so the 7 lowest (all of module 0 and 3 of module 1) go.
  std::vector<bool> kept;
  for (const auto& [name, flags] : adalora_rank_pattern(*model))
    kept.insert(kept.end(), flags.begin(), flags.end());
  ASSERT_EQ(kept.size(), 16u);
  for (std::size_t i = 0; i < kept.size(); ++i) EXPECT_EQ(kept[i], i >= 7) << "triplet " << i;
  const auto all = adapters(model);
  EXPECT_EQ(all[0]->svd_e.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(all[1]->svd_e.abs().sum().item<double>(), 1.0);  // only its last triplet kept
  EXPECT_EQ(adalora_rank_pattern(*model).front().first, "encoder.layer.0.attention.self.query");

  // The final allocation (step 4 = total - tfinal) reaches the target, and
  // after it the pattern holds: E regrown by training is masked again.
  importance_by_position(model);
  EXPECT_EQ(adalora_update_and_allocate(*model, s, 4).budget, 4);
  for (const auto& [name, flags] : adalora_rank_pattern(*model)) {
    EXPECT_EQ(std::count(flags.begin(), flags.end(), true),
              name.find("layer.1.attention.self.value") != std::string::npos ? 4 : 0)
        << name;
  }
  {
    torch::NoGradGuard no_grad;
    for (LoraLinearImpl* a : all) a->svd_e.fill_(2.0);
  }
  adalora_update_and_allocate(*model, s, 5);
  EXPECT_EQ(all[0]->svd_e.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(all[3]->svd_e.abs().sum().item<double>(), 8.0);
  EXPECT_EQ(all[3]->ada.e_ipt.abs().sum().item<double>(), 0.0);  // the scores were reset
}

TEST(AdaLoraAllocator, NeedsAdaptiveAdapters) {
  BertModel model = make_model();
  apply_lora(model, LoraOptions{4, 8.0, 0.0, {"query"}});
  ModelAdaLoraConfig s;
  s.total_step = 4;
  EXPECT_THROW(adalora_update_and_allocate(*model, s, 1), Error);
  EXPECT_FALSE(adalora_orthogonal_regulariser(*model).defined());
}

TEST(AdaLoraRegulariser, IsZeroForOrthonormalFactorsAndItsMeanOtherwise) {
  BertModel model = make_model();
  apply_lora(model, adaptive_options(4, 2));
  const auto all = adapters(model);
  {
    torch::NoGradGuard no_grad;
    for (LoraLinearImpl* a : all) {
      a->svd_a.zero_().narrow(1, 0, 4).copy_(torch::eye(4, torch::kDouble));  // rows orthonormal
      a->svd_b.zero_().narrow(0, 4, 4).copy_(torch::eye(4, torch::kDouble));  // columns orthonormal
    }
  }
  EXPECT_NEAR(adalora_orthogonal_regulariser(*model).item<double>(), 0.0, 1e-15);
  {
    torch::NoGradGuard no_grad;
    all[0]->svd_a.mul_(2.0);  // A A^T = 4 I: ||3 I||_F = 6, one of 8 terms
  }
  const torch::Tensor reg = adalora_orthogonal_regulariser(*model);
  EXPECT_NEAR(reg.item<double>(), 6.0 / 8.0, 1e-12);
  reg.backward();
  EXPECT_GT(all[0]->svd_a.grad().abs().sum().item<double>(), 0.0);
}

class AdaLoraPeft : public ::testing::Test {
 protected:
  fs::path dir_ = fs::temp_directory_path() / ("llmrec_adalora_test_" + std::to_string(::getpid()));
  void SetUp() override { fs::create_directories(dir_); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
};

TEST_F(AdaLoraPeft, SavesTheKeptTripletsWithTheirRankPatternAndLoadsBack) {
  BertModel model = make_model();
  auto base = std::dynamic_pointer_cast<BertModelImpl>(model->clone());
  LoraOptions options = adaptive_options(4, 1);
  options.adaptive.total_step = 6;
  apply_lora(model, options);
  ModelAdaLoraConfig s;
  s.target_r = 1;
  s.total_step = 6;
  importance_by_position(model);
  // 1 - 1/6 -> 12 x 0.5787 + 4 = 10.9 -> 10 of 16 kept: module 0 loses all, module 1 two.
  EXPECT_EQ(adalora_update_and_allocate(*model, s, 1).budget, 10);
  randomize_e(model);
  adalora_update_and_allocate(*model, s, 7);  // after the final step: the pattern masks E again
  torch::NoGradGuard no_grad;
  const torch::Tensor want = run(model);
  save_peft_adapter(path("ada"), model, options, "tiny-bert");

  std::ifstream in(path("ada/adapter_config.json"));
  const nlohmann::json config = nlohmann::json::parse(in);
  EXPECT_EQ(config.at("peft_type"), "ADALORA");
  EXPECT_EQ(config.at("init_r"), 4);
  EXPECT_EQ(config.at("target_r"), 1);
  EXPECT_EQ(config.at("total_step"), 6);
  EXPECT_EQ(config.at("deltaT"), 1);
  const nlohmann::json& pattern = config.at("rank_pattern");
  ASSERT_EQ(pattern.size(), 4u);
  EXPECT_EQ(pattern.at("encoder.layer.0.attention.self.value.lora_E"),
            nlohmann::json({false, false, true, true}));
  const SafetensorsFile file = read_safetensors(path("ada/adapter_model.safetensors"));
  EXPECT_EQ(file.tensors.at("base_model.model.encoder.layer.0.attention.self.query.lora_A").sizes(),
            (std::vector<std::int64_t>{0, 16}));
  EXPECT_EQ(file.tensors.at("base_model.model.encoder.layer.0.attention.self.value.lora_B").sizes(),
            (std::vector<std::int64_t>{16, 2}));
  EXPECT_EQ(file.tensors.at("base_model.model.encoder.layer.1.attention.self.value.lora_E").sizes(),
            (std::vector<std::int64_t>{4, 1}));

  BertModel other(base);
  other->eval();
  const LoraOptions read = load_peft_adapter(path("ada"), other);
  EXPECT_TRUE(read.adaptive.enabled);
  EXPECT_EQ(read.r, 4);
  EXPECT_EQ(read.adaptive.target_r, 1);
  EXPECT_TRUE(torch::allclose(run(other), want, 0, 1e-6));  // the file holds float32
  EXPECT_EQ(adalora_rank_pattern(*other), adalora_rank_pattern(*model));
}

TEST_F(AdaLoraPeft, RefusesAPatternThatDoesNotFit) {
  BertModel model = make_model();
  auto base = std::dynamic_pointer_cast<BertModelImpl>(model->clone());
  const LoraOptions options = adaptive_options(4, 1);
  apply_lora(model, options);
  save_peft_adapter(path("ok"), model, options, "b");
  auto rewrite = [&](const std::string& name, const std::function<void(nlohmann::json&)>& change) {
    return ::llmrec::testing::load_edited_peft(path("ok"), path(name), BertModel(base), change);
  };
  EXPECT_EQ(rewrite("same", [](auto&) {}), "");
  EXPECT_THAT(rewrite("short",
                      [](auto& c) {
                        c["rank_pattern"]["encoder.layer.0.attention.self.query.lora_E"] = {true, false};
                      }),
              HasSubstr("must list 4 booleans (init_r)"));
  EXPECT_THAT(
      rewrite("pruned",
              [](auto& c) {
                c["rank_pattern"]["encoder.layer.0.attention.self.query.lora_E"] = {true, false, true, true};
              }),
      HasSubstr("expected shape [3, 16]"));
  EXPECT_THAT(
      rewrite("stranger",
              [](auto& c) {
                c["rank_pattern"]["encoder.layer.0.attention.output.dense.lora_E"] = {true, true, true, true};
              }),
      HasSubstr("not an adapted module's lora_E"));
  EXPECT_THAT(rewrite("beta", [](auto& c) { c["beta1"] = 1.5; }),
              HasSubstr("'beta1' must be a number in [0, 1)"));
}

}  // namespace
}  // namespace llmrec
