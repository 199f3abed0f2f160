// HF model directory -> BertModel (see hf_loader.h).
#include "models/hf_loader.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/error.h"
#include "models/lora.h"
#include "models/safetensors.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;

/// Longest list of names one error message shows per kind of problem.
constexpr std::size_t kMaxListedNames = 20;
constexpr const char* kDefaultWeights = "model.safetensors";
constexpr const char* kShardIndex = "model.safetensors.index.json";

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// File tensor name -> BertModel parameter name (bert. prefix, gamma/beta).
std::string hf_name(const std::string& file_name) {
  std::string name = starts_with(file_name, "bert.") ? file_name.substr(5) : file_name;
  if (ends_with(name, "LayerNorm.gamma")) return name.substr(0, name.size() - 5) + "weight";
  if (ends_with(name, "LayerNorm.beta")) return name.substr(0, name.size() - 4) + "bias";
  return name;
}

/// Tensors HF itself skips when loading a BertModel.
bool ignorable(const std::string& file_name, const std::string& name, bool has_pooler) {
  return starts_with(file_name, "cls.") || name == "embeddings.position_ids" ||
         name == "embeddings.token_type_ids" || (!has_pooler && starts_with(name, "pooler."));
}

std::string shape_text(const torch::Tensor& t) {
  return fmt::format("[{}]", fmt::join(t.sizes(), ", "));
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < kMaxListedNames; ++i)
    out += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > kMaxListedNames) out += fmt::format(" and {} more", names.size() - kMaxListedNames);
  return out;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open for reading", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// The safetensors files of a sharded checkpoint, from its index.
std::vector<fs::path> shard_files(const fs::path& index_path) {
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(read_text(index_path));
  } catch (const nlohmann::json::exception& e) {
    throw IoError(fmt::format("{}: not valid JSON: {}", index_path.string(), e.what()));
  }
  auto map = index.find("weight_map");
  if (!index.is_object() || map == index.end() || !map->is_object()) {
    throw IoError(fmt::format("{}: no 'weight_map' object", index_path.string()));
  }
  std::set<std::string> files;
  for (const auto& item : map->items()) {
    if (!item.value().is_string()) {
      throw IoError(
          fmt::format("{}: 'weight_map' entry '{}' is not a file name", index_path.string(), item.key()));
    }
    const std::string file = item.value().get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos ||
        file == "." || file == "..") {
      throw IoError(fmt::format("{}: 'weight_map' entry '{}' names '{}', not a file of this directory",
                                index_path.string(), item.key(), file));
    }
    files.insert(file);
  }
  std::vector<fs::path> out;
  for (const auto& f : files) out.push_back(index_path.parent_path() / f);
  return out;
}

[[noreturn]] void refuse_missing_weights(const fs::path& dir, const fs::path& weights) {
  for (const char* pickle : {"pytorch_model.bin", "pytorch_model.bin.index.json"}) {
    if (fs::exists(dir / pickle)) {
      throw IoError(
          fmt::format("{}: has {} but no {}: llmrec never unpickles (a .bin checkpoint is a Python pickle, "
                      "which can run code "
                      "when loaded). Convert it once, in Python, where you trust the file: "
                      "`import torch; from safetensors.torch import save_file; "
                      "sd = torch.load('pytorch_model.bin', map_location='cpu'); "
                      "save_file({{k: v.contiguous() for k, v in sd.items()}}, 'model.safetensors', "
                      "metadata={{'format': 'pt'}})` "
                      "(or `save_pretrained(..., safe_serialization=True)` with transformers)",
                      dir.string(), pickle, weights.filename().string()));
    }
  }
  throw IoError(fmt::format("{}: no {} (an HF model directory needs config.json and model.safetensors)",
                            dir.string(), weights.filename().string()));
}

}  // namespace

