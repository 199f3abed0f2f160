// LoRA on BertModel; PEFT and HF directory I/O (see lora.h).
#include "models/lora.h"

#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>

#include "common/error.h"
#include "models/safetensors.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kPeftPrefix = "base_model.model.";
constexpr const char* kAdapterConfig = "adapter_config.json";
constexpr const char* kAdapterWeights = "adapter_model.safetensors";
constexpr std::size_t kMaxListedNames = 20;

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// PEFT's rule for a list of target_modules.
bool target_matches(const std::string& module_name, const std::string& target) {
  return module_name == target || ends_with(module_name, "." + target);
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

using NamedLinear = std::pair<std::string, LoraLinearImpl*>;

std::vector<NamedLinear> linear_modules(const torch::nn::Module& model) {
  std::vector<NamedLinear> out;
  for (const auto& m : model.named_modules("", /*include_self=*/false)) {
    if (auto* linear = dynamic_cast<LoraLinearImpl*>(m.value().get())) out.emplace_back(m.key(), linear);
  }
  return out;
}

std::vector<NamedLinear> adapted_linears(const torch::nn::Module& model) {
  std::vector<NamedLinear> out;
  for (const auto& item : linear_modules(model)) {
    if (item.second->has_adapter()) out.push_back(item);
  }
  return out;
}

/// The Linear modules `targets` select, in module order. Throws when a
/// target selects nothing, or selects a module that is not a Linear.
std::vector<NamedLinear> select_targets(const torch::nn::Module& model,
                                        const std::vector<std::string>& targets) {
  std::vector<NamedLinear> out;
  std::set<std::string> linear_names;
  for (const auto& target : targets) {
    LLMREC_CHECK(!target.empty(), "LoRA target_modules contains an empty name");
  }
  for (const auto& target : targets) {
    bool matched = false;
    for (const auto& m : model.named_modules("", /*include_self=*/false)) {
      if (!target_matches(m.key(), target)) continue;
      if (dynamic_cast<LoraLinearImpl*>(m.value().get()) == nullptr) {
        throw Error(
            fmt::format("LoRA target '{}' matches '{}', which is not a Linear layer (LoRA applies to Linear "
                        "layers only)",
                        target, m.key()));
      }
      matched = true;
    }
    if (!matched) {
      std::set<std::string> last;
      for (const auto& item : linear_modules(model))
        last.insert(item.first.substr(item.first.rfind('.') + 1));
      throw Error(
          fmt::format("LoRA target '{}' matches no module of the model; its Linear layers are named {} "
                      "(e.g. {})",
                      target, fmt::join(last, ", "),
                      linear_modules(model).empty() ? "none" : linear_modules(model).front().first));
    }
  }
  for (const auto& item : linear_modules(model)) {
    for (const auto& target : targets) {
      if (target_matches(item.first, target)) {
        out.push_back(item);
        break;
      }
    }
  }
  return out;
}

void validate_options(const LoraOptions& options) {
  LLMREC_CHECK(options.r >= 0, "LoRA r must be >= 0 (0 = full fine-tuning), got {}", options.r);
  if (options.r == 0) return;
  LLMREC_CHECK(options.alpha > 0, "LoRA alpha must be positive, got {}", options.alpha);
  LLMREC_CHECK(options.dropout >= 0 && options.dropout < 1, "LoRA dropout must be in [0, 1), got {}",
               options.dropout);
  LLMREC_CHECK(!options.target_modules.empty(),
               "LoRA target_modules is empty (r = {} needs at least one target)", options.r);
}

/// Writes `text` to `path` through a temporary file and a rename.
void write_text_atomic(const fs::path& path, const std::string& text) {
  const std::string tmp = fmt::format("{}.tmp.{}", path.string(), ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError(fmt::format("{}: cannot create the temporary file {}", path.string(), tmp));
    out << text;
    out.flush();
    if (!out) {
      out.close();
      std::error_code ignored;
      fs::remove(tmp, ignored);
      throw IoError(fmt::format("{}: write to {} failed (disk full?)", path.string(), tmp));
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw IoError(fmt::format("{}: cannot rename {} into place: {}", path.string(), tmp, ec.message()));
  }
}

void make_directory(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    throw IoError(
        fmt::format("{}: cannot create directory: {}", dir.string(), ec ? ec.message() : "not a directory"));
  }
}

json read_json_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open for reading", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return json::parse(text.str());
  } catch (const json::exception& e) {
    throw IoError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
  }
}

