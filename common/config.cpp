#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace llmrec {
namespace {

namespace fs = std::filesystem;

// Deeper nesting than this is refused (aliases can build cycles, and no
// llmrec config is more than a few levels deep).
constexpr int kMaxDepth = 64;
// Include chains longer than this are refused.
constexpr int kMaxIncludeDepth = 16;

std::string where(const std::string& name, const YAML::Mark& mark) {
  if (mark.is_null()) return name;
  return fmt::format("{}:{}", name, mark.line + 1);
}

ConfigNode from_yaml(const YAML::Node& y, const std::string& name, int depth) {
  ConfigNode n;
  n.source = where(name, y.Mark());
  if (depth > kMaxDepth) {
    throw ConfigError(fmt::format("{}: nesting deeper than {} levels", n.source, kMaxDepth));
  }
  switch (y.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null: n.kind = ConfigNode::Kind::kNull; break;
    case YAML::NodeType::Scalar:
      n.kind = ConfigNode::Kind::kScalar;
      n.scalar = y.Scalar();
      break;
    case YAML::NodeType::Sequence:
      n.kind = ConfigNode::Kind::kSequence;
      for (const auto& item : y) n.seq.push_back(from_yaml(item, name, depth + 1));
      break;
    case YAML::NodeType::Map:
      n.kind = ConfigNode::Kind::kMap;
      for (const auto& kv : y) {
        if (!kv.first.IsScalar()) {
          throw ConfigError(fmt::format("{}: map keys must be plain strings", where(name, kv.first.Mark())));
        }
        std::string key = kv.first.Scalar();
        if (const ConfigNode* first = n.find(key)) {
          throw ConfigError(fmt::format("{}: duplicate key '{}' (first at {})", where(name, kv.first.Mark()),
                                        key, first->source));
        }
        ConfigNode value = from_yaml(kv.second, name, depth + 1);
        // A key with no value points at its own line, not the next one.
        if (value.kind == ConfigNode::Kind::kNull) value.source = where(name, kv.first.Mark());
        n.map.emplace_back(std::move(key), std::move(value));
      }
      break;
  }
  return n;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(fmt::format("cannot open config file {}", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ConfigNode load_with_includes(const std::string& path, std::vector<std::string>& chain) {
  std::string canonical = fs::weakly_canonical(path).string();
  if (std::find(chain.begin(), chain.end(), canonical) != chain.end()) {
    std::string cycle;
    for (const auto& c : chain) cycle += c + " -> ";
    throw ConfigError(fmt::format("include cycle: {}{}", cycle, canonical));
  }
  if (static_cast<int>(chain.size()) >= kMaxIncludeDepth) {
    throw ConfigError(fmt::format("{}: includes nested deeper than {}", path, kMaxIncludeDepth));
  }
  chain.push_back(canonical);
  ConfigNode self = config_parse_string(read_text(path), path);
  if (self.kind == ConfigNode::Kind::kNull) self.kind = ConfigNode::Kind::kMap;
  if (self.kind != ConfigNode::Kind::kMap) {
    throw ConfigError(fmt::format("{}: a config file must be a mapping of keys", self.source));
  }

  auto it =
      std::find_if(self.map.begin(), self.map.end(), [](const auto& kv) { return kv.first == "include"; });
  if (it == self.map.end()) {
    chain.pop_back();
    return self;
  }
  std::vector<const ConfigNode*> includes;
  const ConfigNode& inc = it->second;
  if (inc.kind == ConfigNode::Kind::kScalar) {
    includes.push_back(&inc);
  } else if (inc.kind == ConfigNode::Kind::kSequence) {
    for (const auto& s : inc.seq) includes.push_back(&s);
  }
  if (includes.empty() && inc.kind != ConfigNode::Kind::kSequence) {
    throw ConfigError(fmt::format("{}: 'include' must be a path or a list of paths", inc.source));
  }
  ConfigNode merged;
  merged.kind = ConfigNode::Kind::kMap;
  merged.source = self.source;
  fs::path dir = fs::path(path).parent_path();
  for (const ConfigNode* p : includes) {
    if (p->kind != ConfigNode::Kind::kScalar) {
      throw ConfigError(fmt::format("{}: 'include' entries must be paths", p->source));
    }
    fs::path target = fs::path(p->scalar).is_absolute() ? fs::path(p->scalar) : dir / p->scalar;
    if (!fs::exists(target)) {
      throw ConfigError(fmt::format("{}: included file {} does not exist", p->source, target.string()));
    }
    merge_config(merged, load_with_includes(target.string(), chain));
  }
  self.map.erase(it);
  merge_config(merged, self);
  chain.pop_back();
  return merged;
}

// The known key closest to `key`, or "" when none is close enough to guess.
std::string suggest(const std::string& key, const std::vector<std::string>& known) {
  std::string best;
  std::size_t best_d = std::string::npos;
  for (const auto& k : known) {
    std::size_t d = edit_distance(key, k);
    if (d < best_d) {
      best_d = d;
      best = k;
    }
  }
  return best_d <= std::max<std::size_t>(2, key.size() / 3) ? best : std::string();
}

std::string join(const std::vector<std::string>& items) {
  std::string s;
  for (const auto& x : items) s += (s.empty() ? "" : ", ") + x;
  return s;
}

template <class Int>
std::string convert_int(const ConfigNode& node, Int& out, const char* what) {
  if (node.kind != ConfigNode::Kind::kScalar) return fmt::format("must be {}", what);
  const std::string& s = node.scalar;
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, out);
  if (ec == std::errc::result_out_of_range) return fmt::format("is out of range for {}", what);
  if (ec != std::errc() || ptr != end) return fmt::format("must be {}", what);
  return {};
}

}  // namespace

const ConfigNode* ConfigNode::find(const std::string& key) const {
  for (const auto& kv : map) {
    if (kv.first == key) return &kv.second;
  }
  return nullptr;
}

ConfigNode* ConfigNode::find(const std::string& key) {
  return const_cast<ConfigNode*>(static_cast<const ConfigNode*>(this)->find(key));
}

ConfigNode config_parse_string(const std::string& text, const std::string& name) {
  YAML::Node y;
  try {
    y = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}: invalid YAML: {}", where(name, e.mark), e.msg));
  }
  try {
    return from_yaml(y, name, 0);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}: invalid YAML: {}", where(name, e.mark), e.msg));
  }
}

