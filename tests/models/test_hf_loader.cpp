// The HF model-directory loader on shared/golden/tiny-bert/: the three name
// variants load identically, extras are skipped, and every other mismatch
// (missing, unexpected, mis-shaped, non-float, duplicate tensors; .bin-only
// directories; bad config.json keys) is an error naming the tensor or key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"
#include "models/hf_loader.h"
#include "models/safetensors.h"
#include "tests/shared_data.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

class HfLoaderTest : public ::testing::Test {
 protected:
  fs::path golden_;  ///< shared/golden/tiny-bert
  fs::path dir_ = fs::temp_directory_path() / ("llmrec_hf_loader_test_" + std::to_string(::getpid()));

  void SetUp() override {
    LLMREC_SKIP_WITHOUT_SHARED();
    golden_ = fs::path(::llmrec::testing::shared_dir()) / "golden" / "tiny-bert";
    ASSERT_TRUE(fs::exists(golden_ / "model.safetensors")) << "golden model missing: " << golden_.string();
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// A model directory `name` with the golden config and these tensors.
  std::string make_dir(const std::string& name, const std::map<std::string, at::Tensor>& tensors,
                       const std::string& weights_file = "model.safetensors") {
    fs::path d = dir_ / name;
    fs::create_directories(d);
    fs::copy_file(golden_ / "config.json", d / "config.json", fs::copy_options::overwrite_existing);
    if (!tensors.empty()) write_safetensors((d / weights_file).string(), tensors);
    return d.string();
  }

  std::map<std::string, at::Tensor> golden_tensors() {
    return read_safetensors((golden_ / "model.safetensors").string()).tensors;
  }

  /// The IoError message of loading `d` ("" if it loaded).
  static std::string load_error(const std::string& d, const HfBertLoadOptions& options = {}) {
    try {
      load_hf_bert(d, options);
    } catch (const IoError& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(HfLoaderTest, ParameterNamesAreExactlyHfNames) {
  BertModel model(BertConfig::from_json_file((golden_ / "config.json").string()));
  std::set<std::string> names;
  for (const auto& p : model->named_parameters()) names.insert(p.key());
  std::set<std::string> file;
  for (const auto& item : golden_tensors()) file.insert(item.first);
  EXPECT_EQ(names, file);
  EXPECT_EQ(names.size(), 39u);
}

TEST_F(HfLoaderTest, PrefixedAndLegacyLoadIdentically) {
  HfBert plain = load_hf_bert(golden_.string());
  EXPECT_EQ(plain.ignored_tensors.size(), 0u);
  EXPECT_EQ(plain.vocab_path, (golden_ / "vocab.txt").string());
  EXPECT_EQ(plain.config.hidden_size, 64);
  auto reference = golden_tensors();
  for (const auto& p : plain.model->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), reference.at(p.key()))) << p.key();
  }
  for (const char* file : {"model_prefixed.safetensors", "model_legacy.safetensors"}) {
    SCOPED_TRACE(file);
    HfBertLoadOptions options;
    options.weights_file = file;
    HfBert other = load_hf_bert(golden_.string(), options);
    for (const auto& p : other.model->named_parameters()) {
      EXPECT_TRUE(torch::equal(p.value(), reference.at(p.key()))) << p.key();
    }
    if (std::string(file) == "model_legacy.safetensors") {
      EXPECT_THAT(other.ignored_tensors,
                  ::testing::UnorderedElementsAre("bert.embeddings.position_ids", "cls.predictions.bias"));
    } else {
      EXPECT_TRUE(other.ignored_tensors.empty());
    }
  }
}

TEST_F(HfLoaderTest, ConvertsToTheRequestedDtype) {
  HfBertLoadOptions options;
  options.dtype = torch::kDouble;
  HfBert bert = load_hf_bert(golden_.string(), options);
  auto reference = golden_tensors();
  for (const auto& p : bert.model->named_parameters()) {
    ASSERT_EQ(p.value().scalar_type(), torch::kDouble) << p.key();
    EXPECT_TRUE(torch::equal(p.value(), reference.at(p.key()).to(torch::kDouble))) << p.key();
  }
}

TEST_F(HfLoaderTest, MissingTensorIsNamed) {
  auto tensors = golden_tensors();
  tensors.erase("encoder.layer.1.output.dense.bias");
  tensors.erase("embeddings.LayerNorm.weight");
  std::string message = load_error(make_dir("missing", tensors));
  EXPECT_THAT(message, HasSubstr("2 missing tensor(s)"));
  EXPECT_THAT(message, HasSubstr("'encoder.layer.1.output.dense.bias'"));
  EXPECT_THAT(message, HasSubstr("'embeddings.LayerNorm.weight'"));
  EXPECT_THAT(message, HasSubstr("missing/model.safetensors"));
}

TEST_F(HfLoaderTest, WrongShapeIsNamedWithBothShapes) {
  auto tensors = golden_tensors();
  tensors["encoder.layer.0.attention.self.key.weight"] = torch::zeros({64, 32});
  std::string message = load_error(make_dir("shape", tensors));
  EXPECT_THAT(message,
              HasSubstr("tensor 'encoder.layer.0.attention.self.key.weight': expected shape [64, 64] (from "
                        "config.json), found [64, 32]"));
}

TEST_F(HfLoaderTest, UnexpectedTensorIsNamedUnlessAllowed) {
  auto tensors = golden_tensors();
  tensors["encoder.layer.0.attention.self.rotary.weight"] = torch::zeros({4});
  const std::string d = make_dir("unexpected", tensors);
  std::string message = load_error(d);
  EXPECT_THAT(message, HasSubstr("1 unexpected tensor(s)"));
  EXPECT_THAT(message, HasSubstr("'encoder.layer.0.attention.self.rotary.weight'"));
  HfBertLoadOptions options;
  options.allow_unexpected = true;
  EXPECT_NO_THROW(load_hf_bert(d, options));
}

TEST_F(HfLoaderTest, NonFloatAndDuplicateTensorsAreRefused) {
  auto tensors = golden_tensors();
  tensors["pooler.dense.bias"] = torch::zeros({64}, torch::kLong);
  EXPECT_THAT(load_error(make_dir("int", tensors)), HasSubstr("tensor 'pooler.dense.bias': dtype Long"));
  tensors = golden_tensors();
  tensors["bert.pooler.dense.bias"] = tensors["pooler.dense.bias"];
  EXPECT_THAT(
      load_error(make_dir("dup", tensors)),
      HasSubstr("tensors 'bert.pooler.dense.bias' and 'pooler.dense.bias' both give 'pooler.dense.bias'"));
}

TEST_F(HfLoaderTest, PoolerIsOptional) {
  auto tensors = golden_tensors();
  // A checkpoint with a pooler loads without one: the pooler is skipped.
  HfBertLoadOptions no_pooler;
  no_pooler.add_pooler = false;
  HfBert bert = load_hf_bert(golden_.string(), no_pooler);
  EXPECT_THAT(bert.ignored_tensors,
              ::testing::UnorderedElementsAre("pooler.dense.weight", "pooler.dense.bias"));
  bert.model->eval();
  BertOutput out = bert.model->forward(torch::tensor({{101, 2000, 102}}), torch::ones({1, 3}, torch::kLong));
  EXPECT_FALSE(out.pooler_output.defined());
  EXPECT_EQ(out.last_hidden_state.sizes(), (std::vector<std::int64_t>{1, 3, 64}));
  // A checkpoint without a pooler: an error that says how to load it.
  tensors.erase("pooler.dense.weight");
  tensors.erase("pooler.dense.bias");
  const std::string d = make_dir("nopooler", tensors);
  EXPECT_THAT(load_error(d), HasSubstr("add_pooler = false"));
  EXPECT_NO_THROW(load_hf_bert(d, no_pooler));
}

TEST_F(HfLoaderTest, BinOnlyDirectoryIsRefused) {
  const std::string d = make_dir("bin", {});
  std::ofstream(fs::path(d) / "pytorch_model.bin") << "PK\x03\x04 pickle";
  std::string message = load_error(d);
  EXPECT_THAT(message, HasSubstr("pytorch_model.bin"));
  EXPECT_THAT(message, HasSubstr("never unpickles"));
  EXPECT_THAT(message, HasSubstr("save_file"));
  const std::string empty = make_dir("empty", {});
  EXPECT_THAT(load_error(empty), HasSubstr("no model.safetensors"));
  EXPECT_THAT(load_error((dir_ / "not-there").string()), HasSubstr("not a directory"));
}

TEST_F(HfLoaderTest, ShardedCheckpointLoads) {
  auto tensors = golden_tensors();
  std::map<std::string, at::Tensor> first;
  std::map<std::string, at::Tensor> second;
  nlohmann::json index;
  for (const auto& [name, t] : tensors) {
    const bool in_first = name.rfind("embeddings.", 0) == 0;
    (in_first ? first : second)[name] = t;
    index["weight_map"][name] =
        in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  const std::string d = make_dir("sharded", first, "model-00001-of-00002.safetensors");
  write_safetensors((fs::path(d) / "model-00002-of-00002.safetensors").string(), second);
  std::ofstream(fs::path(d) / "model.safetensors.index.json") << index.dump();
  HfBert bert = load_hf_bert(d);
  EXPECT_EQ(bert.weights_paths.size(), 2u);
  for (const auto& p : bert.model->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), tensors.at(p.key())));
  // An index may not point outside its directory.
  index["weight_map"]["pooler.dense.bias"] = "../escape.safetensors";
  std::ofstream(fs::path(d) / "model.safetensors.index.json", std::ios::trunc) << index.dump();
  EXPECT_THAT(load_error(d), HasSubstr("not a file of this directory"));
}

