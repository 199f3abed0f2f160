// The `model:` configuration section: defaults are bench-tiny, every key is
// documented, values are range/choice checked while reading, and the
// constraints between keys are checked by validate().
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/config.h"
#include "models/model_config.h"

namespace llmrec {
namespace {

using ::testing::HasSubstr;

struct Root {
  ModelConfig model;
  template <class V>
  void visit(V& v) {
    v.section("model", model, "Model");
  }
};

ModelConfig read(const std::string& yaml) {
  Root root;
  ConfigReader::read(config_parse_string(yaml, "test.yaml"), root);
  return root.model;
}

std::string error_of(const std::string& yaml) {
  try {
    read(yaml);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ModelConfig, DefaultsAreBenchTinyButTrainOnAnyDataset) {
  const ModelConfig m;
  EXPECT_EQ(m.type, "bert_attn");
  EXPECT_EQ(m.dim, 128);
  EXPECT_EQ(m.text_len, 32);
  EXPECT_FALSE(m.item_id_embedding);
  EXPECT_EQ(m.bert.pretrained, "");
  EXPECT_EQ(m.bert.layers, 2);
  EXPECT_EQ(m.bert.hidden, 128);
  EXPECT_EQ(m.bert.heads, 2);
  EXPECT_EQ(m.bert.intermediate, 512);
  EXPECT_EQ(m.bert.vocab_size, 0);  // the dataset's
  EXPECT_EQ(m.bert.max_positions, 512);
  EXPECT_EQ(m.bert.dropout, 0.0);
  EXPECT_FALSE(m.bert.add_pooler);
  EXPECT_EQ(m.lora.r, 0);  // no adapters over a random encoder
  EXPECT_EQ(m.lora.alpha, 16.0);
  EXPECT_EQ(m.lora.dropout, 0.0);
  EXPECT_EQ(m.lora.targets, (std::vector<std::string>{"query", "value"}));
  EXPECT_EQ(m.user.history, 20);
  EXPECT_EQ(m.user.heads, 2);
  EXPECT_EQ(m.user.layers, 0);
  EXPECT_EQ(m.loss.negatives, "in_batch");
  EXPECT_EQ(m.loss.sampled_negatives, 0);
  EXPECT_FALSE(m.loss.logq_correction);
  EXPECT_EQ(m.loss.temperature, 1.0);
  EXPECT_NO_THROW(m.validate());
}

TEST(ModelConfig, EveryKeyIsDocumented) {
  const auto keys = ConfigSchema::list(Root{});
  EXPECT_GE(keys.size(), 30u);
  for (const auto& k : keys) EXPECT_FALSE(k.doc.empty()) << k.key;
  auto has = [&](const std::string& key) {
    for (const auto& k : keys) {
      if (k.key == key) return true;
    }
    return false;
  };
  for (const char* key : {"model.bert.pretrained", "model.lora.targets", "model.user.layers",
                          "model.loss.logq_correction", "model.loss.temperature", "model.id_dropout"}) {
    EXPECT_TRUE(has(key)) << key;
  }
}

TEST(ModelConfig, ReadsAndChecksValues) {
  const ModelConfig m = read(
      "model:\n  dim: 64\n  user: {history: 50, layers: 2}\n  lora: {r: 0, targets: [query, key]}\n"
      "  loss: {negatives: batch_items, temperature: 0.05}\n");
  EXPECT_EQ(m.dim, 64);
  EXPECT_EQ(m.user.history, 50);
  EXPECT_EQ(m.user.layers, 2);
  EXPECT_EQ(m.lora.r, 0);
  EXPECT_EQ(m.lora.targets, (std::vector<std::string>{"query", "key"}));
  EXPECT_EQ(m.loss.negatives, "batch_items");
  EXPECT_EQ(m.loss.temperature, 0.05);

  EXPECT_THAT(error_of("model:\n  loss: {negatives: in_batchh}\n"),
              HasSubstr("'model.loss.negatives' must be one of: in_batch, batch_items"));
  EXPECT_THAT(error_of("model:\n  user: {layers: -1}\n"),
              HasSubstr("'model.user.layers' must be in [0, 64]"));
  EXPECT_THAT(error_of("model:\n  loss: {temperature: 0}\n"), HasSubstr("model.loss.temperature"));
  EXPECT_THAT(error_of("model:\n  id_dropout: 1.5\n"), HasSubstr("model.id_dropout"));
  EXPECT_THAT(error_of("model:\n  type: sasrec\n"), HasSubstr("model.type"));
  EXPECT_THAT(error_of("model:\n  bert: {hiden: 64}\n"), HasSubstr("model.bert.hidden"));
}

TEST(ModelConfig, ValidateNamesTheKeysThatDisagree) {
  ModelConfig m;
  m.lora.r = 8;
  m.dim = 100;
  m.user.heads = 3;
  m.bert.hidden = 130;
  m.bert.heads = 4;
  m.text_len = 600;
  m.lora.targets.clear();
  m.bert.freeze = true;  // with adapters
  try {
    m.validate();
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_THAT(what, HasSubstr("model.dim (100) must be divisible by model.user.heads (3)"));
    EXPECT_THAT(what, HasSubstr("model.bert.hidden (130) must be divisible by model.bert.heads (4)"));
    EXPECT_THAT(what, HasSubstr("model.text_len (600) exceeds model.bert.max_positions (512)"));
    EXPECT_THAT(what, HasSubstr("model.lora.targets is empty"));
    EXPECT_THAT(what, HasSubstr("model.bert.freeze needs the text encoder without adapters"));
  }
  m = ModelConfig();
  m.lora.r = 0;
  m.lora.targets.clear();  // full fine-tuning needs no targets
  EXPECT_NO_THROW(m.validate());
  m.bert.freeze = true;  // a fixed encoder: no adapters
  EXPECT_NO_THROW(m.validate());
  m.item_text = false;
  m.item_id_embedding = true;
  EXPECT_THROW(m.validate(), ConfigError);
}

}  // namespace
}  // namespace llmrec
