#include "trainer/checkpoint.h"

#include <c10/util/string_utils.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>

#include "common/config.h"
#include "trainer/optimizer.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;

/// Every parameter and buffer of the model, by module path.
std::vector<std::pair<std::string, torch::Tensor>> model_tensors(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : m.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

bool is_double(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble;
}

/// Writes `t` (float32 or float64, any shape) as `name`, keeping its dtype.
void write_tensor(h5::File& f, const std::string& name, const torch::Tensor& t) {
  torch::Tensor c = t.detach().cpu().contiguous();
  std::vector<std::uint64_t> dims(c.sizes().begin(), c.sizes().end());
  if (is_double(c)) {
    f.write<double>(name, c.data_ptr<double>(), dims);
  } else {
    c = c.to(torch::kFloat);
    f.write<float>(name, c.data_ptr<float>(), dims);
  }
}

/// Reads `name` into `t` (same shape; the file's dtype is `dtype`).
void read_tensor(const h5::File& f, const std::string& name, const std::string& label,
                 const std::string& dtype, const torch::Tensor& t) {
  if (!f.exists(name)) throw IoError(fmt::format("{}: tensor '{}' is missing", f.path(), label));
  auto shape = f.shape(name);
  std::vector<std::int64_t> dims(shape.begin(), shape.end());
  if (dims != t.sizes().vec()) {
    throw IoError(fmt::format("{}: tensor '{}' has shape {} in the file, the model expects {}", f.path(),
                              label, fmt::join(dims, "x"), fmt::join(t.sizes().vec(), "x")));
  }
  torch::NoGradGuard no_grad;
  if (dtype == "float64") {
    std::vector<double> v = f.read<double>(name);
    t.copy_(torch::from_blob(v.data(), t.sizes(), torch::kDouble).to(t.scalar_type()));
  } else {
    std::vector<float> v = f.read<float>(name);
    t.copy_(torch::from_blob(v.data(), t.sizes(), torch::kFloat).to(t.scalar_type()));
  }
}

/// Opens a checkpoint and checks its format and version.
h5::File open_training_checkpoint(const std::string& path) {
  return open_checkpoint(path, kCheckpointFormat, kCheckpointVersion, "llmrec checkpoint");
}

ModelConfig stored_model_config(const h5::File& f) {
  ModelConfig mc;
  try {
    ConfigReader::read(config_parse_string(f.attr_string("/", "model_config"), f.path() + " [model_config]"),
                       mc);
  } catch (const ConfigError& e) {
    throw IoError(fmt::format("{}: the stored model configuration is invalid: {}", f.path(), e.what()));
  }
  return mc;
}

/// The distinct values of each context column (attribute `context_values`,
/// a JSON list; absent in older checkpoints: none).
std::vector<std::int64_t> stored_context_values(const h5::File& f) {
  if (!f.has_attr("/", "context_values")) return {};
  const nlohmann::json j = nlohmann::json::parse(f.attr_string("/", "context_values"), nullptr, false);
  const bool ok =
      j.is_array() && std::all_of(j.begin(), j.end(), [](const nlohmann::json& v) {
        return v.is_number_integer() && v.get<std::int64_t>() >= 0 && v.get<std::int64_t>() < (1LL << 31);
      });
  if (!ok) throw IoError(fmt::format("{}: attribute 'context_values' is not a list of counts", f.path()));
  return j.get<std::vector<std::int64_t>>();
}

std::string stored_dtype(const h5::File& f) {
  std::string dtype = f.attr_string("/", "dtype");
  if (dtype != "float32" && dtype != "float64") {
    throw IoError(fmt::format("{}: attribute 'dtype' is '{}', expected float32 or float64", f.path(), dtype));
  }
  return dtype;
}

/// "a.b.c" -> scalar text of every leaf of a parsed YAML tree.
void flatten(const ConfigNode& n, const std::string& prefix, std::map<std::string, std::string>& out) {
  switch (n.kind) {
    case ConfigNode::Kind::kMap:
      for (const auto& [k, v] : n.map) flatten(v, prefix.empty() ? k : prefix + "." + k, out);
      break;
    case ConfigNode::Kind::kSequence: {
      std::vector<std::string> items;
      for (const auto& v : n.seq) items.push_back(v.kind == ConfigNode::Kind::kScalar ? v.scalar : "...");
      out[prefix] = fmt::format("[{}]", fmt::join(items, ", "));
      break;
    }
    case ConfigNode::Kind::kScalar: out[prefix] = n.scalar; break;
    case ConfigNode::Kind::kNull: out[prefix] = "null"; break;
  }
}

std::map<std::string, std::string> flat_model_config(const ModelConfig& mc) {
  ModelConfig copy = mc;
  std::map<std::string, std::string> out;
  flatten(config_parse_string(ConfigWriter::write(copy), "model"), "model", out);
  return out;
}

std::int64_t step_of(const fs::path& p) {
  static const std::regex re("step-([0-9]+)\\.h5");
  std::smatch m;
  const std::string name = p.filename().string();
  if (!std::regex_match(name, m, re)) return -1;
  return std::stoll(m[1].str());
}

}  // namespace