ConfigNode config_load_file(const std::string& path) {
  std::vector<std::string> chain;
  return load_with_includes(path, chain);
}

void merge_config(ConfigNode& base, const ConfigNode& top) {
  if (base.kind != ConfigNode::Kind::kMap || top.kind != ConfigNode::Kind::kMap) {
    base = top;
    return;
  }
  for (const auto& [key, value] : top.map) {
    if (ConfigNode* existing = base.find(key)) {
      merge_config(*existing, value);
    } else {
      base.map.emplace_back(key, value);
    }
  }
}

void config_apply_override(ConfigNode& root, const std::string& assignment) {
  const std::string source = "--set " + assignment;
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError(fmt::format("{}: expected KEY=VALUE, e.g. --set comm.timeout_s=60", source));
  }
  std::string key = assignment.substr(0, eq);
  ConfigNode value = config_parse_string(assignment.substr(eq + 1), source);
  // Every node of the value names the whole --set argument as its source.
  std::function<void(ConfigNode&)> retag = [&](ConfigNode& n) {
    n.source = source;
    for (auto& kv : n.map) retag(kv.second);
    for (auto& s : n.seq) retag(s);
  };
  retag(value);

  if (root.kind != ConfigNode::Kind::kMap) {
    root = ConfigNode{};
    root.kind = ConfigNode::Kind::kMap;
  }
  ConfigNode* node = &root;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = key.find('.', start);
    std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) throw ConfigError(fmt::format("{}: empty component in key '{}'", source, key));
    ConfigNode* child = node->find(part);
    if (child == nullptr) {
      node->map.emplace_back(part, ConfigNode{});
      child = &node->map.back().second;
      child->source = source;
    }
    if (dot == std::string::npos) {
      *child = value;
      return;
    }
    if (child->kind != ConfigNode::Kind::kMap) {
      *child = ConfigNode{};
      child->kind = ConfigNode::Kind::kMap;
      child->source = source;
    }
    node = child;
    start = dot + 1;
  }
}

ConfigCheck<std::string> config_one_of(const std::vector<std::string>& choices) {
  std::string list = join(choices);
  return {[choices, list](const std::string& v) {
            if (std::find(choices.begin(), choices.end(), v) != choices.end()) return std::string();
            std::string guess = suggest(v, choices);
            return fmt::format("must be one of: {}{}", list,
                               guess.empty() ? "" : fmt::format(" (did you mean '{}'?)", guess));
          },
          "one of: " + list};
}