[[noreturn]] void refuse_pickle(const fs::path& dir, const std::string& missing, const std::string& pickle) {
  throw IoError(
      fmt::format("{}: has {} but no {}: llmrec never unpickles (a .bin file is a Python pickle, which can "
                  "run code when loaded); save the adapter with safe_serialization=True (PEFT's default)",
                  dir.string(), pickle, missing));
}

/// An adapter_config.json: the adapters' options and, for AdaLoRA, the kept
/// triplets of each module (PEFT's rank_pattern: "<module>.lora_E" -> flags).
struct PeftAdapterConfig {
  LoraOptions options;
  std::map<std::string, std::vector<bool>> rank_pattern;
};

using JsonFail = std::function<void(const std::string&)>;

/// j[key] when present and not null, else nullptr.
const json* json_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

/// An integer field >= `low` (`fallback` when absent or null).
std::int64_t json_int(const json& j, const char* key, std::int64_t low, std::int64_t fallback,
                      const JsonFail& fail) {
  const json* v = json_field(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_number_integer() || v->get<std::int64_t>() < low || v->get<std::int64_t>() > 2000000000) {
    fail(fmt::format("'{}' must be an integer in [{}, 2000000000], got {}", key, low, v->dump()));
  }
  return v->get<std::int64_t>();
}

/// A number field in [low, high) (`fallback` when absent or null).
double json_number(const json& j, const char* key, double low, double high, double fallback,
                   const JsonFail& fail) {
  const json* v = json_field(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_number() || !(v->get<double>() >= low && v->get<double>() < high)) {
    fail(fmt::format("'{}' must be a number in [{}, {}), got {}", key, low, high, v->dump()));
  }
  return v->get<double>();
}

/// AdaLoraConfig's fields (PEFT's defaults where absent); init_r is the rank.
void parse_adalora_fields(const json& j, PeftAdapterConfig& c, const JsonFail& fail) {
  ModelAdaLoraConfig& a = c.options.adaptive;
  a.enabled = true;
  c.options.r = json_int(j, "init_r", 1, 12, fail);
  a.target_r = static_cast<int>(json_int(j, "target_r", 0, 8, fail));
  a.tinit = static_cast<int>(json_int(j, "tinit", 0, 0, fail));
  a.tfinal = static_cast<int>(json_int(j, "tfinal", 0, 0, fail));
  a.delta_t = static_cast<int>(json_int(j, "deltaT", 1, 1, fail));
  a.beta1 = json_number(j, "beta1", 0, 1, 0.85, fail);
  a.beta2 = json_number(j, "beta2", 0, 1, 0.85, fail);
  a.orth_reg_weight = json_number(j, "orth_reg_weight", 0, 1e6, 0.5, fail);
  a.total_step = static_cast<int>(json_int(j, "total_step", 1, 0, fail));
  const json* pattern = json_field(j, "rank_pattern");
  if (pattern == nullptr) return;
  if (!pattern->is_object()) fail(fmt::format("'rank_pattern' must be an object, got {}", pattern->dump()));
  for (const auto& [name, flags] : pattern->items()) {
    if (!flags.is_array() || static_cast<std::int64_t>(flags.size()) != c.options.r) {
      fail(fmt::format("'rank_pattern' entry '{}' must list {} booleans (init_r), got {}", name, c.options.r,
                       flags.dump()));
    }
    std::vector<bool> keep;
    for (const auto& f : flags) {
      if (!f.is_boolean())
        fail(fmt::format("'rank_pattern' entry '{}' has {}, not a boolean", name, f.dump()));
      keep.push_back(f.get<bool>());
    }
    c.rank_pattern[name] = std::move(keep);
  }
}

