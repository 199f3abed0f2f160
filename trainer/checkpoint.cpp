#include "trainer/checkpoint.h"

#include <fmt/ranges.h>
#include <torch/torch.h>

#include "common/config.h"
#include "common/hdf5.h"

namespace llmrec {
namespace {

/// Every parameter and buffer of the model, by module path.
std::vector<std::pair<std::string, torch::Tensor>> model_tensors(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : m.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

}  // namespace

void checkpoint_save_model(const std::string& path, Recommender& model, std::int64_t step, int world_size,
                           const std::string& run_config_yaml) {
  auto f = h5::File::create(path);
  f.set_attr("/", "format", kCheckpointFormat);
  f.set_attr("/", "version", kCheckpointVersion);
  ModelConfig mc = model->options().config();
  f.set_attr("/", "model_config", ConfigWriter::write(mc));
  f.set_attr("/", "id_items", model->options().id_items());
  f.set_attr("/", "step", step);
  f.set_attr("/", "world_size", static_cast<std::int64_t>(world_size));
  f.set_attr("/", "config", run_config_yaml);
  for (const auto& [name, t] : model_tensors(*model)) {
    torch::Tensor c = t.detach().cpu().to(torch::kFloat).contiguous();
    std::vector<std::uint64_t> dims(c.sizes().begin(), c.sizes().end());
    f.write<float>("model/" + name, c.data_ptr<float>(), dims);
  }
  f.commit();
}

Recommender checkpoint_load_model(const std::string& path) {
  auto f = h5::File::open(path);
  if (!f.has_attr("/", "format") || f.attr_string("/", "format") != kCheckpointFormat) {
    throw IoError(fmt::format("{}: not an llmrec checkpoint (attribute 'format' is not '{}')", path, kCheckpointFormat));
  }
  const std::int64_t version = f.attr_int("/", "version");
  if (version != kCheckpointVersion) {
    throw IoError(fmt::format("{}: checkpoint version {} is not supported (this llmrec reads {})", path, version,
                              kCheckpointVersion));
  }
  ModelConfig mc;
  try {
    ConfigReader::read(config_parse_string(f.attr_string("/", "model_config"), path + " [model_config]"), mc);
  } catch (const ConfigError& e) {
    throw IoError(fmt::format("{}: the stored model configuration is invalid: {}", path, e.what()));
  }
  torch::manual_seed(0);
  Recommender model(RecommenderOptions(mc).id_items(f.attr_int("/", "id_items")));
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : model_tensors(*model)) {
    const std::string key = "model/" + name;
    if (!f.exists(key)) throw IoError(fmt::format("{}: tensor '{}' is missing", path, name));
    auto shape = f.shape(key);
    std::vector<std::int64_t> dims(shape.begin(), shape.end());
    if (dims != t.sizes().vec()) {
      throw IoError(fmt::format("{}: tensor '{}' has shape {} in the file, the model expects {}", path, name,
                                fmt::join(dims, "x"), fmt::join(t.sizes().vec(), "x")));
    }
    std::vector<float> values = f.read<float>(key);
    t.copy_(torch::from_blob(values.data(), t.sizes(), torch::kFloat).to(t.scalar_type()));
  }
  model->eval();
  return model;
}

}  // namespace llmrec
