// `llmrec encode`: run the BERT encoder of an HF model directory on JSON
// lines from stdin and write one JSON line of outputs per input line.
//
//   echo '{"input_ids": [[101, 2000, 102]], "attention_mask": [[1, 1, 1]]}' | llmrec encode --model tiny-bert
//   echo '{"input_ids": [101, 2000, 102]}' | llmrec encode --model tiny-bert --dtype float64
//   echo '{"text": "Crème brûlée"}' | llmrec encode --model tiny-bert --max-len 32
//
// Output: {"last_hidden_state": {"shape": [N, L, H], "data": [...]},
//          "pooler_output": {"shape": [N, H], "data": [...]}}
// (row-major; numbers in the shortest form that reads back to the same
// float32/float64 value). Blank lines are skipped. A bad line stops the run
// with an error naming the stdin line number and the field.
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "common/error.h"
#include "common/logging.h"
#include "data/wordpiece.h"
#include "models/hf_loader.h"
#include "models/lora.h"

namespace llmrec {
namespace {

using nlohmann::json;

struct EncodeArgs {
  std::string model;
  std::string dtype = "float32";
  int max_len = 0;
  std::string adapter;
  bool no_pooler = false;
};

[[noreturn]] void line_fail(std::size_t line, const std::string& message) {
  throw Error(fmt::format("stdin line {}: {}", line, message));
}

/// One [N, L] integer field: a list of equal-length lists, or a flat list
/// for one sequence (`flat` tells which the caller expects to match).
torch::Tensor parse_rows(const json& value, const char* field, std::size_t line, bool& flat) {
  if (!value.is_array() || value.empty())
    line_fail(line, fmt::format("field '{}' must be a non-empty list", field));
  flat = !value.front().is_array();
  std::vector<std::int64_t> data;
  std::int64_t rows = 0;
  std::int64_t cols = -1;
  auto take = [&](const json& v, std::int64_t row, std::int64_t col) {
    if (v.is_boolean()) {
      data.push_back(v.get<bool>() ? 1 : 0);
    } else if (v.is_number_integer()) {
      data.push_back(v.get<std::int64_t>());
    } else {
      line_fail(line, fmt::format("field '{}' [{}][{}] is {}, not an integer", field, row, col, v.dump()));
    }
  };
  if (flat) {
    for (std::size_t j = 0; j < value.size(); ++j) take(value[j], 0, static_cast<std::int64_t>(j));
    rows = 1;
    cols = static_cast<std::int64_t>(value.size());
  } else {
    for (std::size_t i = 0; i < value.size(); ++i) {
      const json& row = value[i];
      if (!row.is_array()) line_fail(line, fmt::format("field '{}' row {} is not a list", field, i));
      if (cols >= 0 && static_cast<std::int64_t>(row.size()) != cols) {
        line_fail(line,
                  fmt::format("field '{}' row {} has {} values, row 0 has {} (pad the rows to one length)",
                              field, i, row.size(), cols));
      }
      cols = static_cast<std::int64_t>(row.size());
      for (std::size_t j = 0; j < row.size(); ++j)
        take(row[j], static_cast<std::int64_t>(i), static_cast<std::int64_t>(j));
    }
    rows = static_cast<std::int64_t>(value.size());
    if (cols == 0) line_fail(line, fmt::format("field '{}' has empty rows", field));
  }
  return torch::tensor(data, torch::kLong).reshape({rows, cols});
}

/// Appends {"shape": [...], "data": [...]} for a float32 or float64 tensor.
void append_tensor(fmt::memory_buffer& out, const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  fmt::format_to(std::back_inserter(out), "{{\"shape\": [{}], \"data\": [", fmt::join(c.sizes(), ", "));
  const std::int64_t n = c.numel();
  auto put = [&](auto v, std::int64_t i) {
    if (i > 0) out.push_back(',');
    if (std::isfinite(v)) {
      fmt::format_to(std::back_inserter(out), "{}", v);
    } else {
      fmt::format_to(std::back_inserter(out), "null");
    }
  };
  if (c.scalar_type() == torch::kDouble) {
    const double* p = c.data_ptr<double>();
    for (std::int64_t i = 0; i < n; ++i) put(p[i], i);
  } else {
    torch::Tensor f = c.to(torch::kFloat).contiguous();
    const float* p = f.data_ptr<float>();
    for (std::int64_t i = 0; i < n; ++i) put(p[i], i);
  }
  out.append(std::string_view("]}"));
}

/// Tokenizer options from the model directory's tokenizer_config.json, when
/// it has one (cased models say do_lower_case: false there).
WordPieceOptions tokenizer_options(const std::string& dir) {
  WordPieceOptions options;
  const std::filesystem::path path = std::filesystem::path(dir) / "tokenizer_config.json";
  if (!std::filesystem::exists(path)) return options;
  std::ifstream in(path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw IoError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
  }
  if (auto it = j.find("do_lower_case"); it != j.end() && it->is_boolean())
    options.lowercase = it->get<bool>();
  if (auto it = j.find("strip_accents"); it != j.end() && it->is_boolean())
    options.strip_accents = it->get<bool>();
  return options;
}

/// One model input: ids [B, L], with its mask and token types (undefined:
/// all ones / all zeros).
struct EncodeInput {
  torch::Tensor ids;
  torch::Tensor mask;
  torch::Tensor types;
};

/// The next line of standard input into `text`; false at the end.
bool read_line(std::string& text, std::size_t& line) {
  text.clear();
  int c = 0;
  while ((c = std::fgetc(stdin)) != EOF && c != '\n') text.push_back(static_cast<char>(c));
  if (std::ferror(stdin)) throw IoError("cannot read standard input");
  ++line;
  return c != EOF || !text.empty();
}

/// Field 'input_ids' (with 'attention_mask' and 'token_type_ids') of line
/// `line`, checked against the model (length, vocabulary, type vocabulary).
EncodeInput ids_input(const json& input, std::size_t line, const HfBert& bert, std::int64_t max_len,
                      bool max_len_given) {
  EncodeInput in;
  torch::Tensor& ids = in.ids;
  torch::Tensor& mask = in.mask;
  torch::Tensor& types = in.types;
  if (!input.contains("input_ids")) line_fail(line, "missing field 'input_ids' (or 'text')");
  bool flat = false;
  ids = parse_rows(input["input_ids"], "input_ids", line, flat);
  if (ids.size(1) > max_len) {
    line_fail(line, fmt::format("field 'input_ids' has length {}, more than {} ({})", ids.size(1), max_len,
                                max_len_given ? "--max-len" : "max_position_embeddings"));
  }
  const std::int64_t lo = ids.min().item<std::int64_t>();
  const std::int64_t hi = ids.max().item<std::int64_t>();
  if (lo < 0 || hi >= bert.config.vocab_size) {
    line_fail(line, fmt::format("field 'input_ids' has ids in [{}, {}], outside [0, {}) (vocab_size)", lo, hi,
                                bert.config.vocab_size));
  }
  for (const char* field : {"attention_mask", "token_type_ids"}) {
    if (!input.contains(field)) continue;
    bool field_flat = false;
    torch::Tensor t = parse_rows(input[field], field, line, field_flat);
    if (field_flat != flat) {
      line_fail(line, fmt::format("field '{}' is {} but field 'input_ids' is {}", field,
                                  field_flat ? "a flat list" : "a list of lists",
                                  flat ? "a flat list" : "a list of lists"));
    }
    if (t.sizes() != ids.sizes()) {
      line_fail(line, fmt::format("field '{}' has shape [{}], field 'input_ids' [{}]", field,
                                  fmt::join(t.sizes(), ", "), fmt::join(ids.sizes(), ", ")));
    }
    (std::string(field) == "attention_mask" ? mask : types) = t;
  }
  if (mask.defined() && (mask.min().item<std::int64_t>() < 0 || mask.max().item<std::int64_t>() > 1)) {
    line_fail(line, "field 'attention_mask' must hold 0 (pad) or 1 (token)");
  }
  if (types.defined() && (types.min().item<std::int64_t>() < 0 ||
                          types.max().item<std::int64_t>() >= bert.config.type_vocab_size)) {
    line_fail(line, fmt::format("field 'token_type_ids' must be in [0, {}) (type_vocab_size)",
                                bert.config.type_vocab_size));
  }
  return in;
}

/// Field 'text' of line `line`, tokenized with the model's vocab.txt
/// (loaded on first use).
EncodeInput text_input(const json& input, std::size_t line, const HfBert& bert, const std::string& model_dir,
                       std::int64_t max_len, std::optional<WordPieceTokenizer>& tokenizer) {
  if (input.contains("input_ids")) line_fail(line, "give either field 'text' or field 'input_ids', not both");
  if (input.contains("attention_mask") || input.contains("token_type_ids")) {
    line_fail(line, "field 'text' comes without attention_mask/token_type_ids (they are made from the text)");
  }
  const json& t = input["text"];
  if (!t.is_string()) line_fail(line, fmt::format("field 'text' must be a string, got {}", t.dump()));
  if (!tokenizer) {
    if (bert.vocab_path.empty()) {
      line_fail(line, fmt::format("field 'text' needs a vocab.txt in {} (or give input_ids)", model_dir));
    }
    tokenizer.emplace(WordPieceTokenizer::from_file(bert.vocab_path, tokenizer_options(model_dir)));
  }
  std::vector<std::int32_t> encoded = tokenizer->encode(t.get<std::string>(), static_cast<int>(max_len));
  EncodeInput in;
  in.ids =
      torch::tensor(std::vector<std::int64_t>(encoded.begin(), encoded.end()), torch::kLong).unsqueeze(0);
  in.mask = torch::ones_like(in.ids);
  return in;
}

/// Line `line` as a JSON object with known fields only.
json parse_encode_line(const std::string& text, std::size_t line) {
  json input;
  try {
    input = json::parse(text);
  } catch (const json::exception& e) {
    line_fail(line, fmt::format("not valid JSON: {}", e.what()));
  }
  if (!input.is_object()) line_fail(line, "expected a JSON object with 'input_ids' or 'text'");
  for (const auto& item : input.items()) {
    const std::string& key = item.key();
    if (key != "input_ids" && key != "attention_mask" && key != "token_type_ids" && key != "text") {
      line_fail(line,
                fmt::format("unknown field '{}' (expected input_ids, attention_mask, token_type_ids or text)",
                            key));
    }
  }
  return input;
}

/// {"last_hidden_state": ..., "pooler_output": ...} on one line of stdout.
void write_output(const BertOutput& result, fmt::memory_buffer& out) {
  out.clear();
  out.append(std::string_view("{\"last_hidden_state\": "));
  append_tensor(out, result.last_hidden_state);
  if (result.pooler_output.defined()) {
    out.append(std::string_view(", \"pooler_output\": "));
    append_tensor(out, result.pooler_output);
  }
  out.append(std::string_view("}\n"));
  if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0) {
    throw IoError("cannot write standard output");
  }
}

void run_encode(const EncodeArgs& a) {
  LogConfig log;
  init_logging(log, 0, 1);  // stderr: stdout carries only the JSON lines

  HfBertLoadOptions options;
  options.dtype = a.dtype == "float64" ? torch::kDouble : torch::kFloat;
  options.add_pooler = !a.no_pooler;
  HfBert bert = load_hf_bert(a.model, options);
  if (!a.adapter.empty()) {
    load_peft_adapter(a.adapter, bert.model);
    merge_lora(*bert.model);
  }
  bert.model->eval();
  const std::int64_t max_positions = bert.config.max_position_embeddings;
  if (a.max_len > max_positions) {
    throw Error(
        fmt::format("--max-len {} exceeds the model's max_position_embeddings {}", a.max_len, max_positions));
  }
  const std::int64_t max_len = a.max_len > 0 ? a.max_len : max_positions;

  std::optional<WordPieceTokenizer> tokenizer;
  torch::NoGradGuard no_grad;
  fmt::memory_buffer out;
  std::string text;
  std::size_t line = 0;
  while (read_line(text, line)) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const json input = parse_encode_line(text, line);
    const EncodeInput in = input.contains("text") ? text_input(input, line, bert, a.model, max_len, tokenizer)
                                                  : ids_input(input, line, bert, max_len, a.max_len > 0);
    BertOutput result;
    try {
      result = bert.model->forward(in.ids, in.mask, in.types);
    } catch (const Error& e) {
      line_fail(line, e.what());
    } catch (const c10::Error& e) {
      line_fail(line, e.what_without_backtrace());
    }
    write_output(result, out);
  }
}

}  // namespace

void add_encode_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("encode",
                         "Run the BERT encoder of an HF model directory on JSON lines from stdin "
                         "({\"input_ids\": [[...]], \"attention_mask\": [[...]]} or {\"text\": \"...\"})");
  auto args = std::make_shared<EncodeArgs>();
  cmd->add_option("--model", args->model, "HF model directory: config.json, model.safetensors, vocab.txt")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--dtype", args->dtype, "Compute in float32 or float64")
      ->check(CLI::IsMember({"float32", "float64"}))
      ->capture_default_str();
  cmd->add_option("--max-len", args->max_len,
                  "Longest sequence: text is truncated to it, longer input_ids are an error "
                  "(0 = the model's max_position_embeddings)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--adapter", args->adapter,
                  "PEFT LoRA adapter directory to apply (merged into the weights)")
      ->check(CLI::ExistingDirectory);
  cmd->add_flag("--no-pooler", args->no_pooler,
                "Build the encoder without its pooler (for checkpoints without one)");
  cmd->callback([args] { run_encode(*args); });
}

}  // namespace llmrec
