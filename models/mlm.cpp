#include "models/mlm.h"

#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "common/error.h"
#include "common/random.h"
#include "models/lora.h"
#include "models/loss.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;

std::int32_t find_token(const std::vector<std::string>& vocab, const std::string& token,
                        const std::string& where, bool required) {
  for (std::size_t i = 0; i < vocab.size(); ++i) {
    if (vocab[i] == token) return static_cast<std::int32_t>(i);
  }
  if (required) {
    throw ConfigError(fmt::format(
        "{}: the vocabulary has no {} token, which masked-language-model pre-training needs", where, token));
  }
  return -1;
}

}  // namespace

MlmVocab MlmVocab::from(const std::vector<std::string>& vocab, const std::string& where) {
  MlmVocab v;
  v.size = static_cast<std::int64_t>(vocab.size());
  v.pad = find_token(vocab, "[PAD]", where, true);
  v.cls = find_token(vocab, "[CLS]", where, true);
  v.sep = find_token(vocab, "[SEP]", where, true);
  v.mask = find_token(vocab, "[MASK]", where, true);
  v.unk = find_token(vocab, "[UNK]", where, false);
  v.continuation.assign(vocab.size(), 0);
  v.special.assign(vocab.size(), 0);
  for (std::size_t i = 0; i < vocab.size(); ++i) v.continuation[i] = vocab[i].rfind("##", 0) == 0 ? 1 : 0;
  for (std::int32_t id : {v.pad, v.cls, v.sep, v.mask, v.unk}) {
    if (id >= 0) v.special[static_cast<std::size_t>(id)] = 1;
  }
  return v;
}

std::uint64_t mlm_text_seed(std::uint64_t seed, std::uint64_t pass, std::uint64_t text) {
  return splitmix64(splitmix64(splitmix64(seed) ^ pass) ^ text);
}

MaskedText mlm_mask_text(const std::int32_t* tokens, std::int64_t len, const MlmVocab& vocab,
                         const MlmMaskOptions& options, std::uint64_t seed) {
  MaskedText out;
  out.input.assign(tokens, tokens + len);
  out.labels.assign(static_cast<std::size_t>(len), -1);
  // Candidate pieces grouped into words (a "##" piece joins the piece
  // before it when that one is a candidate too).
  std::vector<std::vector<std::int64_t>> words;
  std::int64_t candidates = 0;
  for (std::int64_t i = 0; i < len; ++i) {
    const std::int32_t id = tokens[i];
    if (id < 0 || id >= vocab.size || vocab.special[static_cast<std::size_t>(id)] != 0) continue;
    ++candidates;
    const bool joins = options.whole_word && vocab.continuation[static_cast<std::size_t>(id)] != 0 &&
                       !words.empty() && words.back().back() == i - 1;
    if (joins) {
      words.back().push_back(i);
    } else {
      words.push_back({i});
    }
  }
  if (candidates == 0) return out;
  const auto want = std::max<std::int64_t>(1, std::llround(options.prob * static_cast<double>(candidates)));
  std::mt19937_64 gen(seed);
  random_shuffle(words, gen);
  std::vector<std::uint8_t> chosen(static_cast<std::size_t>(len), 0);
  std::int64_t covered = 0;
  for (const auto& w : words) {
    if (covered >= want) break;
    const auto n = static_cast<std::int64_t>(w.size());
    if (covered + n > want) continue;
    for (std::int64_t i : w) chosen[static_cast<std::size_t>(i)] = 1;
    covered += n;
  }
  for (std::int64_t i = 0; i < len; ++i) {
    if (chosen[static_cast<std::size_t>(i)] == 0) continue;
    const auto at = static_cast<std::size_t>(i);
    out.labels[at] = tokens[i];
    ++out.predicted;
    const double u = random_unit(gen());
    if (u < 0.8) {
      out.input[at] = vocab.mask;
    } else if (u < 0.9) {
      // A random non-special piece (a few tries; a vocabulary of special
      // tokens alone keeps the piece).
      for (int tries = 0; tries < 64; ++tries) {
        const auto id =
            static_cast<std::int32_t>(random_below(gen(), static_cast<std::uint64_t>(vocab.size)));
        if (vocab.special[static_cast<std::size_t>(id)] == 0) {
          out.input[at] = id;
          break;
        }
      }
    }
  }
  return out;
}

