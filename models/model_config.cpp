#include "models/model_config.h"

#include <fmt/format.h>

#include <set>

#include "common/error.h"
#include "common/time_features.h"

namespace llmrec {

void ModelConfig::validate() const {
  std::vector<std::string> problems;
  if (dim % user.heads != 0) {
    problems.push_back(
        fmt::format("model.dim ({}) must be divisible by model.user.heads ({})", dim, user.heads));
  }
  if (!item_text && !item_id_embedding) {
    problems.push_back(
        "model.item_text is false and model.item_id_embedding is false: an item would have no vector; "
        "turn one of them on");
  }
  if (item_text && bert.pretrained.empty()) {
    if (bert.hidden % bert.heads != 0) {
      problems.push_back(fmt::format("model.bert.hidden ({}) must be divisible by model.bert.heads ({})",
                                     bert.hidden, bert.heads));
    }
    if (text_len > bert.max_positions) {
      problems.push_back(fmt::format("model.text_len ({}) exceeds model.bert.max_positions ({})", text_len,
                                     bert.max_positions));
    }
  }
  if (lora.adaptive.enabled && (!item_text || lora.r <= 0)) {
    problems.push_back(
        "model.lora.adaptive.enabled needs adapters: model.item_text true and model.lora.r > 0 (the "
        "initial rank)");
  }
  if (lora.adaptive.enabled && lora.adaptive.target_r > lora.r) {
    problems.push_back(
        fmt::format("model.lora.adaptive.target_r ({}) exceeds the initial rank model.lora.r ({})",
                    lora.adaptive.target_r, lora.r));
  }
  if (item_text && lora.r > 0 && lora.targets.empty()) {
    problems.push_back(
        "model.lora.targets is empty while model.lora.r > 0; name the modules to "
        "adapt (e.g. [query, value]) or set model.lora.r: 0 for full fine-tuning");
  }
  if (bert.freeze && (!item_text || lora.r > 0)) {
    problems.push_back(fmt::format(
        "model.bert.freeze needs the text encoder without adapters (model.item_text true, model.lora.r 0; "
        "got item_text {}, r {}): with r > 0 the base is frozen already and the adapters train",
        item_text, lora.r));
  }
  if (user.profile && !item_text) {
    problems.push_back(
        "model.user.profile needs the item encoder to read the profile text: set model.item_text true");
  }
  try {
    parse_time_features(user.time_features);
  } catch (const Error& e) {
    problems.push_back(fmt::format("model.user.time_features: {}", e.what()));
  }
  std::set<std::string> seen;
  for (const std::string& name : user.context_columns) {
    if (name.empty() || !seen.insert(name).second) {
      problems.push_back(fmt::format("model.user.context_columns: '{}' is empty or listed twice", name));
    }
  }
  if (problems.empty()) return;
  std::string message = "invalid model configuration:";
  for (const auto& p : problems) message += "\n  " + p;
  throw ConfigError(message);
}

}  // namespace llmrec