/// Features of PEFT's LoraConfig that llmrec's adapters do not have: refused.
void refuse_unsupported(const json& j, bool adaptive, const JsonFail& fail) {
  if (const json* bias = json_field(j, "bias"); bias != nullptr && *bias != "none") {
    fail(fmt::format("'bias' is {}; only \"none\" is supported (no trained biases)", bias->dump()));
  }
  for (const char* key : {"fan_in_fan_out", "use_rslora", "use_dora"}) {
    if (const json* v = json_field(j, key); v != nullptr && *v != false) {
      fail(fmt::format("'{}' is {}; this feature is not supported", key, v->dump()));
    }
  }
  if (const json* v = json_field(j, "layers_to_transform"); v != nullptr) {
    fail(fmt::format("'layers_to_transform' is {}; adapters on a subset of layers are not supported",
                     v->dump()));
  }
  if (const json* v = json_field(j, "modules_to_save"); v != nullptr && !(v->is_array() && v->empty())) {
    fail(fmt::format("'modules_to_save' is {}; fully trained extra modules are not supported", v->dump()));
  }
  // AdaLoRA's rank_pattern is its own (parse_adalora_fields).
  const std::vector<const char*> patterns = adaptive
                                                ? std::vector<const char*>{"alpha_pattern"}
                                                : std::vector<const char*>{"rank_pattern", "alpha_pattern"};
  for (const char* key : patterns) {
    if (const json* v = json_field(j, key); v != nullptr && !(v->is_object() && v->empty())) {
      fail(fmt::format("'{}' is {}; per-module ranks or alphas are not supported", key, v->dump()));
    }
  }
}

PeftAdapterConfig parse_adapter_config(const json& j, const std::string& where) {
  const JsonFail fail = [&](const std::string& message) {
    throw ConfigError(fmt::format("{}: {}", where, message));
  };
  if (!j.is_object()) fail("not a JSON object");
  PeftAdapterConfig c;
  LoraOptions& o = c.options;
  const json* peft_type = json_field(j, "peft_type");
  const std::string type =
      peft_type != nullptr && peft_type->is_string() ? peft_type->get<std::string>() : "";
  if (type != "LORA" && type != "ADALORA") {
    fail(fmt::format("'peft_type' is {}, expected \"LORA\" or \"ADALORA\"",
                     peft_type ? peft_type->dump() : "missing"));
  }
  if (type == "ADALORA") {
    parse_adalora_fields(j, c, fail);
  } else {
    const json* r = json_field(j, "r");
    if (r == nullptr || !r->is_number_integer() || r->get<std::int64_t>() < 1 ||
        r->get<std::int64_t>() > 2000000000) {
      fail(fmt::format("'r' must be an integer >= 1, got {}", r ? r->dump() : "nothing"));
    }
    o.r = r->get<std::int64_t>();
  }
  const json* alpha = json_field(j, "lora_alpha");
  if (alpha == nullptr || !alpha->is_number() || !(alpha->get<double>() > 0)) {
    fail(fmt::format("'lora_alpha' must be a positive number, got {}", alpha ? alpha->dump() : "nothing"));
  }
  o.alpha = alpha->get<double>();
  o.dropout = json_number(j, "lora_dropout", 0, 1, 0.0, fail);
  const json* targets = json_field(j, "target_modules");
  if (targets == nullptr) {
    fail("'target_modules' is missing or null; list the module names (e.g. [\"query\", \"value\"])");
  }
  if (targets->is_string()) {
    fail(
        fmt::format("'target_modules' is the regular expression {}; only a list of module names is supported",
                    targets->dump()));
  }
  if (!targets->is_array() || targets->empty())
    fail("'target_modules' must be a non-empty list of module names");
  o.target_modules.clear();
  for (const auto& t : *targets) {
    if (!t.is_string() || t.get<std::string>().empty()) {
      fail(fmt::format("'target_modules' entry {} is not a module name", t.dump()));
    }
    o.target_modules.push_back(t.get<std::string>());
  }
  refuse_unsupported(j, type == "ADALORA", fail);
  return c;
}

/// Checks that the model's adapters are what `options` describes.
void check_adapters_match(const BertModel& model, const LoraOptions& options, const std::string& context) {
  std::vector<NamedLinear> adapted = adapted_linears(*model);
  std::vector<NamedLinear> selected = select_targets(*model, options.target_modules);
  std::vector<std::string> have;
  std::vector<std::string> want;
  for (const auto& a : adapted) have.push_back(a.first);
  for (const auto& s : selected) want.push_back(s.first);
  if (have != want) {
    std::sort(have.begin(), have.end());
    std::sort(want.begin(), want.end());
    std::vector<std::string> extra;
    std::vector<std::string> absent;
    std::set_difference(have.begin(), have.end(), want.begin(), want.end(), std::back_inserter(extra));
    std::set_difference(want.begin(), want.end(), have.begin(), have.end(), std::back_inserter(absent));
    throw Error(fmt::format(
        "{}: target_modules [{}] do not select the model's adapters (adapted but not targeted: "
        "{}; targeted but without an adapter: {})",
        context, fmt::join(options.target_modules, ", "), extra.empty() ? "none" : quoted_list(extra),
        absent.empty() ? "none" : quoted_list(absent)));
  }
  for (const auto& [name, linear] : adapted) {
    const LoraAdapterOptions& a = linear->adapter();
    if (a.r() != options.r || a.alpha() != options.alpha || a.adaptive() != options.adaptive.enabled) {
      throw Error(fmt::format("{}: adapter '{}' has r {} alpha {}{}, expected r {} alpha {}{}", context, name,
                              a.r(), a.alpha(), a.adaptive() ? " (AdaLoRA)" : "", options.r, options.alpha,
                              options.adaptive.enabled ? " (AdaLoRA)" : ""));
    }
  }
}

}  // namespace