std::vector<std::string> bert_load_tensors(BertModelImpl& model,
                                           const std::map<std::string, torch::Tensor>& tensors,
                                           const std::string& source, bool allow_unexpected) {
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : model.named_parameters()) {
    if (!is_lora_parameter_name(p.key())) params.emplace(p.key(), p.value());
  }

  std::map<std::string, std::string> found;  // parameter name -> file name
  std::vector<std::string> problems;
  std::vector<std::string> ignored;
  std::vector<std::string> unexpected;
  for (const auto& item : tensors) {
    const std::string& file_name = item.first;
    const std::string name = hf_name(file_name);
    if (params.count(name) != 0) {
      auto [it, inserted] = found.emplace(name, file_name);
      if (!inserted) {
        problems.push_back(fmt::format("tensors '{}' and '{}' both give '{}'", it->second, file_name, name));
      }
    } else if (ignorable(file_name, name, model.has_pooler())) {
      ignored.push_back(file_name);
    } else {
      unexpected.push_back(file_name);
    }
  }
  std::vector<std::string> missing;
  bool pooler_missing = false;
  for (const auto& [name, param] : params) {
    auto it = found.find(name);
    if (it == found.end()) {
      missing.push_back(name);
      pooler_missing = pooler_missing || starts_with(name, "pooler.");
      continue;
    }
    const torch::Tensor& t = tensors.at(it->second);
    if (t.sizes() != param.sizes()) {
      problems.push_back(fmt::format("tensor '{}': expected shape {} (from config.json), found {}",
                                     it->second, shape_text(param), shape_text(t)));
    } else if (!t.is_floating_point()) {
      problems.push_back(fmt::format("tensor '{}': dtype {} is not floating point", it->second,
                                     c10::toString(t.scalar_type())));
    }
  }

  if (!missing.empty()) {
    problems.push_back(
        fmt::format("{} missing tensor(s): {}{}", missing.size(), quoted_list(missing),
                    pooler_missing ? " (a checkpoint without a pooler loads with add_pooler = false)" : ""));
  }
  if (!unexpected.empty()) {
    if (allow_unexpected) {
      spdlog::warn("{}: ignoring {} unexpected tensor(s): {}", source, unexpected.size(),
                   quoted_list(unexpected));
    } else {
      problems.push_back(fmt::format(
          "{} unexpected tensor(s), neither a BertModel weight nor a known extra (position_ids, cls.*): {}",
          unexpected.size(), quoted_list(unexpected)));
    }
  }
  if (!problems.empty()) {
    std::string message = fmt::format("{}: the tensors do not match the BertModel of config.json:", source);
    for (const auto& p : problems) message += "\n  " + p;
    throw IoError(message);
  }

  torch::NoGradGuard no_grad;
  for (auto& [name, param] : params) param.copy_(tensors.at(found.at(name)));
  if (!ignored.empty()) {
    spdlog::info("{}: skipped {} tensor(s) HF BertModel does not use: {}", source, ignored.size(),
                 quoted_list(ignored));
  }
  return ignored;
}

HfBert load_hf_bert(const std::string& dir, const HfBertLoadOptions& options) {
  const fs::path root(dir);
  if (!c10::isFloatingType(options.dtype)) {
    throw Error(fmt::format("load_hf_bert({}): dtype {} is not a floating-point type", dir,
                            c10::toString(options.dtype)));
  }
  if (!fs::is_directory(root))
    throw IoError(fmt::format("{}: not a directory (expected an HF model directory)", dir));

  HfBert out;
  out.dir = dir;
  out.config = BertConfig::from_json_file((root / "config.json").string());

  const fs::path weights = root / options.weights_file;
  std::vector<fs::path> files;
  if (fs::exists(weights)) {
    files.push_back(weights);
  } else if (options.weights_file == kDefaultWeights && fs::exists(root / kShardIndex)) {
    files = shard_files(root / kShardIndex);
  } else {
    refuse_missing_weights(root, weights);
  }

  std::map<std::string, torch::Tensor> tensors;
  std::string source;
  for (const auto& f : files) {
    SafetensorsFile file = read_safetensors(f.string());
    for (auto& [name, t] : file.tensors) {
      if (!tensors.emplace(name, t).second) {
        throw IoError(fmt::format("{}: tensor '{}' is also in another shard", f.string(), name));
      }
    }
    out.weights_paths.push_back(f.string());
    source += (source.empty() ? "" : ", ") + f.string();
  }

  out.model = BertModel(out.config, options.add_pooler);
  out.model->to(options.dtype);
  out.ignored_tensors = bert_load_tensors(*out.model, tensors, source, options.allow_unexpected);
  for (const auto& name : out.ignored_tensors) {
    if (name.rfind("cls.", 0) == 0) out.head_tensors.emplace(name, tensors.at(name));
  }

  const fs::path vocab = root / "vocab.txt";
  if (fs::is_regular_file(vocab)) out.vocab_path = vocab.string();
  return out;
}

}  // namespace llmrec
