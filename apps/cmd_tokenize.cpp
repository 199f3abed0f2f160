// `llmrec tokenize`: WordPiece-tokenize text lines from stdin, one JSON
// array of ids (or token strings) per line on stdout.
//
//   echo "Crème brûlée" | llmrec tokenize --vocab vocab.txt           # [101,13675,...,102]
//   echo "Crème brûlée" | llmrec tokenize --vocab vocab.txt --tokens  # ["[CLS]","cr",...]
#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "common/error.h"
#include "data/wordpiece.h"

namespace llmrec {
namespace {

struct TokenizeArgs {
  std::string vocab;
  int max_len = 0;
  bool tokens = false;
  bool cased = false;
};

/// Reads stdin in blocks and calls `line` for each line (without its "\n";
/// a last line without one counts).
template <class F>
void for_each_stdin_line(F&& line) {
  std::string pending;
  std::vector<char> block(1 << 16);
  std::size_t got;
  while ((got = std::fread(block.data(), 1, block.size(), stdin)) > 0) {
    std::size_t start = 0;
    for (std::size_t i = 0; i < got; ++i) {
      if (block[i] != '\n') continue;
      if (pending.empty()) {
        line(std::string_view(block.data() + start, i - start));
      } else {
        pending.append(block.data() + start, i - start);
        line(std::string_view(pending));
        pending.clear();
      }
      start = i + 1;
    }
    pending.append(block.data() + start, got - start);
  }
  if (std::ferror(stdin)) throw IoError("cannot read standard input");
  if (!pending.empty()) line(std::string_view(pending));
}

void run_tokenize(const TokenizeArgs& a) {
  WordPieceOptions options;
  options.lowercase = !a.cased;
  const WordPieceTokenizer tok = WordPieceTokenizer::from_file(a.vocab, options);
  std::vector<std::int32_t> ids;
  fmt::memory_buffer out;
  auto flush = [&out] {
    if (out.size() > 0 && std::fwrite(out.data(), 1, out.size(), stdout) != out.size()) {
      throw IoError("cannot write standard output");
    }
    out.clear();
  };
  for_each_stdin_line([&](std::string_view line) {
    tok.encode_into(line, ids, a.max_len);
    if (a.tokens) {
      nlohmann::json pieces = nlohmann::json::array();
      for (std::int32_t id : ids) pieces.push_back(tok.token_of(id));
      const std::string text = pieces.dump();
      out.append(text.data(), text.data() + text.size());
    } else {
      out.push_back('[');
      for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i > 0) out.push_back(',');
        fmt::format_to(std::back_inserter(out), "{}", ids[i]);
      }
      out.push_back(']');
    }
    out.push_back('\n');
    if (out.size() > (1 << 16)) flush();
  });
  flush();
  if (std::fflush(stdout) != 0) throw IoError("cannot write standard output");
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "tokenize",
      "WordPiece-tokenize stdin lines (BERT uncased rules) and print one JSON array of ids per line");
  auto a = std::make_shared<TokenizeArgs>();
  cmd->add_option("--vocab", a->vocab, "vocab.txt of the model (one token a line)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--max-len", a->max_len,
                  "Truncate so that each line has at most N ids, [CLS] and [SEP] included (0: no limit)")
      ->check(CLI::Range(0, 1 << 30))
      ->check(
          [](const std::string& v) { return v == "1" ? std::string("must be 0 or >= 2") : std::string(); })
      ->capture_default_str();
  cmd->add_flag("--tokens", a->tokens,
                "Print the token strings (a JSON array of strings) instead of the ids");
  cmd->add_flag("--cased", a->cased, "Keep case and accents (cased vocabularies)");
  cmd->callback([a] { run_tokenize(*a); });
}

}  // namespace llmrec