bool is_lora_parameter_name(const std::string& name) {
  std::size_t begin = 0;
  while (begin <= name.size()) {
    std::size_t end = name.find('.', begin);
    if (end == std::string::npos) end = name.size();
    const std::string part = name.substr(begin, end - begin);
    if (part == "lora_A" || part == "lora_B" || part == "lora_E") return true;
    begin = end + 1;
  }
  return false;
}

LoraOptions lora_options(const ModelLoraConfig& config) {
  LoraOptions o;
  o.r = config.r;
  o.alpha = config.alpha;
  o.dropout = config.dropout;
  o.target_modules = config.targets;
  o.adaptive = config.adaptive;
  return o;
}

std::vector<std::string> apply_lora(BertModel& model, const LoraOptions& options) {
  validate_options(options);
  std::vector<NamedLinear> existing = adapted_linears(*model);
  if (!existing.empty()) {
    throw Error(fmt::format("apply_lora: the model already has LoRA adapters (on {})", quoted_list([&] {
                              std::vector<std::string> names;
                              for (const auto& e : existing) names.push_back(e.first);
                              return names;
                            }())));
  }
  if (options.r == 0) {
    for (auto& p : model->parameters()) p.requires_grad_(true);
    return {};
  }
  std::vector<NamedLinear> selected = select_targets(*model, options.target_modules);
  for (auto& p : model->parameters()) p.requires_grad_(false);
  std::vector<std::string> names;
  for (auto& [name, linear] : selected) {
    linear->add_adapter(LoraAdapterOptions(options.r)
                            .alpha(options.alpha)
                            .dropout(options.dropout)
                            .adaptive(options.adaptive.enabled));
    names.push_back(name);
  }
  return names;
}

std::vector<std::string> lora_adapted_modules(const torch::nn::Module& model) {
  std::vector<std::string> names;
  for (const auto& item : adapted_linears(model)) names.push_back(item.first);
  return names;
}

void merge_lora(torch::nn::Module& module) {
  for (auto& item : adapted_linears(module)) item.second->merge();
}

void unmerge_lora(torch::nn::Module& module) {
  for (auto& item : adapted_linears(module)) item.second->unmerge();
}

torch::OrderedDict<std::string, torch::Tensor> lora_trainable_parameters(const torch::nn::Module& module) {
  torch::OrderedDict<std::string, torch::Tensor> out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    if (p.value().requires_grad()) out.insert(p.key(), p.value());
  }
  return out;
}