h5::File open_checkpoint(const std::string& path, const std::string& format, std::int64_t version,
                         const std::string& what) {
  auto f = h5::File::open(path);
  if (!f.has_attr("/", "format") || f.attr_string("/", "format") != format) {
    throw IoError(fmt::format("{}: not an {} (attribute 'format' is not '{}')", path, what, format));
  }
  const std::int64_t found = f.attr_int("/", "version");
  if (found != version) {
    throw IoError(
        fmt::format("{}: {} version {} is not supported (this llmrec reads {})", path, what, found, version));
  }
  return f;
}

std::string checkpoint_double_text(double v) {
  return fmt::format("{:.17g}", v);
}

double checkpoint_attr_double(const h5::File& f, const std::string& key) {
  const std::string s = f.attr_string("/", key);
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size()) {
    throw IoError(fmt::format("{}: attribute '{}' is '{}', not a number", f.path(), key, s));
  }
  return v;
}

void checkpoint_write_module(h5::File& f, const std::string& group, const torch::nn::Module& m) {
  for (const auto& [name, t] : model_tensors(m)) write_tensor(f, group + "/" + name, t);
}

void checkpoint_read_module(const h5::File& f, const std::string& group, const std::string& dtype,
                            torch::nn::Module& m) {
  for (auto& [name, t] : model_tensors(m)) read_tensor(f, group + "/" + name, group + "/" + name, dtype, t);
}

void checkpoint_write_optimizer(h5::File& f, torch::optim::AdamW& optimizer,
                                const std::vector<std::pair<std::string, torch::Tensor>>& params) {
  auto& state = optimizer.state();
  for (const auto& [name, p] : params) {
    auto it = state.find(c10::guts::to_string(p.unsafeGetTensorImpl()));
    if (it == state.end()) continue;  // not stepped yet
    auto& st = static_cast<torch::optim::AdamWParamState&>(*it->second);
    const std::string g = "optimizer/" + name;
    write_tensor(f, g + "/exp_avg", st.exp_avg());
    write_tensor(f, g + "/exp_avg_sq", st.exp_avg_sq());
    f.set_attr(g + "/exp_avg", "step", st.step());
  }
}

void checkpoint_read_optimizer(const h5::File& f, torch::optim::AdamW& optimizer,
                               const std::vector<std::pair<std::string, torch::Tensor>>& params,
                               const std::string& dtype) {
  auto& state = optimizer.state();
  state.clear();
  for (const auto& [name, p] : params) {
    const std::string g = "optimizer/" + name;
    if (!f.exists(g)) continue;  // never stepped when saved
    auto st = std::make_unique<torch::optim::AdamWParamState>();
    torch::Tensor m = torch::zeros_like(p, torch::MemoryFormat::Preserve);
    torch::Tensor v = torch::zeros_like(p, torch::MemoryFormat::Preserve);
    read_tensor(f, g + "/exp_avg", "optimizer state of " + name, dtype, m);
    read_tensor(f, g + "/exp_avg_sq", "optimizer state of " + name, dtype, v);
    st->exp_avg(m);
    st->exp_avg_sq(v);
    st->step(f.attr_int(g + "/exp_avg", "step"));
    state[c10::guts::to_string(p.unsafeGetTensorImpl())] = std::move(st);
  }
}