std::string config_convert(const ConfigNode& node, bool& out) {
  if (node.kind == ConfigNode::Kind::kScalar) {
    if (node.scalar == "true") return out = true, std::string();
    if (node.scalar == "false") return out = false, std::string();
  }
  return "must be true or false";
}

std::string config_convert(const ConfigNode& node, int& out) {
  return convert_int(node, out, "an integer");
}

std::string config_convert(const ConfigNode& node, std::int64_t& out) {
  return convert_int(node, out, "an integer");
}

std::string config_convert(const ConfigNode& node, double& out) {
  if (node.kind != ConfigNode::Kind::kScalar) return "must be a number";
  const std::string& s = node.scalar;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v) || errno == ERANGE) {
    return "must be a finite number";
  }
  out = v;
  return {};
}

std::string config_convert(const ConfigNode& node, std::string& out) {
  if (node.kind != ConfigNode::Kind::kScalar) return "must be a string";
  out = node.scalar;
  return {};
}

std::string config_convert(const ConfigNode& node, std::vector<std::string>& out) {
  if (node.kind != ConfigNode::Kind::kSequence) return "must be a list of strings";
  out.clear();
  for (const auto& item : node.seq) {
    if (item.kind != ConfigNode::Kind::kScalar) return "must be a list of strings";
    out.push_back(item.scalar);
  }
  return {};
}

std::string config_convert(const ConfigNode& node, std::vector<int>& out) {
  if (node.kind != ConfigNode::Kind::kSequence) return "must be a list of integers";
  out.clear();
  for (const auto& item : node.seq) {
    int v = 0;
    if (!convert_int(item, v, "an integer").empty()) return "must be a list of integers";
    out.push_back(v);
  }
  return {};
}

std::string config_convert(const ConfigNode& node, std::map<std::string, double>& out) {
  if (node.kind != ConfigNode::Kind::kMap) return "must be a mapping of names to numbers";
  out.clear();
  for (const auto& [key, value] : node.map) {
    double v = 0;
    if (!config_convert(value, v).empty())
      return fmt::format("must map names to numbers ('{}' is not a number)", key);
    out[key] = v;
  }
  return {};
}

std::string format_config(bool v) {
  return v ? "true" : "false";
}
std::string format_config(int v) {
  return std::to_string(v);
}
std::string format_config(std::int64_t v) {
  return std::to_string(v);
}
std::string format_config(double v) {
  return fmt::format("{}", v);
}
std::string format_config(const std::string& v) {
  return v;
}
std::string format_config(const std::vector<std::string>& v) {
  return "[" + join(v) + "]";
}
std::string format_config(const std::vector<int>& v) {
  std::vector<std::string> s;
  for (int x : v) s.push_back(std::to_string(x));
  return "[" + join(s) + "]";
}

std::string format_config(const std::map<std::string, double>& v) {
  std::string s;
  for (const auto& [k, x] : v) s += (s.empty() ? "" : ", ") + k + ": " + format_config(x);
  return "{" + s + "}";
}

std::string config_type_name(const bool*) {
  return "bool";
}
std::string config_type_name(const int*) {
  return "int";
}
std::string config_type_name(const std::int64_t*) {
  return "int";
}
std::string config_type_name(const double*) {
  return "float";
}
std::string config_type_name(const std::string*) {
  return "string";
}
std::string config_type_name(const std::vector<std::string>*) {
  return "list of strings";
}
std::string config_type_name(const std::vector<int>*) {
  return "list of ints";
}
std::string config_type_name(const std::map<std::string, double>*) {
  return "map of numbers";
}

// ---------------------------------------------------------------- reader

ConfigReader::ConfigReader(const ConfigNode& root) {
  static const ConfigNode empty_map = [] {
    ConfigNode n;
    n.kind = ConfigNode::Kind::kMap;
    return n;
  }();
  if (root.kind == ConfigNode::Kind::kMap) {
    stack_.push_back({&root, "", {}});
  } else {
    if (root.kind != ConfigNode::Kind::kNull) error(root, "a config must be a mapping of keys");
    stack_.push_back({&empty_map, "", {}});
  }
}

