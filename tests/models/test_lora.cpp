// LoRA on BertModel: a fresh adapter changes nothing, merged == unmerged,
// gradients reach exactly the adapters, r = 0 trains everything, PEFT
// directories round-trip with PEFT's exact tensor names and config keys, and
// a merged model saved as an HF directory loads back with the same outputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"
#include "models/hf_loader.h"
#include "models/lora.h"
#include "models/safetensors.h"
#include "tests/models/lora_test_util.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

BertModel make_model(c10::ScalarType dtype = torch::kDouble) {
  torch::manual_seed(3);
  BertModel model(::llmrec::testing::small_bert_config());
  model->to(dtype);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);
  return model;
}

/// Gives every lora_B random values, as after some training.
void randomize_b(BertModel& model) {
  torch::NoGradGuard no_grad;
  for (const auto& p : model->named_parameters()) {
    if (p.key().find(".lora_B.") != std::string::npos) p.value().normal_(0.0, 0.2);
  }
}

struct Batch {
  torch::Tensor ids = torch::tensor({{2, 7, 9, 3, 0}, {2, 4, 5, 0, 0}});
  torch::Tensor mask = torch::tensor({{1, 1, 1, 1, 0}, {1, 1, 1, 0, 0}});
};

BertOutput run(BertModel& model) {
  Batch b;
  return model(b.ids, b.mask);
}

const std::vector<std::string> kQueryValue = {
    "encoder.layer.0.attention.self.query", "encoder.layer.0.attention.self.value",
    "encoder.layer.1.attention.self.query", "encoder.layer.1.attention.self.value"};

class LoraTest : public ::testing::Test {
 protected:
  fs::path dir_ = fs::temp_directory_path() / ("llmrec_lora_test_" + std::to_string(::getpid()));
  void SetUp() override { fs::create_directories(dir_); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
};

TEST_F(LoraTest, FreshAdapterLeavesOutputsUnchanged) {
  BertModel model = make_model();
  model->eval();
  torch::NoGradGuard no_grad;
  BertOutput base = run(model);
  std::vector<std::string> adapted = apply_lora(model, LoraOptions{});
  EXPECT_EQ(adapted, kQueryValue);
  EXPECT_EQ(lora_adapted_modules(*model), kQueryValue);
  BertOutput lora = run(model);
  EXPECT_TRUE(torch::equal(base.last_hidden_state, lora.last_hidden_state));
  EXPECT_TRUE(torch::equal(base.pooler_output, lora.pooler_output));
  // Shapes, dtype and PEFT's init: A kaiming-uniform (bound 1/sqrt(in)), B zero.
  auto& q = model->encoder->layer->at<BertLayerImpl>(0).attention->self->query;
  EXPECT_EQ(q->lora_A->weight.sizes(), (std::vector<std::int64_t>{8, 16}));
  EXPECT_EQ(q->lora_B->weight.sizes(), (std::vector<std::int64_t>{16, 8}));
  EXPECT_EQ(q->lora_A->weight.scalar_type(), torch::kDouble);
  EXPECT_LE(q->lora_A->weight.abs().max().item<double>(), 1.0 / std::sqrt(16.0));
  EXPECT_GT(q->lora_A->weight.abs().max().item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(q->lora_B->weight, torch::zeros_like(q->lora_B->weight)));
  EXPECT_DOUBLE_EQ(q->scaling(), 2.0);
}

TEST_F(LoraTest, AdapterChangesTheForward) {
  BertModel model = make_model();
  model->eval();
  torch::NoGradGuard no_grad;
  BertOutput base = run(model);
  apply_lora(model, LoraOptions{});
  randomize_b(model);
  EXPECT_GT((run(model).last_hidden_state - base.last_hidden_state).abs().max().item<double>(), 1e-3);
}

TEST_F(LoraTest, MergedEqualsUnmerged) {
  BertModel model = make_model();
  model->eval();
  apply_lora(model, LoraOptions{4, 8.0, 0.0, {"query", "value", "dense"}});
  randomize_b(model);
  torch::NoGradGuard no_grad;
  auto& v = model->encoder->layer->at<BertLayerImpl>(1).attention->self->value;
  torch::Tensor w_before = v->weight.clone();
  BertOutput unmerged = run(model);
  merge_lora(*model);
  EXPECT_TRUE(v->merged());
  EXPECT_FALSE(torch::allclose(v->weight, w_before));  // the adapter is in the weight now
  BertOutput merged = run(model);
  EXPECT_TRUE(torch::allclose(merged.last_hidden_state, unmerged.last_hidden_state, 0, 1e-12));
  EXPECT_TRUE(torch::allclose(merged.pooler_output, unmerged.pooler_output, 0, 1e-12));
  merge_lora(*model);  // idempotent: not applied twice
  EXPECT_TRUE(torch::allclose(run(model).last_hidden_state, unmerged.last_hidden_state, 0, 1e-12));
  unmerge_lora(*model);
  EXPECT_FALSE(v->merged());
  EXPECT_TRUE(torch::allclose(v->weight, w_before, 0, 1e-14));
  EXPECT_TRUE(torch::allclose(run(model).last_hidden_state, unmerged.last_hidden_state, 0, 1e-12));
}

TEST_F(LoraTest, GradientsReachExactlyTheAdapters) {
  BertModel model = make_model();
  model->train();
  apply_lora(model, LoraOptions{});
  randomize_b(model);  // so that lora_A gets a non-zero gradient too
  auto trainable = lora_trainable_parameters(*model);
  const std::vector<std::string> keys = trainable.keys();
  std::set<std::string> names(keys.begin(), keys.end());
  std::set<std::string> want;
  for (const auto& m : kQueryValue) {
    want.insert(m + ".lora_A.weight");
    want.insert(m + ".lora_B.weight");
  }
  EXPECT_EQ(names, want);

  BertOutput out = run(model);
  (out.last_hidden_state.pow(2).sum() + out.pooler_output.sum()).backward();
  for (const auto& p : model->named_parameters()) {
    SCOPED_TRACE(p.key());
    if (want.count(p.key()) != 0) {
      ASSERT_TRUE(p.value().requires_grad());
      ASSERT_TRUE(p.value().grad().defined());
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0);
    } else {
      EXPECT_FALSE(p.value().requires_grad());
      EXPECT_FALSE(p.value().grad().defined());
    }
  }
}

