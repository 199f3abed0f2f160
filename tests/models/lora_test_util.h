#pragma once
// The adapters' tests: a small BERT, and PEFT directories with an edited
// adapter_config.json for the loaders.
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "models/lora.h"

namespace llmrec::testing {

/// 2 layers of width 16 over 40 tokens, without dropout.
inline BertConfig small_bert_config() {
  BertConfig c;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 24;
  c.max_position_embeddings = 10;
  c.hidden_dropout_prob = 0.0;
  c.attention_probs_dropout_prob = 0.0;
  return c;
}

/// Copies the PEFT directory `ok` to `dir` with its adapter_config.json
/// changed by `edit`, and loads that into a clone of `base`: the error's
/// message, or "" when it loads.
inline std::string load_edited_peft(const std::string& ok, const std::string& dir, const BertModel& base,
                                    const std::function<void(nlohmann::json&)>& edit) {
  namespace fs = std::filesystem;
  std::ifstream in(fs::path(ok) / "adapter_config.json");
  nlohmann::json c = nlohmann::json::parse(in);
  edit(c);
  fs::create_directories(dir);
  std::ofstream(fs::path(dir) / "adapter_config.json") << c.dump();
  fs::copy_file(fs::path(ok) / "adapter_model.safetensors", fs::path(dir) / "adapter_model.safetensors");
  BertModel m(std::dynamic_pointer_cast<BertModelImpl>(base->clone()));
  try {
    load_peft_adapter(dir, m);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace llmrec::testing