void save_peft_adapter(const std::string& dir, const BertModel& model, const LoraOptions& options,
                       const std::string& base_model_name_or_path) {
  validate_options(options);
  const std::string context = fmt::format("save_peft_adapter({})", dir);
  if (options.r == 0) {
    throw Error(
        fmt::format("{}: r = 0 is full fine-tuning, which has no adapter; use save_hf_directory", context));
  }
  std::vector<NamedLinear> adapted = adapted_linears(*model);
  if (adapted.empty())
    throw Error(fmt::format("{}: the model has no LoRA adapters (apply_lora first)", context));
  check_adapters_match(model, options, context);
  for (const auto& [name, linear] : adapted) {
    if (linear->adapter().dropout() != options.dropout) {
      throw Error(fmt::format("{}: adapter '{}' has dropout {}, options say {}", context, name,
                              linear->adapter().dropout(), options.dropout));
    }
  }

  std::map<std::string, at::Tensor> tensors;
  json rank_pattern = json::object();
  for (const auto& [name, linear] : adapted) {
    if (!options.adaptive.enabled) {
      tensors[kPeftPrefix + name + ".lora_A.weight"] =
          linear->lora_A->weight.detach().to(torch::kCPU, torch::kFloat);
      tensors[kPeftPrefix + name + ".lora_B.weight"] =
          linear->lora_B->weight.detach().to(torch::kCPU, torch::kFloat);
      continue;
    }
    // AdaLoRA: the kept triplets only, and which they are (PEFT's rank_pattern).
    const torch::Tensor keep = linear->ada.keep.detach().to(torch::kCPU) != 0;
    const torch::Tensor kept = keep.nonzero().view({-1});
    auto cpu = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat); };
    tensors[kPeftPrefix + name + ".lora_A"] = cpu(linear->svd_a).index_select(0, kept);
    tensors[kPeftPrefix + name + ".lora_B"] = cpu(linear->svd_b).index_select(1, kept);
    tensors[kPeftPrefix + name + ".lora_E"] = cpu(linear->svd_e).index_select(0, kept);
    json flags = json::array();
    for (std::int64_t i = 0; i < keep.numel(); ++i) flags.push_back(keep[i].item<bool>());
    rank_pattern[name + ".lora_E"] = std::move(flags);
  }

  json config = json::object();  // keys sorted, as PEFT writes them
  config["base_model_name_or_path"] = base_model_name_or_path;
  config["bias"] = "none";
  config["fan_in_fan_out"] = false;
  config["inference_mode"] = true;
  config["init_lora_weights"] = true;
  config["layers_pattern"] = nullptr;
  config["layers_to_transform"] = nullptr;
  if (options.alpha == std::floor(options.alpha) && std::abs(options.alpha) < 1e15) {
    config["lora_alpha"] = static_cast<std::int64_t>(options.alpha);
  } else {
    config["lora_alpha"] = options.alpha;
  }
  config["lora_dropout"] = options.dropout;
  config["modules_to_save"] = nullptr;
  config["peft_type"] = "LORA";
  config["r"] = options.r;
  config["revision"] = nullptr;
  config["target_modules"] = options.target_modules;
  config["task_type"] = nullptr;
  if (options.adaptive.enabled) {  // PEFT's AdaLoraConfig: `r` is unused there (its default 8)
    const ModelAdaLoraConfig& a = options.adaptive;
    config["peft_type"] = "ADALORA";
    config["r"] = 8;
    config["init_r"] = options.r;
    config["target_r"] = a.target_r;
    config["tinit"] = a.tinit;
    config["tfinal"] = a.tfinal;
    config["deltaT"] = a.delta_t;
    config["beta1"] = a.beta1;
    config["beta2"] = a.beta2;
    config["orth_reg_weight"] = a.orth_reg_weight;
    config["total_step"] = a.total_step > 0 ? json(a.total_step) : json(nullptr);
    config["rank_pattern"] = std::move(rank_pattern);
  }

  const fs::path root(dir);
  make_directory(root);
  write_safetensors((root / kAdapterWeights).string(), tensors, {{"format", "pt"}});
  write_text_atomic(root / kAdapterConfig, config.dump(2) + "\n");
}