void checkpoint_write_rng(h5::File& f, const std::vector<at::Tensor>& rng) {
  f.set_attr("/", "ranks_rng", static_cast<std::int64_t>(rng.size()));
  for (std::size_t r = 0; r < rng.size(); ++r) {
    torch::Tensor g = rng[r].contiguous();
    f.write<std::uint8_t>("rng/" + std::to_string(r), g.data_ptr<std::uint8_t>(),
                          {static_cast<std::uint64_t>(g.numel())});
  }
}

std::vector<at::Tensor> checkpoint_read_rng(const h5::File& f) {
  std::vector<at::Tensor> out;
  const std::int64_t n = f.attr_int("/", "ranks_rng");
  for (std::int64_t r = 0; r < n; ++r) {
    std::vector<std::uint8_t> g = f.read<std::uint8_t>("rng/" + std::to_string(r));
    out.push_back(torch::from_blob(g.data(), {static_cast<std::int64_t>(g.size())}, torch::kUInt8).clone());
  }
  return out;
}

namespace {

void checkpoint_write_item_features(h5::File& f, const CheckpointParts& parts) {
  const torch::Tensor table = parts.item_features.to(torch::kCPU, torch::kFloat).contiguous();
  const torch::Tensor kept = parts.item_features_kept.to(torch::kCPU, torch::kUInt8).contiguous();
  LLMREC_CHECK(
      table.dim() == 3 && kept.dim() == 2 && kept.size(0) == table.size(0) && kept.size(1) == table.size(1),
      "save_checkpoint: item features {} with kept rows {}", c10::str(table.sizes()), c10::str(kept.sizes()));
  std::vector<std::uint64_t> dims;
  for (const std::int64_t d : table.sizes()) dims.push_back(static_cast<std::uint64_t>(d));
  f.write<float>("item_features/table", table.data_ptr<float>(), dims);
  dims.pop_back();
  f.write<std::uint8_t>("item_features/kept", kept.data_ptr<std::uint8_t>(), dims);
}

/// The kept item features of a training checkpoint, into `parts` (left
/// undefined when the file has none): [tables, items, H] and [tables,
/// items]. IoError naming the file on a bad shape.
void checkpoint_read_item_features(const h5::File& f, CheckpointParts& parts) {
  if (!f.exists("item_features/table")) return;
  const std::vector<std::uint64_t> dims = f.shape("item_features/table");
  const std::vector<std::uint64_t> kept_dims =
      f.exists("item_features/kept") ? f.shape("item_features/kept") : std::vector<std::uint64_t>{};
  if (dims.size() != 3 || kept_dims.size() != 2 || dims[0] == 0 || kept_dims[0] != dims[0] ||
      kept_dims[1] != dims[1]) {
    throw IoError(
        fmt::format("{}: item_features/table and item_features/kept of shapes [{}] and [{}]: "
                    "expected [tables, items, H] and [tables, items]",
                    f.path(), fmt::join(dims, ", "), fmt::join(kept_dims, ", ")));
  }
  std::vector<float> table = f.read<float>("item_features/table");
  std::vector<std::uint8_t> kept = f.read<std::uint8_t>("item_features/kept");
  const auto tables = static_cast<std::int64_t>(dims[0]);
  const auto rows = static_cast<std::int64_t>(dims[1]);
  const auto cols = static_cast<std::int64_t>(dims[2]);
  if (static_cast<std::int64_t>(table.size()) != tables * rows * cols ||
      static_cast<std::int64_t>(kept.size()) != tables * rows) {
    throw IoError(fmt::format("{}: item_features: {} and {} values read for [{}, {}, {}]", f.path(),
                              table.size(), kept.size(), tables, rows, cols));
  }
  parts.item_features = torch::from_blob(table.data(), {tables, rows, cols}, torch::kFloat).clone();
  parts.item_features_kept = torch::from_blob(kept.data(), {tables, rows}, torch::kUInt8).clone();
}

}  // namespace

std::vector<at::Tensor> gather_rng_states(Communicator& comm) {
  at::Tensor rng;
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    rng = gen.get_state();
  }
  at::Tensor all = comm.all_gather(rng);
  std::vector<at::Tensor> out;
  for (int r = 0; r < comm.size(); ++r) out.push_back(all[r].clone());
  return out;
}