TEST_F(LoraTest, RankZeroTrainsEverything) {
  BertModel model = make_model();
  for (auto& p : model->parameters()) p.requires_grad_(false);  // even a frozen model is unfrozen
  EXPECT_TRUE(apply_lora(model, LoraOptions{0}).empty());
  EXPECT_TRUE(lora_adapted_modules(*model).empty());
  EXPECT_EQ(lora_trainable_parameters(*model).size(), model->parameters().size());
  BertOutput out = run(model);
  (out.last_hidden_state.pow(2).sum() + out.pooler_output.sum()).backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    // A key bias shifts every score of a query alike: softmax cancels it,
    // so its gradient is zero up to rounding.
    if (p.key().find("key.bias") != std::string::npos) continue;
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
}

TEST_F(LoraTest, DropoutOnTheAdapterInputInTrainModeOnly) {
  BertModel model = make_model();
  apply_lora(model, LoraOptions{4, 8.0, 0.5, {"query"}});
  randomize_b(model);
  torch::NoGradGuard no_grad;
  model->train();
  // Hidden and attention dropout are 0 here: only the adapter's dropout is random.
  EXPECT_FALSE(torch::equal(run(model).last_hidden_state, run(model).last_hidden_state));
  model->eval();
  EXPECT_TRUE(torch::equal(run(model).last_hidden_state, run(model).last_hidden_state));
}