namespace {

/// IoError unless `root` is a PEFT adapter directory (config and safetensors weights).
void check_peft_directory(const fs::path& root) {
  const std::string dir = root.string();
  if (!fs::is_directory(root))
    throw IoError(fmt::format("{}: not a directory (expected a PEFT adapter)", dir));
  if (!fs::exists(root / kAdapterConfig))
    throw IoError(fmt::format("{}: no {} (not a PEFT adapter directory)", dir, kAdapterConfig));
  if (!fs::exists(root / kAdapterWeights)) {
    if (fs::exists(root / "adapter_model.bin")) refuse_pickle(root, kAdapterWeights, "adapter_model.bin");
    throw IoError(fmt::format("{}: no {}", dir, kAdapterWeights));
  }
}

/// The file tensor of each adapter parameter in `params` (names relative to
/// BertModel); IoError at `where` listing every mismatch (missing,
/// unexpected, duplicate, shape or dtype).
std::map<std::string, std::string> match_adapter_tensors(const SafetensorsFile& file,
                                                         const std::map<std::string, torch::Tensor>& params,
                                                         std::int64_t r, const std::string& where) {
  std::vector<std::string> problems;
  std::vector<std::string> unexpected;
  std::map<std::string, std::string> found;  // parameter name -> file name
  for (const auto& item : file.tensors) {
    const std::string& file_name = item.first;
    std::string name =
        starts_with(file_name, kPeftPrefix) ? file_name.substr(std::string(kPeftPrefix).size()) : "";
    if (starts_with(name, "bert.")) name = name.substr(5);  // an adapter trained on BertFor*: same encoder
    if (params.count(name) == 0) {
      unexpected.push_back(file_name);
      continue;
    }
    if (!found.emplace(name, file_name).second) {
      problems.push_back(fmt::format("tensors '{}' and '{}' both give '{}'", found[name], file_name, name));
      continue;
    }
    const torch::Tensor& t = item.second;
    const torch::Tensor& p = params.at(name);
    if (t.sizes() != p.sizes()) {
      problems.push_back(fmt::format("tensor '{}': expected shape {} (r = {}), found {}", file_name,
                                     shape_text(p), r, shape_text(t)));
    } else if (!t.is_floating_point()) {
      problems.push_back(fmt::format("tensor '{}': dtype {} is not floating point", file_name,
                                     c10::toString(t.scalar_type())));
    }
  }
  std::vector<std::string> missing;
  for (const auto& item : params) {
    if (found.count(item.first) == 0) missing.push_back(kPeftPrefix + item.first);
  }
  if (!missing.empty()) {
    problems.push_back(fmt::format("{} missing tensor(s): {}", missing.size(), quoted_list(missing)));
  }
  if (!unexpected.empty()) {
    problems.push_back(fmt::format("{} unexpected tensor(s) (not an adapter tensor of a targeted module): {}",
                                   unexpected.size(), quoted_list(unexpected)));
  }
  if (!problems.empty()) {
    std::string message = fmt::format("{}: the adapter does not match the model:", where);
    for (const auto& p : problems) message += "\n  " + p;
    throw IoError(message);
  }
  return found;
}

/// AdaLoRA's tensors (the kept triplets of each module, `parsed.rank_pattern`)
/// back into the model's full-rank adapters; pruned triplets are zeros and
/// marked so in each adapter's `keep`. IoError at `where` on a mismatch.
void load_adalora_tensors(const SafetensorsFile& file, const PeftAdapterConfig& parsed, BertModel& model,
                          const std::string& where) {
  std::map<std::string, torch::Tensor> expected;  // name -> a tensor of the stored shape
  std::map<std::string, torch::Tensor> kept;      // module -> indices of its kept triplets
  std::set<std::string> patterned;
  for (const auto& [name, linear] : adapted_linears(*model)) {
    const std::int64_t r = linear->adapter().r();
    torch::Tensor keep = torch::ones({r}, torch::kBool);
    auto it = parsed.rank_pattern.find(name + ".lora_E");
    if (it != parsed.rank_pattern.end()) {
      patterned.insert(it->first);
      for (std::int64_t i = 0; i < r; ++i)
        keep[i] = static_cast<bool>(it->second[static_cast<std::size_t>(i)]);
    }
    const torch::Tensor idx = keep.nonzero().view({-1});
    const std::int64_t k = idx.numel();
    kept[name] = idx;
    expected.emplace(name + ".lora_A", torch::empty({k, linear->svd_a.size(1)}));
    expected.emplace(name + ".lora_B", torch::empty({linear->svd_b.size(0), k}));
    expected.emplace(name + ".lora_E", torch::empty({k, 1}));
  }
  for (const auto& item : parsed.rank_pattern) {
    if (patterned.count(item.first) == 0) {
      throw IoError(fmt::format("{}: rank_pattern names '{}', which is not an adapted module's lora_E", where,
                                item.first));
    }
  }
  const std::map<std::string, std::string> found =
      match_adapter_tensors(file, expected, parsed.options.r, where);
  torch::NoGradGuard no_grad;
  for (const auto& item : adapted_linears(*model)) {
    const std::string& name = item.first;
    LoraLinearImpl* linear = item.second;
    const torch::Tensor& idx = kept.at(name);
    auto stored = [&](const char* part, const torch::Tensor& like) {
      return file.tensors.at(found.at(name + part)).to(like.device(), like.scalar_type());
    };
    linear->svd_a.zero_().index_copy_(0, idx.to(linear->svd_a.device()), stored(".lora_A", linear->svd_a));
    linear->svd_b.zero_().index_copy_(1, idx.to(linear->svd_b.device()), stored(".lora_B", linear->svd_b));
    linear->svd_e.zero_().index_copy_(0, idx.to(linear->svd_e.device()), stored(".lora_E", linear->svd_e));
    linear->ada.keep.zero_().index_fill_(0, idx.to(linear->ada.keep.device()), 1.0);
  }
}

}  // namespace