BertForMaskedLMImpl::BertForMaskedLMImpl(const BertConfig& config) : config_(config) {
  bert = register_module("bert", BertModel(config_, /*add_pooler=*/false));
  // The lookup's gradient as sparse rows: the tied decoder's dense gradient
  // (always there, zeros without masked pieces) absorbs them in place,
  // instead of a zeroed [V, H] gradient of its own added to it each step.
  bert->embeddings->word_embeddings->options.sparse(true);
  auto cls = register_module("cls", std::make_shared<torch::nn::Module>());
  auto predictions = cls->register_module("predictions", std::make_shared<torch::nn::Module>());
  auto transform = predictions->register_module("transform", std::make_shared<torch::nn::Module>());
  const std::int64_t h = config_.hidden_size;
  dense = transform->register_module("dense", torch::nn::Linear(h, h));
  layer_norm = transform->register_module(
      "LayerNorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h}).eps(config_.layer_norm_eps)));
  bias = predictions->register_parameter("bias", torch::zeros({config_.vocab_size}));
  torch::NoGradGuard no_grad;
  dense->weight.normal_(0.0, config_.initializer_range);
  dense->bias.zero_();
}

torch::Tensor BertForMaskedLMImpl::transformed_at(const torch::Tensor& input_ids,
                                                  const torch::Tensor& attention_mask,
                                                  const torch::Tensor& positions) {
  return layer_norm(torch::gelu(dense(bert->hidden_at(input_ids, attention_mask, positions))));
}

torch::Tensor BertForMaskedLMImpl::logits_at(const torch::Tensor& input_ids,
                                             const torch::Tensor& attention_mask,
                                             const torch::Tensor& positions) {
  return torch::nn::functional::linear(transformed_at(input_ids, attention_mask, positions),
                                       bert->embeddings->word_embeddings->weight, bias);
}

MlmSums BertForMaskedLMImpl::loss(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                  const torch::Tensor& labels, bool accuracy) {
  const torch::Tensor flat = labels.reshape({-1}).to(torch::kLong);
  const torch::Tensor positions = flat.ge(0).nonzero().squeeze(1);
  const torch::Tensor h = transformed_at(input_ids, attention_mask, positions);
  const torch::Tensor& decoder = bert->embeddings->word_embeddings->weight;
  const torch::Tensor target = flat.index_select(0, positions).to(h.device());
  MlmSums s;
  s.predicted = positions.numel();
  if (accuracy && s.predicted > 0) {  // the logits themselves are needed
    const torch::Tensor logits = torch::nn::functional::linear(h, decoder, bias);
    s.loss_sum = torch::nn::functional::cross_entropy(
        logits, target, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    s.correct = logits.detach().argmax(1).eq(target).sum().item<std::int64_t>();
  } else {
    s.loss_sum = linear_cross_entropy_sum(h, decoder, bias, target);
  }
  return s;
}

std::map<std::string, torch::Tensor> BertForMaskedLMImpl::head_tensors() const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : named_parameters()) {
    if (p.key().rfind("cls.", 0) == 0) out.emplace(p.key(), p.value());
  }
  return out;
}

int BertForMaskedLMImpl::load_head(const std::map<std::string, torch::Tensor>& tensors,
                                   const std::string& source) {
  torch::NoGradGuard no_grad;
  int copied = 0;
  for (auto& [name, target] : head_tensors()) {
    auto it = tensors.find(name);
    if (it == tensors.end()) continue;
    if (it->second.sizes() != target.sizes()) {
      throw IoError(fmt::format("{}: tensor '{}' has shape [{}], the model expects [{}]", source, name,
                                fmt::join(it->second.sizes(), ", "), fmt::join(target.sizes(), ", ")));
    }
    target.copy_(it->second.to(target.scalar_type()));
    ++copied;
  }
  return copied;
}

void save_mlm_hf(const std::string& dir, BertForMaskedLMImpl& model, const std::string& vocab_path) {
  // Written next to the destination, then swapped in: a crash leaves the
  // old directory or the new one, never a mix.
  const fs::path target(dir);
  const fs::path tmp = target.string() + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  torch::NoGradGuard no_grad;
  save_hf_directory(tmp.string(), model.bert, model.config(), vocab_path, c10::kFloat, model.head_tensors(),
                    "BertForMaskedLM");
  fs::remove_all(target, ec);
  fs::rename(tmp, target, ec);
  if (ec)
    throw IoError(fmt::format("{}: cannot move the pre-trained model into place: {}", dir, ec.message()));
}

}  // namespace llmrec