const ConfigNode* ConfigReader::use(const char* key) {
  Frame& f = stack_.back();
  f.known.emplace_back(key);
  const ConfigNode* node = f.node->find(key);
  if (node != nullptr && node->kind == ConfigNode::Kind::kNull) {
    error(*node, fmt::format("'{}' has no value", path(key)));
    return nullptr;
  }
  return node;
}

void ConfigReader::enter(const char* key, const ConfigNode& node) {
  stack_.push_back({&node, path(key) + ".", {}});
}

void ConfigReader::leave() {
  const Frame& f = stack_.back();
  for (const auto& [key, value] : f.node->map) {
    if (std::find(f.known.begin(), f.known.end(), key) == f.known.end()) {
      std::string guess = suggest(key, f.known);
      std::string hint = !guess.empty()    ? fmt::format("; did you mean '{}{}'?", f.prefix, guess)
                         : f.known.empty() ? std::string("; this section takes no keys")
                                           : fmt::format("; known keys here: {}", join(f.known));
      error(value, fmt::format("unknown key '{}{}'{}", f.prefix, key, hint));
    }
  }
  stack_.pop_back();
}

void ConfigReader::finish() {
  while (!stack_.empty()) leave();
  if (errors_.empty()) return;
  std::string msg = errors_.size() == 1
                        ? "invalid configuration: "
                        : fmt::format("invalid configuration ({} errors):\n  ", errors_.size());
  for (std::size_t i = 0; i < errors_.size(); ++i) msg += (i ? "\n  " : "") + errors_[i];
  throw ConfigError(msg);
}

std::string ConfigReader::path(const char* key) const {
  return stack_.back().prefix + key;
}

std::string ConfigReader::describe(const ConfigNode& node) {
  switch (node.kind) {
    case ConfigNode::Kind::kScalar: return node.scalar;
    case ConfigNode::Kind::kMap: return "a mapping";
    case ConfigNode::Kind::kSequence: return "a list";
    case ConfigNode::Kind::kNull: break;
  }
  return "nothing";
}

void ConfigReader::error(const ConfigNode& node, const std::string& message) {
  errors_.push_back(node.source.empty() ? message : node.source + ": " + message);
}

// ---------------------------------------------------------------- writer

struct ConfigWriter::Impl {
  YAML::Emitter out;
};

ConfigWriter::ConfigWriter() : impl_(new Impl) {
  impl_->out << YAML::BeginMap;
}
ConfigWriter::~ConfigWriter() {
  delete impl_;
}

void ConfigWriter::write_scalar(const char* key, bool v) {
  impl_->out << YAML::Key << key << YAML::Value << format_config(v);
}
void ConfigWriter::write_scalar(const char* key, int v) {
  impl_->out << YAML::Key << key << YAML::Value << v;
}
void ConfigWriter::write_scalar(const char* key, std::int64_t v) {
  impl_->out << YAML::Key << key << YAML::Value << v;
}
void ConfigWriter::write_scalar(const char* key, double v) {
  impl_->out << YAML::Key << key << YAML::Value << format_config(v);
}
void ConfigWriter::write_scalar(const char* key, const std::string& v) {
  impl_->out << YAML::Key << key << YAML::Value << YAML::DoubleQuoted << v;
}
void ConfigWriter::write_scalar(const char* key, const std::vector<std::string>& v) {
  impl_->out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const auto& s : v) impl_->out << YAML::DoubleQuoted << s;
  impl_->out << YAML::EndSeq;
}
void ConfigWriter::write_scalar(const char* key, const std::vector<int>& v) {
  impl_->out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (int x : v) impl_->out << x;
  impl_->out << YAML::EndSeq;
}
void ConfigWriter::write_scalar(const char* key, const std::map<std::string, double>& v) {
  impl_->out << YAML::Key << key << YAML::Value << YAML::BeginMap;
  for (const auto& [k, x] : v) impl_->out << YAML::Key << k << YAML::Value << format_config(x);
  impl_->out << YAML::EndMap;
}
void ConfigWriter::begin_section(const char* key) {
  impl_->out << YAML::Key << key << YAML::Value << YAML::BeginMap;
}
void ConfigWriter::end_section() {
  impl_->out << YAML::EndMap;
}

std::string ConfigWriter::finish() {
  impl_->out << YAML::EndMap;
  return std::string(impl_->out.c_str()) + "\n";
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace llmrec