TEST_F(LoraTest, TargetErrors) {
  BertModel model = make_model();
  EXPECT_THAT(
      [&] {
        apply_lora(model, LoraOptions{8, 16, 0, {"qurey"}});
      },
      ::testing::ThrowsMessage<Error>(HasSubstr("LoRA target 'qurey' matches no module")));
  EXPECT_THAT(
      [&] {
        apply_lora(model, LoraOptions{8, 16, 0, {"LayerNorm"}});
      },
      ::testing::ThrowsMessage<Error>(HasSubstr("which is not a Linear layer")));
  EXPECT_THROW(apply_lora(model, LoraOptions{-1}), Error);
  EXPECT_THROW(apply_lora(model, LoraOptions{4, 16, 1.0}), Error);
  EXPECT_THROW(apply_lora(model, LoraOptions{4, 16, 0, {}}), Error);
  // Nothing was changed by the failed calls.
  EXPECT_TRUE(lora_adapted_modules(*model).empty());
  EXPECT_EQ(lora_trainable_parameters(*model).size(), model->parameters().size());
  // Full module paths work; a second apply_lora is refused.
  EXPECT_THAT(apply_lora(model, LoraOptions{2, 4, 0, {"encoder.layer.1.attention.self.key", "pooler.dense"}}),
              ElementsAre("encoder.layer.1.attention.self.key", "pooler.dense"));
  EXPECT_THAT([&] { apply_lora(model, LoraOptions{}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("already has LoRA adapters")));
}

TEST_F(LoraTest, PeftRoundTripWithPeftNames) {
  BertModel model = make_model(torch::kFloat);
  auto base_copy = std::dynamic_pointer_cast<BertModelImpl>(model->clone());
  auto base_copy2 = std::dynamic_pointer_cast<BertModelImpl>(model->clone());
  LoraOptions options{4, 8.0, 0.05, {"query", "value"}};
  apply_lora(model, options);
  randomize_b(model);
  model->eval();
  save_peft_adapter(path("adapter"), model, options, "tiny-bert");

  SafetensorsFile file = read_safetensors(path("adapter/adapter_model.safetensors"));
  std::vector<std::string> names;
  for (const auto& item : file.tensors) names.push_back(item.first);
  EXPECT_THAT(names, ElementsAre("base_model.model.encoder.layer.0.attention.self.query.lora_A.weight",
                                 "base_model.model.encoder.layer.0.attention.self.query.lora_B.weight",
                                 "base_model.model.encoder.layer.0.attention.self.value.lora_A.weight",
                                 "base_model.model.encoder.layer.0.attention.self.value.lora_B.weight",
                                 "base_model.model.encoder.layer.1.attention.self.query.lora_A.weight",
                                 "base_model.model.encoder.layer.1.attention.self.query.lora_B.weight",
                                 "base_model.model.encoder.layer.1.attention.self.value.lora_A.weight",
                                 "base_model.model.encoder.layer.1.attention.self.value.lora_B.weight"));
  EXPECT_EQ(file.tensors.at("base_model.model.encoder.layer.0.attention.self.query.lora_A.weight").sizes(),
            (std::vector<std::int64_t>{4, 16}));
  EXPECT_EQ(file.tensors.at("base_model.model.encoder.layer.1.attention.self.value.lora_B.weight").sizes(),
            (std::vector<std::int64_t>{16, 4}));
  EXPECT_EQ(file.metadata.at("format"), "pt");

  std::ifstream in(path("adapter/adapter_config.json"));
  nlohmann::json config = nlohmann::json::parse(in);
  EXPECT_EQ(config.at("peft_type"), "LORA");
  EXPECT_EQ(config.at("r"), 4);
  EXPECT_EQ(config.at("lora_alpha"), 8);
  EXPECT_EQ(config.at("lora_dropout"), 0.05);
  EXPECT_EQ(config.at("target_modules"), nlohmann::json({"query", "value"}));
  EXPECT_EQ(config.at("bias"), "none");
  EXPECT_TRUE(config.at("task_type").is_null());
  EXPECT_EQ(config.at("base_model_name_or_path"), "tiny-bert");
  EXPECT_EQ(config.at("fan_in_fan_out"), false);
  EXPECT_EQ(config.at("inference_mode"), true);

  // Into the same base without adapters: identical adapter, identical outputs.
  BertModel other(base_copy);
  other->eval();
  LoraOptions read = load_peft_adapter(path("adapter"), other);
  EXPECT_EQ(read.r, 4);
  EXPECT_EQ(read.alpha, 8.0);
  EXPECT_EQ(read.dropout, 0.05);
  EXPECT_EQ(read.target_modules, options.target_modules);
  EXPECT_EQ(lora_adapted_modules(*other), kQueryValue);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(run(model).last_hidden_state, run(other).last_hidden_state));
  // Into a model that already has matching adapters: values replaced.
  BertModel third(base_copy2);
  third->eval();
  apply_lora(third, options);
  load_peft_adapter(path("adapter"), third);
  EXPECT_TRUE(torch::equal(run(model).last_hidden_state, run(third).last_hidden_state));
}

