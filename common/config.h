#pragma once
/// YAML configuration bound to typed structs.
///
/// Each config struct lists its keys once, in a `visit` member template; the
/// same list reads YAML (with every key validated), writes the resolved
/// config, and prints the schema:
///
///   struct CommConfig {
///     double timeout_s = 300;
///     template <class V> void visit(V& v) {
///       v.field("timeout_s", timeout_s, "Collective timeout", config_range(0.1, 86400.0));
///     }
///   };
///
/// Loading resolves `include:` (a path or list of paths relative to the
/// including file; later files and the including file override earlier
/// ones), then applies `--set a.b=c` overrides. Errors name the file:line (or
/// the --set argument) and, for an unknown key, the closest known key. All
/// errors of a file are reported together in one ConfigError.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"

namespace llmrec {

/// A parsed YAML value that remembers where it came from.
struct ConfigNode {
  enum class Kind { kNull, kScalar, kMap, kSequence };
  Kind kind = Kind::kNull;
  std::string scalar;                                   ///< Kind::kScalar
  std::vector<std::pair<std::string, ConfigNode>> map;  ///< Kind::kMap, file order
  std::vector<ConfigNode> seq;                          ///< Kind::kSequence
  std::string source;                                   ///< "path.yaml:12" or "--set a.b=1"

  const ConfigNode* find(const std::string& key) const;
  ConfigNode* find(const std::string& key);
};

/// Parses YAML text (no include resolution). `name` is used in messages.
ConfigNode config_parse_string(const std::string& text, const std::string& name);
/// Parses a file and resolves its `include:` chain.
ConfigNode config_load_file(const std::string& path);
/// Overlays `top` onto `base`: maps merge key by key, anything else replaces.
void merge_config(ConfigNode& base, const ConfigNode& top);
/// Applies one "a.b.c=value" override; value is YAML ("3", "[a, b]", "x").
void config_apply_override(ConfigNode& root, const std::string& assignment);

/// A named constraint on a field's value: `check` returns "" when valid,
/// else the reason; `describe` is shown in the schema ("one of: a, b").
template <class T>
struct ConfigCheck {
  std::function<std::string(const T&)> check;
  std::string describe;
};

ConfigCheck<std::string> config_one_of(const std::vector<std::string>& choices);

template <class T>
ConfigCheck<T> config_range(T lo, T hi) {
  return {[lo, hi](const T& v) {
            return (v >= lo && v <= hi) ? std::string() : fmt::format("must be in [{}, {}]", lo, hi);
          },
          fmt::format("in [{}, {}]", lo, hi)};
}

/// Value conversion from a scalar node; returns "" or what was expected.
std::string config_convert(const ConfigNode& node, bool& out);
std::string config_convert(const ConfigNode& node, int& out);
std::string config_convert(const ConfigNode& node, std::int64_t& out);
std::string config_convert(const ConfigNode& node, double& out);
std::string config_convert(const ConfigNode& node, std::string& out);
std::string config_convert(const ConfigNode& node, std::vector<std::string>& out);
std::string config_convert(const ConfigNode& node, std::vector<int>& out);
std::string config_convert(const ConfigNode& node, std::map<std::string, double>& out);

std::string format_config(bool v);
std::string format_config(int v);
std::string format_config(std::int64_t v);
std::string format_config(double v);
std::string format_config(const std::string& v);
std::string format_config(const std::vector<std::string>& v);
std::string format_config(const std::vector<int>& v);
std::string format_config(const std::map<std::string, double>& v);

std::string config_type_name(const bool*);
std::string config_type_name(const int*);
std::string config_type_name(const std::int64_t*);
std::string config_type_name(const double*);
std::string config_type_name(const std::string*);
std::string config_type_name(const std::vector<std::string>*);
std::string config_type_name(const std::vector<int>*);
std::string config_type_name(const std::map<std::string, double>*);

/// Visitor that reads a ConfigNode tree into a struct, collecting errors.
class ConfigReader {
 public:
  explicit ConfigReader(const ConfigNode& root);