void rng_restore(const std::vector<at::Tensor>& states, int rank) {
  if (states.empty()) return;
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(states[static_cast<std::size_t>(rank) % states.size()]);
}

std::vector<std::string> model_config_diff(const ModelConfig& stored, const ModelConfig& current) {
  auto a = flat_model_config(stored);
  auto b = flat_model_config(current);
  std::vector<std::string> out;
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    if (it == b.end()) {
      out.push_back(fmt::format("{}: checkpoint {}, config (absent)", k, v));
    } else if (it->second != v) {
      out.push_back(fmt::format("{}: checkpoint {}, config {}", k, v, it->second));
    }
  }
  for (const auto& [k, v] : b) {
    if (a.count(k) == 0) out.push_back(fmt::format("{}: checkpoint (absent), config {}", k, v));
  }
  return out;
}

void save_checkpoint(const std::string& path, const CheckpointParts& parts) {
  LLMREC_CHECK(static_cast<bool>(parts.model), "save_checkpoint: no model");
  try {
    auto f = h5::File::create(path);
    f.set_attr("/", "format", kCheckpointFormat);
    f.set_attr("/", "version", kCheckpointVersion);
    ModelConfig mc = parts.model->options().config();
    f.set_attr("/", "model_config", ConfigWriter::write(mc));
    f.set_attr("/", "id_items", parts.model->options().id_items());
    f.set_attr("/", "context_values", nlohmann::json(parts.model->options().context_values()).dump());
    const auto params = parts.model->parameters();
    f.set_attr("/", "dtype", !params.empty() && is_double(params[0]) ? "float64" : "float32");
    f.set_attr("/", "config", parts.run_config_yaml);
    const TrainingState* s = parts.state;
    f.set_attr("/", "step", s != nullptr ? s->step : parts.model_step);
    f.set_attr("/", "world_size",
               static_cast<std::int64_t>(s != nullptr ? s->world_size : parts.model_world_size));
    f.set_attr("/", "training", std::int64_t{s != nullptr && parts.optimizer != nullptr ? 1 : 0});
    checkpoint_write_module(f, "model", *parts.model);
    if (s != nullptr) {
      f.set_attr("/", "cursor_epoch", s->cursor.epoch);
      f.set_attr("/", "cursor_step", s->cursor.step);
      f.set_attr("/", "steps_per_epoch", s->steps_per_epoch);
      f.set_attr("/", "planned_steps", s->planned_steps);
      f.set_attr("/", "best_score", checkpoint_double_text(s->best_score));
      f.set_attr("/", "best_step", s->best_step);
      f.set_attr("/", "bad_evals", static_cast<std::int64_t>(s->bad_evals));
      f.set_attr("/", "validation_due", std::int64_t{s->validation_due ? 1 : 0});
      checkpoint_write_rng(f, s->rng);
    }
    if (parts.best) checkpoint_write_module(f, "best", *parts.best);
    if (parts.item_features.defined()) checkpoint_write_item_features(f, parts);
    if (parts.optimizer != nullptr) {
      LLMREC_CHECK(parts.params != nullptr, "save_checkpoint: optimizer without parameter names");
      checkpoint_write_optimizer(f, *parts.optimizer, *parts.params);
    }
    f.commit();
  } catch (const IoError& e) {
    throw IoError(fmt::format("writing checkpoint {} failed: {}", path, e.what()));
  }
}

namespace {

/// ConfigError unless the checkpoint's model was built for the dataset of
/// `model` (its ID vectors and context columns).
void check_same_dataset(const h5::File& f, const RecommenderImpl& model) {
  if (f.attr_int("/", "id_items") != model.options().id_items()) {
    throw ConfigError(
        fmt::format("{}: the checkpoint has ID vectors for {} items, this dataset for {}: it was "
                    "trained on another dataset",
                    f.path(), f.attr_int("/", "id_items"), model.options().id_items()));
  }
  const std::vector<std::int64_t> context_values = stored_context_values(f);
  if (context_values != model.options().context_values()) {
    throw ConfigError(fmt::format(
        "{}: the checkpoint's context columns have [{}] values, this dataset's [{}]: it "
        "was trained on another dataset",
        f.path(), fmt::join(context_values, ", "), fmt::join(model.options().context_values(), ", ")));
  }
}

/// Whether model config key `key` (flat, "model.x.y") may differ between a
/// checkpoint and the model that train.init_from starts from it: how the
/// model trains, not what its weights mean.
bool init_may_differ(const std::string& key, bool stored_adapters) {
  static const char* const training_keys[] = {"model.bert.freeze", "model.bert.dropout", "model.user.dropout",
                                              "model.id_dropout"};
  for (const char* k : training_keys)
    if (key == k) return true;
  if (key.rfind("model.loss.", 0) == 0) return true;
  return !stored_adapters && key.rfind("model.lora.", 0) == 0;
}

/// An adapter tensor: LoraLinear's lora_* parameters, buffers and modules
/// (a path component starting with "lora_").
bool is_adapter_tensor(const std::string& name) {
  return name.rfind("lora_", 0) == 0 || name.find(".lora_") != std::string::npos;
}

}  // namespace