TEST_F(LoraTest, PeftLoadValidates) {
  BertModel model = make_model(torch::kFloat);
  auto base = std::dynamic_pointer_cast<BertModelImpl>(model->clone());
  LoraOptions options{4, 8.0, 0.0, {"query", "value"}};
  apply_lora(model, options);
  save_peft_adapter(path("ok"), model, options, "base");

  // Existing adapters of another rank.
  BertModel r2(std::dynamic_pointer_cast<BertModelImpl>(base->clone()));
  apply_lora(r2, LoraOptions{2, 8.0, 0.0, {"query", "value"}});
  EXPECT_THAT([&] { load_peft_adapter(path("ok"), r2); },
              ::testing::ThrowsMessage<Error>(HasSubstr("has r 2 alpha 8, expected r 4 alpha 8")));

  // A missing tensor and a wrong shape, named.
  auto tensors = read_safetensors(path("ok/adapter_model.safetensors")).tensors;
  tensors.erase("base_model.model.encoder.layer.1.attention.self.value.lora_B.weight");
  tensors["base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"] = torch::zeros({3, 16});
  fs::create_directories(path("bad"));
  fs::copy_file(path("ok/adapter_config.json"), path("bad/adapter_config.json"));
  write_safetensors(path("bad/adapter_model.safetensors"), tensors);
  BertModel fresh(std::dynamic_pointer_cast<BertModelImpl>(base->clone()));
  try {
    load_peft_adapter(path("bad"), fresh);
    FAIL() << "loaded a broken adapter";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr("missing tensor(s): "
                                    "'base_model.model.encoder.layer.1.attention.self.value.lora_B.weight'"));
    EXPECT_THAT(e.what(),
                HasSubstr("tensor 'base_model.model.encoder.layer.0.attention.self.query.lora_A.weight': "
                          "expected shape [4, 16] (r = 4), found [3, 16]"));
  }

  // adapter_config.json keys.
  auto write_config = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    return ::llmrec::testing::load_edited_peft(path("ok"), path(name), BertModel(base), edit);
  };
  EXPECT_THAT(write_config("regex", [](auto& c) { c["target_modules"] = ".*query"; }),
              HasSubstr("'target_modules' is the regular expression"));
  EXPECT_THAT(write_config("rslora", [](auto& c) { c["use_rslora"] = true; }), HasSubstr("'use_rslora'"));
  EXPECT_THAT(write_config("prefix", [](auto& c) { c["peft_type"] = "PREFIX_TUNING"; }),
              HasSubstr("'peft_type'"));
  EXPECT_THAT(write_config("bias", [](auto& c) { c["bias"] = "all"; }), HasSubstr("'bias'"));
  EXPECT_THAT(write_config("norank", [](auto& c) { c.erase("r"); }),
              HasSubstr("'r' must be an integer >= 1"));
  EXPECT_THAT(write_config("target", [](auto& c) { c["target_modules"] = nlohmann::json::array({"qkv"}); }),
              HasSubstr("LoRA target 'qkv' matches no module"));
  EXPECT_THAT(write_config("ok2", [](auto&) {}), ::testing::IsEmpty());

  // Pickles are refused.
  fs::create_directories(path("pickle"));
  fs::copy_file(path("ok/adapter_config.json"), path("pickle/adapter_config.json"));
  std::ofstream(path("pickle/adapter_model.bin")) << "pickle";
  BertModel m(std::dynamic_pointer_cast<BertModelImpl>(base->clone()));
  EXPECT_THAT([&] { load_peft_adapter(path("pickle"), m); },
              ::testing::ThrowsMessage<IoError>(HasSubstr("never unpickles")));
}

