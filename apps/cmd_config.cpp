// `llmrec config`: validate a configuration and print it resolved, or
// print the schema of every key.
#include <cstdio>

#include "apps/app_context.h"
#include "apps/commands.h"
#include "apps/config_options.h"
#include "models/recommender.h"

namespace llmrec {
namespace {

std::string schema_text(bool markdown) {
  std::string out;
  if (markdown) {
    out += "| key | type | default | allowed | meaning |\n| --- | --- | --- | --- | --- |\n";
  }
  for (const auto& k : ConfigSchema::list(Config{})) {
    if (k.type == "section") {
      if (markdown)
        out += fmt::format("| **`{}`** | section | | | {} |\n", k.key, k.doc);
      else
        out += fmt::format("\n{}:  # {}\n", k.key, k.doc);
      continue;
    }
    if (markdown) {
      out += fmt::format("| `{}` | {} | `{}` | {} | {} |\n", k.key, k.type, k.default_value, k.constraint,
                         k.doc);
    } else {
      out += fmt::format("  {:<26} {:<7} default {:<12} {}{}\n", k.key, k.type, k.default_value, k.doc,
                         k.constraint.empty() ? "" : " (" + k.constraint + ")");
    }
  }
  return out;
}

}  // namespace

void add_config_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("config", "Validate a configuration and print it resolved (includes, --set)");
  auto options = std::make_shared<ConfigOptions>();
  auto schema = std::make_shared<bool>(false);
  auto markdown = std::make_shared<bool>(false);
  add_config_options(*cmd, *options);
  cmd->add_flag("--schema", *schema, "Print every key with its type, default and meaning instead");
  cmd->add_flag("--markdown", *markdown, "With --schema: as a Markdown table (docs/configuration.md)");
  cmd->callback([options, schema, markdown] {
    if (*schema) {
      std::fputs(schema_text(*markdown).c_str(), stdout);
      return;
    }
    Config config = app_load_config(*options);
    check_recommender_config(config.model);  // the rules between keys, as train applies them
    std::fputs(ConfigWriter::write(config).c_str(), stdout);
  });
}

}  // namespace llmrec