std::int64_t checkpoint_init_model(const std::string& path, Recommender& model,
                                   std::vector<std::string>* fresh) {
  LLMREC_CHECK(static_cast<bool>(model), "checkpoint_init_model: no model");
  auto f = open_training_checkpoint(path);
  const ModelConfig stored = stored_model_config(f);
  const bool stored_adapters = stored.lora.r > 0;
  std::vector<std::string> differ;
  for (const std::string& d : model_config_diff(stored, model->options().config())) {
    if (!init_may_differ(d.substr(0, d.find(':')), stored_adapters)) differ.push_back(d);
  }
  if (!differ.empty()) {
    throw ConfigError(fmt::format(
        "train.init_from {}: the file's model differs from this one in what its weights mean; only "
        "model.bert.freeze, model.loss.*, dropouts and (when the file has no adapters) model.lora.* may "
        "differ:\n  {}",
        path, fmt::join(differ, "\n  ")));
  }
  check_same_dataset(f, *model);
  const std::string dtype = stored_dtype(f);
  std::int64_t loaded = 0;
  for (auto& [name, t] : model_tensors(*model)) {
    if (!stored_adapters && is_adapter_tensor(name)) {
      if (fresh != nullptr) fresh->push_back(name);
      continue;
    }
    read_tensor(f, "model/" + name, "model/" + name, dtype, t);
    ++loaded;
  }
  return loaded;
}

void load_checkpoint(const std::string& path, CheckpointParts& parts) {
  LLMREC_CHECK(static_cast<bool>(parts.model), "load_checkpoint: no model");
  auto f = open_training_checkpoint(path);
  const ModelConfig stored = stored_model_config(f);
  const auto diff = model_config_diff(stored, parts.model->options().config());
  if (!diff.empty()) {
    throw ConfigError(
        fmt::format("{}: the checkpoint was trained with a different model; resume with the same "
                    "model section or start a new run.dir:\n  {}",
                    path, fmt::join(diff, "\n  ")));
  }
  check_same_dataset(f, *parts.model);
  const std::string dtype = stored_dtype(f);
  checkpoint_read_module(f, "model", dtype, *parts.model);
  const bool training = f.has_attr("/", "training") && f.attr_int("/", "training") == 1;
  if (parts.state != nullptr) {
    if (!training)
      throw IoError(
          fmt::format("{}: a model file, not a training checkpoint: it cannot resume training", path));
    TrainingState& s = *parts.state;
    s.step = f.attr_int("/", "step");
    s.world_size = static_cast<int>(f.attr_int("/", "world_size"));
    s.cursor.epoch = f.attr_int("/", "cursor_epoch");
    s.cursor.step = f.attr_int("/", "cursor_step");
    s.steps_per_epoch = f.attr_int("/", "steps_per_epoch");
    s.planned_steps = f.attr_int("/", "planned_steps");
    s.best_score = checkpoint_attr_double(f, "best_score");
    s.best_step = f.attr_int("/", "best_step");
    s.bad_evals = static_cast<int>(f.attr_int("/", "bad_evals"));
    s.validation_due = f.attr_int("/", "validation_due") != 0;
    if (s.step < 0 || s.world_size < 1 || s.cursor.epoch < 0 || s.cursor.step < 0 || s.steps_per_epoch < 1) {
      throw IoError(
          fmt::format("{}: inconsistent training state (step {}, world size {}, cursor {}/{}, {} steps "
                      "per epoch)",
                      path, s.step, s.world_size, s.cursor.epoch, s.cursor.step, s.steps_per_epoch));
    }
    s.rng = checkpoint_read_rng(f);
    checkpoint_read_item_features(f, parts);
  }
  if (parts.best) {
    if (f.exists("best")) {
      checkpoint_read_module(f, "best", dtype, *parts.best);
    } else {
      parts.best = nullptr;
    }
  }
  if (parts.optimizer != nullptr) {
    LLMREC_CHECK(parts.params != nullptr, "load_checkpoint: optimizer without parameter names");
    if (!training)
      throw IoError(fmt::format("{}: a model file, not a training checkpoint: no optimizer state", path));
    checkpoint_read_optimizer(f, *parts.optimizer, *parts.params, dtype);
  }
}