TEST_F(LoraTest, SaveRequiresMatchingOptions) {
  BertModel model = make_model(torch::kFloat);
  apply_lora(model, LoraOptions{4, 8.0, 0.0, {"query", "value"}});
  EXPECT_THAT(
      [&] {
        save_peft_adapter(path("x"), model, LoraOptions{4, 8.0, 0.0, {"query"}}, "b");
      },
      ::testing::ThrowsMessage<Error>(HasSubstr("adapted but not targeted")));
  EXPECT_THAT(
      [&] {
        save_peft_adapter(path("x"), model, LoraOptions{8, 8.0, 0.0, {"query", "value"}}, "b");
      },
      ::testing::ThrowsMessage<Error>(HasSubstr("expected r 8")));
  EXPECT_THROW(save_peft_adapter(path("x"), model, LoraOptions{0}, "b"), Error);
  EXPECT_FALSE(fs::exists(path("x/adapter_config.json")));
}

TEST_F(LoraTest, MergedHfDirectoryRoundTrip) {
  BertModel model = make_model(torch::kFloat);
  apply_lora(model, LoraOptions{4, 8.0, 0.0, {"query", "value", "dense"}});
  randomize_b(model);
  model->eval();
  {
    std::ofstream vocab(path("vocab.txt"));
    for (int i = 0; i < 40; ++i) vocab << "tok" << i << "\n";
  }
  BertConfig config = model->config();
  save_hf_directory(path("merged"), model, config, path("vocab.txt"));
  // The model itself is untouched: adapters active and unmerged.
  EXPECT_EQ(lora_adapted_modules(*model).size(), 2u * 5 + 1);
  EXPECT_FALSE(model->encoder->layer->at<BertLayerImpl>(0).attention->self->query->merged());

  auto tensors = read_safetensors(path("merged/model.safetensors")).tensors;
  EXPECT_EQ(tensors.size(), 39u);  // the HF tensors of a 2-layer BertModel, no lora_*
  for (const auto& item : tensors) {
    EXPECT_EQ(item.first.find("lora"), std::string::npos) << item.first;
    EXPECT_EQ(item.second.scalar_type(), torch::kFloat) << item.first;
  }
  EXPECT_TRUE(fs::exists(path("merged/vocab.txt")));

  HfBert loaded = load_hf_bert(path("merged"));
  EXPECT_EQ(loaded.config.to_json(), config.to_json());
  EXPECT_EQ(loaded.vocab_path, path("merged/vocab.txt"));
  loaded.model->eval();
  torch::NoGradGuard no_grad;
  BertOutput want = run(model);
  BertOutput got = run(loaded.model);
  EXPECT_TRUE(torch::allclose(got.last_hidden_state, want.last_hidden_state, 0, 1e-5));
  EXPECT_TRUE(torch::allclose(got.pooler_output, want.pooler_output, 0, 1e-5));
  // And it differs from the base model: the adapters are in the weights.
  BertModel base = make_model(torch::kFloat);
  base->eval();
  EXPECT_GT((run(base).last_hidden_state - got.last_hidden_state).abs().max().item<double>(), 1e-3);
  // A merged model saves the same weights.
  merge_lora(*model);
  save_hf_directory(path("merged2"), model, config, "");
  auto again = read_safetensors(path("merged2/model.safetensors")).tensors;
  for (const auto& item : tensors)
    EXPECT_TRUE(torch::allclose(item.second, again.at(item.first), 0, 1e-6)) << item.first;
  EXPECT_FALSE(fs::exists(path("merged2/vocab.txt")));
}

}  // namespace
}  // namespace llmrec
