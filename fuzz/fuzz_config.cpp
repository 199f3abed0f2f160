// libFuzzer target: the YAML configuration loader (common/config.cpp) bound
// to the whole application Config (apps/app_config.h), as `llmrec config`
// and every subcommand load it.
//
// Input: YAML text; after a NUL byte, NUL-separated `--set` overrides
// (KEY=VALUE). The accepted configuration must survive the round trip
// `llmrec config` and the run directory's config.yaml rely on: written out
// (ConfigWriter), read back, it is the same configuration.
#include <cstdint>
#include <string>
#include <vector>

#include "apps/app_config.h"
#include "data/text.h"
#include "fuzz/fuzz_util.h"

using namespace llmrec;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  for (std::size_t start = 0;;) {
    const std::size_t nul = input.find('\0', start);
    parts.push_back(input.substr(start, nul == std::string::npos ? std::string::npos : nul - start));
    if (nul == std::string::npos) break;
    start = nul + 1;
  }
  std::string written;
  fuzz::expect_clean([&] {
    ConfigNode root = config_parse_string(parts[0], "fuzz.yaml");
    for (std::size_t i = 1; i < parts.size(); ++i) config_apply_override(root, parts[i]);
    Config config;
    ConfigReader::read(root, config);
    config.model.validate();
    written = ConfigWriter::write(config);
  });
  // The round trip. YAML cannot carry every byte string (the emitter
  // replaces ill-formed UTF-8), so it is checked for UTF-8 input only.
  if (written.empty() || !utf8_valid(input)) return 0;
  fuzz::expect_clean([&] {
    Config again;
    try {
      ConfigReader::read(config_parse_string(written, "resolved.yaml"), again);
    } catch (const Error& e) {
      fuzz::fuzz_fail(std::string("the resolved config does not read back: ") + e.what() + "\n" + written);
    }
    const std::string rewritten = ConfigWriter::write(again);
    if (rewritten != written) {
      fuzz::fuzz_fail("the resolved config reads back differently:\n--- written\n" + written +
                      "--- re-written\n" + rewritten);
    }
  });
  return 0;
}