LoraOptions load_peft_adapter(const std::string& dir, BertModel& model) {
  const fs::path root(dir);
  check_peft_directory(root);
  const fs::path config_path = root / kAdapterConfig;
  const fs::path weights_path = root / kAdapterWeights;
  const PeftAdapterConfig parsed = parse_adapter_config(read_json_file(config_path), config_path.string());
  const LoraOptions& options = parsed.options;
  SafetensorsFile file = read_safetensors(weights_path.string());

  const std::string context = fmt::format("load_peft_adapter({})", dir);
  std::vector<NamedLinear> adapted = adapted_linears(*model);
  for (const auto& [name, linear] : adapted) {
    if (linear->merged()) {
      throw Error(fmt::format("{}: adapter '{}' is merged into its weight; unmerge_lora before loading",
                              context, name));
    }
  }
  if (adapted.empty()) {
    try {
      apply_lora(model, options);
    } catch (const Error& e) {
      rethrow_with_context(e, fmt::format("{}: target_modules", config_path.string()), ErrorKind::kConfig);
    }
  } else {
    check_adapters_match(model, options, context);
  }

  if (options.adaptive.enabled) {
    load_adalora_tensors(file, parsed, model,
                         fmt::format("{} and {}", config_path.string(), weights_path.string()));
    return options;
  }
  // Expected tensor names, relative to BertModel.
  std::map<std::string, torch::Tensor> params;
  for (const auto& [name, linear] : adapted_linears(*model)) {
    params.emplace(name + ".lora_A.weight", linear->lora_A->weight);
    params.emplace(name + ".lora_B.weight", linear->lora_B->weight);
  }
  const std::map<std::string, std::string> found =
      match_adapter_tensors(file, params, options.r, weights_path.string());
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : params) p.copy_(file.tensors.at(found.at(name)));
  return options;
}

void save_hf_directory(const std::string& dir, const BertModel& model, const BertConfig& config,
                       const std::string& vocab_path, c10::ScalarType dtype,
                       const std::map<std::string, at::Tensor>& head, const std::string& architecture) {
  const BertConfig& built = model->config();
  if (config.vocab_size != built.vocab_size || config.hidden_size != built.hidden_size ||
      config.num_hidden_layers != built.num_hidden_layers ||
      config.num_attention_heads != built.num_attention_heads ||
      config.intermediate_size != built.intermediate_size ||
      config.max_position_embeddings != built.max_position_embeddings ||
      config.type_vocab_size != built.type_vocab_size) {
    throw Error(fmt::format("save_hf_directory({}): the config's sizes differ from the model's", dir));
  }
  config.validate(fmt::format("save_hf_directory({}): config", dir));
  if (!vocab_path.empty() && !fs::is_regular_file(vocab_path)) {
    throw IoError(fmt::format("{}: vocabulary not found (save_hf_directory)", vocab_path));
  }

  std::map<std::string, LoraLinearImpl*> adapters;
  for (const auto& item : adapted_linears(*model)) adapters.emplace(item.first, item.second);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    if (is_lora_parameter_name(name)) continue;
    torch::Tensor value = p.value().detach();
    if (ends_with(name, ".weight")) {
      auto it = adapters.find(name.substr(0, name.size() - 7));
      if (it != adapters.end()) value = it->second->merged_weight();
    }
    tensors[(head.empty() ? "" : "bert.") + name] = value.to(torch::kCPU, dtype);
  }
  for (const auto& [name, value] : head) tensors[name] = value.detach().to(torch::kCPU, dtype);

  const fs::path root(dir);
  make_directory(root);
  write_safetensors((root / "model.safetensors").string(), tensors, {{"format", "pt"}});
  write_text_atomic(root / "config.json", config.to_json(architecture));
  if (!vocab_path.empty()) {
    const fs::path tmp = fmt::format("{}.tmp.{}", (root / "vocab.txt").string(), ::getpid());
    std::error_code ec;
    fs::copy_file(vocab_path, tmp, fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::rename(tmp, root / "vocab.txt", ec);
    if (ec) {
      std::error_code ignored;
      fs::remove(tmp, ignored);
      throw IoError(
          fmt::format("{}: cannot copy the vocabulary to {}: {}", vocab_path, root.string(), ec.message()));
    }
  }
}

}  // namespace llmrec