TEST_F(HfLoaderTest, CorruptWeightsFileIsAnIoError) {
  const std::string d = make_dir("corrupt", {});
  std::ofstream(fs::path(d) / "model.safetensors", std::ios::binary) << std::string(16, '\xff');
  EXPECT_THAT(load_error(d), HasSubstr("corrupt/model.safetensors"));
}

class BertConfigTest : public HfLoaderTest {
 protected:
  /// The ConfigError/IoError message for config.json text ("" if valid).
  static std::string config_error(const std::string& text) {
    try {
      BertConfig::from_json_string(text, "dir/config.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  nlohmann::json golden_config() {
    std::ifstream in(golden_ / "config.json");
    return nlohmann::json::parse(in);
  }
};

TEST_F(BertConfigTest, ReadsTheGoldenConfig) {
  BertConfig c = BertConfig::from_json_file((golden_ / "config.json").string());
  EXPECT_EQ(c.vocab_size, 30522);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.intermediate_size, 128);
  EXPECT_EQ(c.max_position_embeddings, 64);
  EXPECT_EQ(c.type_vocab_size, 2);
  EXPECT_EQ(c.layer_norm_eps, 1e-12);
  EXPECT_EQ(c.hidden_dropout_prob, 0.1);
  EXPECT_EQ(c.hidden_act, "gelu");
  EXPECT_EQ(c.pad_token_id, 0);
  // to_json reads back to the same config.
  BertConfig back = BertConfig::from_json_string(c.to_json(), "to_json");
  EXPECT_EQ(back.to_json(), c.to_json());
}

TEST_F(BertConfigTest, ErrorsNameTheFileAndTheKey) {
  auto c = golden_config();
  c.erase("hidden_size");
  EXPECT_THAT(config_error(c.dump()), HasSubstr("dir/config.json: missing required key 'hidden_size'"));
  c = golden_config();
  c["hidden_act"] = "gelu_new";
  EXPECT_THAT(config_error(c.dump()), HasSubstr("dir/config.json: 'hidden_act' is 'gelu_new'; only 'gelu'"));
  c["hidden_act"] = "relu";
  EXPECT_THAT(config_error(c.dump()), HasSubstr("'hidden_act' is 'relu'"));
  c = golden_config();
  c["num_attention_heads"] = 5;
  EXPECT_THAT(config_error(c.dump()),
              HasSubstr("'hidden_size' 64 is not a multiple of 'num_attention_heads' 5"));
  c = golden_config();
  c["vocab_size"] = "30522";
  EXPECT_THAT(config_error(c.dump()), HasSubstr("'vocab_size' must be an integer"));
  c = golden_config();
  c["model_type"] = "roberta";
  EXPECT_THAT(config_error(c.dump()), HasSubstr("'model_type' is 'roberta'"));
  c = golden_config();
  c["position_embedding_type"] = "relative_key";
  EXPECT_THAT(config_error(c.dump()), HasSubstr("'position_embedding_type'"));
  c = golden_config();
  c["layer_norm_eps"] = 0;
  EXPECT_THAT(config_error(c.dump()), HasSubstr("'layer_norm_eps' must be > 0"));
  c = golden_config();
  c["pad_token_id"] = nullptr;
  EXPECT_EQ(config_error(c.dump()), "");
  EXPECT_THAT(config_error("{not json"), HasSubstr("dir/config.json: not valid JSON"));
  EXPECT_THROW(BertConfig::from_json_file((dir_ / "nope.json").string()), IoError);
  // The loader reports the config.json path.
  const std::string d = make_dir("badcfg", golden_tensors());
  c = golden_config();
  c["hidden_act"] = "silu";
  std::ofstream(fs::path(d) / "config.json", std::ios::trunc) << c.dump();
  try {
    load_hf_bert(d);
    FAIL() << "loaded a config with hidden_act silu";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("badcfg/config.json: 'hidden_act' is 'silu'"));
  }
}

}  // namespace
}  // namespace llmrec