  template <class T>
  void field(const char* key, T& value, const char* doc, const ConfigCheck<T>& check = {}) {
    const ConfigNode* node = use(key);
    if (node == nullptr) return;
    T parsed{};
    std::string problem = config_convert(*node, parsed);
    if (problem.empty() && check.check) problem = check.check(parsed);
    if (!problem.empty()) {
      error(*node, fmt::format("'{}' {}, got '{}'", path(key), problem, describe(*node)));
      return;
    }
    value = std::move(parsed);
  }

  template <class S>
  void section(const char* key, S& sub, const char* doc) {
    const ConfigNode* node = use(key);
    if (node == nullptr) return;
    if (node->kind != ConfigNode::Kind::kMap) {
      error(*node, fmt::format("'{}' must be a mapping of keys", path(key)));
      return;
    }
    enter(key, *node);
    sub.visit(*this);
    leave();
  }

  /// Reads the whole tree into `config`; throws one ConfigError listing
  /// every problem (unknown keys, wrong types, out-of-range values).
  template <class C>
  static void read(const ConfigNode& root, C& config) {
    ConfigReader reader(root);
    config.visit(reader);
    reader.finish();
  }

 private:
  struct Frame {
    const ConfigNode* node;
    std::string prefix;
    std::vector<std::string> known;
  };
  const ConfigNode* use(const char* key);
  void enter(const char* key, const ConfigNode& node);
  void leave();
  void finish();
  std::string path(const char* key) const;
  static std::string describe(const ConfigNode& node);
  void error(const ConfigNode& node, const std::string& message);

  std::vector<Frame> stack_;
  std::vector<std::string> errors_;
};

/// Visitor that writes a struct as YAML (the resolved config).
class ConfigWriter {
 public:
  ConfigWriter();
  ~ConfigWriter();
  ConfigWriter(const ConfigWriter&) = delete;
  ConfigWriter& operator=(const ConfigWriter&) = delete;

  template <class T>
  void field(const char* key, const T& value, const char* doc, const ConfigCheck<T>& = {}) {
    write_scalar(key, value);
  }
  template <class S>
  void section(const char* key, S& sub, const char* doc) {
    begin_section(key);
    sub.visit(*this);
    end_section();
  }

  template <class C>
  static std::string write(C& config) {
    ConfigWriter writer;
    config.visit(writer);
    return writer.finish();
  }

 private:
  void write_scalar(const char* key, bool v);
  void write_scalar(const char* key, int v);
  void write_scalar(const char* key, std::int64_t v);
  void write_scalar(const char* key, double v);
  void write_scalar(const char* key, const std::string& v);
  void write_scalar(const char* key, const std::vector<std::string>& v);
  void write_scalar(const char* key, const std::vector<int>& v);
  void write_scalar(const char* key, const std::map<std::string, double>& v);
  void begin_section(const char* key);
  void end_section();
  std::string finish();

  struct Impl;
  Impl* impl_;
};

/// One documented key of the schema.
struct ConfigKeyDoc {
  std::string key;  ///< dotted path
  std::string type;
  std::string default_value;
  std::string constraint;
  std::string doc;
};

/// Visitor that lists every key with its type, default and documentation.
class ConfigSchema {
 public:
  template <class T>
  void field(const char* key, const T& value, const char* doc, const ConfigCheck<T>& check = {}) {
    keys_.push_back({prefix_ + key, config_type_name(&value), format_config(value), check.describe, doc});
  }
  template <class S>
  void section(const char* key, S& sub, const char* doc) {
    keys_.push_back({prefix_ + key, "section", "", "", doc});
    std::string saved = prefix_;
    prefix_ += std::string(key) + ".";
    sub.visit(*this);
    prefix_ = saved;
  }

  template <class C>
  static std::vector<ConfigKeyDoc> list(C config) {
    ConfigSchema schema;
    config.visit(schema);
    return schema.keys_;
  }

 private:
  std::string prefix_;
  std::vector<ConfigKeyDoc> keys_;
};

/// Loads `path` (may be empty: defaults only), applies the overrides and
/// reads the result into `config`.
template <class C>
void load_config(const std::string& path, const std::vector<std::string>& overrides, C& config) {
  ConfigNode root;
  if (!path.empty()) root = config_load_file(path);
  for (const auto& o : overrides) config_apply_override(root, o);
  ConfigReader::read(root, config);
}

/// Levenshtein distance, for "did you mean" suggestions.
std::size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace llmrec