Recommender checkpoint_load_model(const std::string& path) {
  ModelConfig mc;
  std::int64_t id_items = 0;
  std::vector<std::int64_t> context_values;
  std::string dtype;
  {
    auto f = open_training_checkpoint(path);
    mc = stored_model_config(f);
    id_items = f.attr_int("/", "id_items");
    context_values = stored_context_values(f);
    dtype = stored_dtype(f);
  }
  torch::manual_seed(0);
  Recommender model(RecommenderOptions(mc).id_items(id_items).context_values(context_values));
  if (dtype == "float64") model->to(torch::kDouble);
  CheckpointParts parts;
  parts.model = model;
  load_checkpoint(path, parts);
  model->eval();
  return model;
}

void verify_checkpoint(const std::string& path) {
  auto f = open_training_checkpoint(path);
  stored_model_config(f);
  const std::string dtype = stored_dtype(f);
  // Rebuild the shapes from the stored model and read every tensor.
  torch::manual_seed(0);
  Recommender model(RecommenderOptions(stored_model_config(f))
                        .id_items(f.attr_int("/", "id_items"))
                        .context_values(stored_context_values(f)));
  if (dtype == "float64") model->to(torch::kDouble);
  CheckpointParts parts;
  parts.model = model;
  TrainingState state;
  const bool training = f.has_attr("/", "training") && f.attr_int("/", "training") == 1;
  if (training) {
    parts.state = &state;
    if (f.exists("best")) parts.best = std::dynamic_pointer_cast<RecommenderImpl>(model->clone());
  }
  load_checkpoint(path, parts);
  if (training) {
    // Optimizer state: read every stored tensor (checksums) without a model.
    for (const auto& [name, p] : trainable_named_parameters(*model)) {
      const std::string g = "optimizer/" + name;
      if (!f.exists(g)) continue;
      torch::Tensor t = torch::zeros_like(p);
      read_tensor(f, g + "/exp_avg", "optimizer state of " + name, dtype, t);
      read_tensor(f, g + "/exp_avg_sq", "optimizer state of " + name, dtype, t);
    }
  }
}

std::string checkpoint_dir(const std::string& run_dir) {
  return (fs::path(run_dir) / "checkpoints").string();
}

std::string checkpoint_path(const std::string& dir, std::int64_t step) {
  return (fs::path(dir) / fmt::format("step-{:08d}.h5", step)).string();
}

std::vector<std::string> checkpoint_list(const std::string& dir) {
  std::vector<std::pair<std::int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::int64_t s = step_of(e.path());
    if (s >= 0 && e.is_regular_file(ec)) found.emplace_back(s, e.path().string());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& [s, p] : found) out.push_back(p);
  return out;
}

std::string checkpoint_latest_valid(const std::string& dir, std::vector<std::string>* skipped,
                                    const std::function<void(const std::string&)>& verify) {
  for (const auto& path : checkpoint_list(dir)) {
    try {
      (verify ? verify : verify_checkpoint)(path);
      return path;
    } catch (const Error& e) {
      if (skipped != nullptr) skipped->push_back(fmt::format("{}: {}", path, e.what()));
    }
  }
  return "";
}

void checkpoint_prune(const std::string& dir, int keep) {
  auto all = checkpoint_list(dir);
  for (std::size_t i = static_cast<std::size_t>(std::max(keep, 1)); i < all.size(); ++i) {
    std::error_code ec;
    fs::remove(all[i], ec);
  }
}

}  // namespace llmrec
