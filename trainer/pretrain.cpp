#include "trainer/pretrain.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "common/error.h"
#include "common/hdf5.h"
#include "common/random.h"
#include "data/vocab_builder.h"
#include "data/wordpiece.h"
#include "distributed/agree.h"
#include "distributed/gradient_reducer.h"
#include "models/hf_loader.h"
#include "models/recommender.h"
#include "trainer/checkpoint.h"
#include "trainer/optimizer.h"
#include "trainer/progress.h"
#include "trainer/trainer.h"

namespace llmrec {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

/// Held-out texts are masked the same way at every evaluation: pass 0;
/// epoch e of training uses pass e + 1.
constexpr std::uint64_t kHeldoutPass = 0;

/// The epoch's order of the training texts (indices into PretrainTexts::train).
std::vector<std::int64_t> epoch_order(std::int64_t n, std::uint64_t seed, std::int64_t epoch) {
  std::mt19937_64 gen(splitmix64(splitmix64(seed) ^ 0x6d6c6dULL) ^ static_cast<std::uint64_t>(epoch));
  return random_permutation(n, gen);
}

BertConfig bert_config_of_checkpoint(const h5::File& f) {
  try {
    return BertConfig::from_json_string(f.attr_string("/", "bert_config"), f.path() + " [bert_config]");
  } catch (const ConfigError& e) {
    throw IoError(fmt::format("{}: the stored encoder configuration is invalid: {}", f.path(), e.what()));
  }
}

h5::File open_pretrain_checkpoint(const std::string& path) {
  return open_checkpoint(path, kPretrainCheckpointFormat, kPretrainCheckpointVersion,
                         "llmrec pre-training checkpoint");
}

}  // namespace

MlmBatch mlm_batch(const std::vector<MaskedText>& texts, std::int32_t pad) {
  std::int64_t width = 1;
  for (const auto& m : texts) width = std::max(width, static_cast<std::int64_t>(m.input.size()));
  MlmBatch b;
  const auto n = static_cast<std::int64_t>(texts.size());
  b.ids = torch::full({n, width}, pad, torch::kLong);
  b.attention = torch::zeros({n, width}, torch::kLong);
  b.labels = torch::full({n, width}, -1, torch::kLong);
  auto ids = b.ids.accessor<std::int64_t, 2>();
  auto attention = b.attention.accessor<std::int64_t, 2>();
  auto labels = b.labels.accessor<std::int64_t, 2>();
  for (std::int64_t r = 0; r < n; ++r) {
    const MaskedText& m = texts[static_cast<std::size_t>(r)];
    for (std::size_t i = 0; i < m.input.size(); ++i) {
      const auto c = static_cast<std::int64_t>(i);
      ids[r][c] = m.input[i];
      attention[r][c] = 1;
      labels[r][c] = m.labels[i];
    }
    b.predicted += m.predicted;
  }
  return b;
}

MlmSums pretrain_step(BertForMaskedLMImpl& model, const MlmBatch& batch, double normaliser,
                      GradientReducer& reducer, torch::optim::AdamW& optimizer,
                      const std::vector<torch::Tensor>& trainable, double clip_norm, double lr,
                      double* grad_norm) {
  MlmSums s = model.loss(batch.ids, batch.attention, batch.labels, /*accuracy=*/false);
  (s.loss_sum / std::max(normaliser, 1.0)).backward();
  reducer.finish();
  if (clip_norm > 0 || grad_norm != nullptr) {  // the norm costs a pass over every gradient
    const double norm = torch::nn::utils::clip_grad_norm_(
        trainable, clip_norm > 0 ? clip_norm : std::numeric_limits<double>::infinity());
    if (grad_norm != nullptr) *grad_norm = norm;
  }
  set_learning_rate(optimizer, lr);
  optimizer.step();
  release_gradients(optimizer);
  return s;
}

PretrainTexts pretrain_split_texts(const ItemTable& items, int text_len, const MlmVocab& vocab,
                                   double holdout, std::uint64_t seed) {
  PretrainTexts out;
  std::vector<std::int64_t> usable;
  const auto n_items = static_cast<std::int64_t>(items.ids.size());
  for (std::int64_t i = 0; i < n_items; ++i) {
    const std::int32_t* t = items.tokens.data() + i * text_len;
    const std::int32_t len = std::min(items.length[static_cast<std::size_t>(i)], text_len);
    bool any = false;
    for (std::int32_t k = 0; k < len && !any; ++k) {
      any = t[k] >= 0 && t[k] < vocab.size && vocab.special[static_cast<std::size_t>(t[k])] == 0;
    }
    if (any) {
      usable.push_back(i);
    } else {
      ++out.empty;
    }
  }
  const auto n = static_cast<std::int64_t>(usable.size());
  auto held = static_cast<std::int64_t>(std::llround(holdout * static_cast<double>(n)));
  if (holdout > 0 && n > 1) held = std::max<std::int64_t>(held, 1);
  held = std::min(held, std::max<std::int64_t>(n - 1, 0));
  std::mt19937_64 gen(splitmix64(splitmix64(seed) ^ 0x686f6c64ULL));
  const std::vector<std::int64_t> perm = random_permutation(n, gen);
  std::vector<std::uint8_t> is_held(static_cast<std::size_t>(n), 0);
  for (std::int64_t k = 0; k < held; ++k)
    is_held[static_cast<std::size_t>(perm[static_cast<std::size_t>(k)])] = 1;
  for (std::int64_t k = 0; k < n; ++k) {
    (is_held[static_cast<std::size_t>(k)] != 0 ? out.heldout : out.train)
        .push_back(usable[static_cast<std::size_t>(k)]);
  }
  return out;
}

std::string pretrain_checkpoint_dir(const std::string& run_dir) {
  return (fs::path(run_dir) / "pretrain" / "checkpoints").string();
}

void verify_pretrain_checkpoint(const std::string& path) {
  auto f = open_pretrain_checkpoint(path);
  torch::manual_seed(0);
  BertForMaskedLM model(bert_config_of_checkpoint(f));
  checkpoint_read_module(f, "model", "float32", *model);
  auto params = trainable_named_parameters(*model);
  auto optimizer = make_adamw(params, TrainConfig{});
  checkpoint_read_optimizer(f, *optimizer, params, "float32");
  checkpoint_read_rng(f);
  for (const char* key :
       {"step", "cursor_epoch", "cursor_step", "steps_per_epoch", "global_batch", "world_size"}) {
    if (f.attr_int("/", key) < 0) throw IoError(fmt::format("{}: attribute '{}' is negative", path, key));
  }
}

Pretrainer::Pretrainer(PretrainSetup setup, Communicator& comm) : setup_(std::move(setup)), comm_(comm) {
  const PretrainConfig& pc = setup_.pretrain;
  DatasetFile dataset(setup_.dataset);
  vocab_ = dataset.vocab();
  text_len_ = dataset.text_len();
  items_ = dataset.read_items();
  mlm_vocab_ = MlmVocab::from(vocab_, setup_.dataset);

  torch::manual_seed(static_cast<std::uint64_t>(pc.seed));  // the same initial weights on every rank
  if (pc.from.empty()) {
    ModelBertConfig b = setup_.bert;
    if (b.layers < 1) {
      throw ConfigError(
          "pretrain: model.bert.layers is 0 (the embeddings alone): a masked word piece cannot be "
          "predicted without a transformer layer; set model.bert.layers >= 1");
    }
    if (b.vocab_size == 0) {
      b.vocab_size = static_cast<int>(vocab_.size());
    } else if (b.vocab_size != static_cast<int>(vocab_.size())) {
      throw ConfigError(
          fmt::format("model.bert.vocab_size is {} but the dataset {} has a vocabulary of {} tokens; "
                      "set model.bert.vocab_size: 0 to take the dataset's",
                      b.vocab_size, setup_.dataset, vocab_.size()));
    }
    BertConfig config = bert_config_from(b);
    config.validate("model.bert");
    model_ = BertForMaskedLM(config);
  } else {
    HfBertLoadOptions load;
    load.add_pooler = false;
    HfBert loaded = load_hf_bert(pc.from, load);
    if (loaded.vocab_path.empty()) {
      throw ConfigError(
          fmt::format("pretrain.from {}: no vocab.txt; pre-training continues with the vocabulary the "
                      "model was trained with",
                      pc.from));
    }
    if (WordPieceTokenizer::from_file(loaded.vocab_path).tokens() != vocab_) {
      throw ConfigError(
          fmt::format("pretrain.from {}: its vocab.txt is not the vocabulary of the dataset {}; prepare "
                      "the dataset with data.vocab: {}",
                      pc.from, setup_.dataset, loaded.vocab_path));
    }
    model_ = BertForMaskedLM(loaded.config);
    torch::NoGradGuard no_grad;
    auto mine = model_->bert->named_parameters();
    for (const auto& p : loaded.model->named_parameters()) mine[p.key()].copy_(p.value());
    const int head = model_->load_head(loaded.head_tensors, pc.from);
    spdlog::info("pretrain: continuing {} ({} head tensor(s) loaded{})", pc.from, head,
                 head == 0 ? "; the masked-LM head starts fresh" : "");
  }
  if (text_len_ > model_->config().max_position_embeddings) {
    throw ConfigError(
        fmt::format("the dataset's texts are {} tokens (data.text_len) but the encoder has {} positions "
                    "(model.bert.max_positions)",
                    text_len_, model_->config().max_position_embeddings));
  }
  model_->to(setup_.device);

  texts_ =
      pretrain_split_texts(items_, text_len_, mlm_vocab_, pc.holdout, static_cast<std::uint64_t>(pc.seed));
  const std::int64_t global_batch = std::int64_t{pc.batch_size} * comm_.size();
  steps_per_epoch_ = static_cast<std::int64_t>(texts_.train.size()) / global_batch;
  if (steps_per_epoch_ == 0) {
    throw ConfigError(
        fmt::format("pretrain: {} training texts are fewer than one step's {} (pretrain.batch_size {} x "
                    "{} ranks); lower pretrain.batch_size",
                    texts_.train.size(), global_batch, pc.batch_size, comm_.size()));
  }
  planned_steps_ = pc.max_steps > 0 ? pc.max_steps : steps_per_epoch_ * pc.epochs;
}

Pretrainer::~Pretrainer() = default;

std::vector<MaskedText> Pretrainer::mask_texts(const std::vector<std::int64_t>& texts, std::uint64_t pass,
                                               std::int64_t begin, std::int64_t count) const {
  const MlmMaskOptions mask{setup_.pretrain.mask_prob, setup_.pretrain.whole_word};
  const auto seed = static_cast<std::uint64_t>(setup_.pretrain.seed);
  std::vector<MaskedText> rows;
  for (std::int64_t k = begin; k < begin + count; ++k) {
    const std::int64_t item = texts[static_cast<std::size_t>(k)];
    const std::int64_t len = std::min(items_.length[static_cast<std::size_t>(item)], text_len_);
    rows.push_back(mlm_mask_text(items_.tokens.data() + item * text_len_, len, mlm_vocab_, mask,
                                 mlm_text_seed(seed, pass, static_cast<std::uint64_t>(item))));
  }
  return rows;
}

std::pair<double, double> Pretrainer::evaluate_heldout() {
  const auto& held = texts_.heldout;
  const auto n = static_cast<std::int64_t>(held.size());
  if (n == 0) return {-1.0, -1.0};
  // Rank r evaluates the texts r, r + W, ...
  std::vector<std::int64_t> mine;
  for (std::int64_t k = comm_.rank(); k < n; k += comm_.size())
    mine.push_back(held[static_cast<std::size_t>(k)]);
  const bool was_training = model_->is_training();
  model_->eval();
  double loss = 0, correct = 0, predicted = 0;
  {
    torch::NoGradGuard no_grad;
    const std::int64_t chunk = setup_.pretrain.batch_size;
    for (std::int64_t k = 0; k < static_cast<std::int64_t>(mine.size()); k += chunk) {
      const std::int64_t count = std::min<std::int64_t>(chunk, static_cast<std::int64_t>(mine.size()) - k);
      MlmBatch b = mlm_batch(mask_texts(mine, kHeldoutPass, k, count), mlm_vocab_.pad);
      MlmSums s = model_->loss(b.ids, b.attention, b.labels);
      loss += s.loss_sum.item<double>();
      correct += static_cast<double>(s.correct);
      predicted += static_cast<double>(s.predicted);
    }
  }
  if (was_training) model_->train();
  at::Tensor agg = at::tensor({loss, correct, predicted}, at::kDouble);
  comm_.all_reduce(agg);
  const double p = std::max(agg[2].item<double>(), 1.0);
  return {agg[0].item<double>() / p, agg[1].item<double>() / p};
}

Pretrainer::ResumePoint Pretrainer::resume(torch::optim::AdamW& optimizer,
                                           const std::vector<std::pair<std::string, torch::Tensor>>& params,
                                           std::int64_t global_batch) {
  ResumePoint at;
  if (setup_.resume.empty()) return at;
  const std::string bert_json = model_->config().to_json("BertForMaskedLM");
  auto f = open_pretrain_checkpoint(setup_.resume);
  const std::string stored = bert_config_of_checkpoint(f).to_json("BertForMaskedLM");
  if (stored != bert_json) {
    throw ConfigError(
        fmt::format("{}: the checkpoint pre-trains another encoder; resume with the same model.bert "
                    "(or pretrain.from), or start a new run.dir.\ncheckpoint: {}\nthis run: {}",
                    setup_.resume, stored, bert_json));
  }
  checkpoint_read_module(f, "model", "float32", *model_);
  checkpoint_read_optimizer(f, optimizer, params, "float32");
  rng_restore(checkpoint_read_rng(f), comm_.rank());
  at.step = f.attr_int("/", "step");
  at.cursor = {f.attr_int("/", "cursor_epoch"), f.attr_int("/", "cursor_step")};
  const std::int64_t saved_spe = f.attr_int("/", "steps_per_epoch");
  if (f.attr_int("/", "global_batch") != global_batch || saved_spe != steps_per_epoch_) {
    at.cursor.step = std::min(steps_per_epoch_ - 1,
                              at.cursor.step * steps_per_epoch_ / std::max<std::int64_t>(saved_spe, 1));
    spdlog::warn(
        "resuming a pre-training checkpoint of {} texts per step on {}: weights, optimizer and schedule "
        "continue exactly; the data continue at step {} of epoch {} (the same share of the epoch)",
        f.attr_int("/", "global_batch"), global_batch, at.cursor.step, at.cursor.epoch);
  }
  at.heldout_loss = checkpoint_attr_double(f, "heldout_loss");
  at.heldout_accuracy = checkpoint_attr_double(f, "heldout_accuracy");
  spdlog::info("pretrain: resumed from {} after step {} (epoch {}, step {})", setup_.resume, at.step,
               at.cursor.epoch, at.cursor.step);
  return at;
}

std::string Pretrainer::write_checkpoint(std::int64_t steps_done, const Cursor& cursor,
                                         std::int64_t global_batch, const PretrainResult& result,
                                         torch::optim::AdamW& optimizer,
                                         const std::vector<std::pair<std::string, torch::Tensor>>& params) {
  std::vector<at::Tensor> rng = gather_rng_states(comm_);
  const std::string dir = pretrain_checkpoint_dir(setup_.run_dir);
  std::string path = checkpoint_path(dir, steps_done);
  run_on_rank0(comm_, [&] {
    fs::create_directories(dir);
    try {
      auto f = h5::File::create(path);
      f.set_attr("/", "format", kPretrainCheckpointFormat);
      f.set_attr("/", "version", kPretrainCheckpointVersion);
      f.set_attr("/", "bert_config", model_->config().to_json("BertForMaskedLM"));
      f.set_attr("/", "config", setup_.run_config_yaml);
      f.set_attr("/", "step", steps_done);
      f.set_attr("/", "world_size", static_cast<std::int64_t>(comm_.size()));
      f.set_attr("/", "global_batch", global_batch);
      f.set_attr("/", "cursor_epoch", cursor.epoch);
      f.set_attr("/", "cursor_step", cursor.step);
      f.set_attr("/", "steps_per_epoch", steps_per_epoch_);
      f.set_attr("/", "planned_steps", planned_steps_);
      f.set_attr("/", "heldout_loss", checkpoint_double_text(result.heldout_loss));
      f.set_attr("/", "heldout_accuracy", checkpoint_double_text(result.heldout_accuracy));
      checkpoint_write_module(f, "model", *model_);
      checkpoint_write_optimizer(f, optimizer, params);
      checkpoint_write_rng(f, rng);
      f.commit();
    } catch (const IoError& e) {
      throw IoError(fmt::format("writing checkpoint {} failed: {}", path, e.what()));
    }
    checkpoint_prune(dir, setup_.pretrain.keep_checkpoints);
    return std::int64_t{0};
  });
  spdlog::info("pretrain: checkpoint after step {}: {}", steps_done, path);
  return path;
}

MlmBatch Pretrainer::step_batch(const std::vector<std::int64_t>& step_texts, std::uint64_t pass,
                                std::int64_t* global_predicted) const {
  const PretrainConfig& pc = setup_.pretrain;
  // The global masked count normalises every rank's sum, so the summed
  // gradients are those of the mean over the whole global batch.
  *global_predicted = 0;
  MlmBatch mine;
  for (int r = 0; r < comm_.size(); ++r) {  // every rank's masks, for the count; tensors of this rank's only
    std::vector<MaskedText> masked =
        mask_texts(step_texts, pass, std::int64_t{r} * pc.batch_size, pc.batch_size);
    for (const auto& m : masked) *global_predicted += m.predicted;
    if (r == comm_.rank()) mine = mlm_batch(masked, mlm_vocab_.pad);
  }
  return mine;
}

StepLogOptions Pretrainer::step_log_options(std::int64_t start_step, std::ostream* metrics) const {
  const PretrainConfig& pc = setup_.pretrain;
  StepLogOptions log;
  log.name = "pretrain step";
  log.unit = "texts";
  log.rate_key = "texts_per_s";
  log.planned_steps = planned_steps_;
  log.start_step = start_step;
  log.steps_per_epoch = steps_per_epoch_;
  log.log_every = pc.log_every;
  log.bar = comm_.rank() == 0 && pc.progress && isatty(STDERR_FILENO);
  log.metrics = metrics;
  return log;
}

StepSchedule Pretrainer::step_schedule(std::int64_t start_step) const {
  const PretrainConfig& pc = setup_.pretrain;
  StepSchedule schedule;  // held-out texts where train validates
  schedule.planned_steps = planned_steps_;
  schedule.steps_per_epoch = steps_per_epoch_;
  schedule.eval_every = pc.eval_every;
  schedule.checkpoint_every = pc.checkpoint_every;
  schedule.start_step = start_step;
  schedule.stop_after = setup_.stop_after;
  return schedule;
}

void Pretrainer::log_plan(const GradientReducer& reducer, std::int64_t global_batch) const {
  const PretrainConfig& pc = setup_.pretrain;
  std::int64_t n_params = 0;
  for (const auto& p : model_->parameters()) n_params += p.requires_grad() ? p.numel() : 0;
  spdlog::info(
      "pretrain: BERT {} layers, hidden {}, vocabulary {}; {} parameters, all trained; {} bytes all-reduced "
      "per step",
      model_->config().num_hidden_layers, model_->config().hidden_size, model_->config().vocab_size, n_params,
      reducer.bytes_per_step());
  spdlog::info(
      "pretrain: {} training texts, {} held out, {} without text (not used); {} steps of {} texts per epoch, "
      "{} steps planned; {:.0f}% of the word pieces predicted{}",
      texts_.train.size(), texts_.heldout.size(), texts_.empty, steps_per_epoch_, global_batch,
      planned_steps_, 100 * pc.mask_prob, pc.whole_word ? " (whole words)" : "");
}

const std::vector<std::int64_t>& Pretrainer::step_texts(const Cursor& cursor, std::int64_t global_batch) {
  if (order_epoch_ != cursor.epoch) {
    order_ = epoch_order(static_cast<std::int64_t>(texts_.train.size()),
                         static_cast<std::uint64_t>(setup_.pretrain.seed), cursor.epoch);
    order_epoch_ = cursor.epoch;
  }
  step_texts_.resize(static_cast<std::size_t>(global_batch));
  for (std::int64_t k = 0; k < global_batch; ++k) {
    step_texts_[static_cast<std::size_t>(k)] = texts_.train[static_cast<std::size_t>(
        order_[static_cast<std::size_t>(cursor.step * global_batch + k)])];
  }
  return step_texts_;
}

void Pretrainer::record_heldout(std::int64_t steps_done, PretrainResult& result, std::ostream* metrics) {
  auto [loss, accuracy] = evaluate_heldout();
  if (loss < 0) return;
  result.heldout_loss = loss;
  result.heldout_accuracy = accuracy;
  if (metrics != nullptr) {
    *metrics
        << nlohmann::json{{"step", steps_done}, {"heldout_loss", loss}, {"heldout_accuracy", accuracy}}.dump()
        << "\n"
        << std::flush;
  }
  spdlog::info("pretrain: held-out texts after step {}: loss {:.4f}, accuracy {:.4f}", steps_done, loss,
               accuracy);
}

std::string Pretrainer::save_pretrained() {
  const PretrainConfig& pc = setup_.pretrain;
  const fs::path work = fs::path(setup_.run_dir) / "pretrain";
  std::string out_dir = pc.out.empty() ? (fs::path(setup_.run_dir) / "pretrained").string() : pc.out;
  run_on_rank0(comm_, [&] {
    fs::create_directories(work);
    const std::string vocab_path = (work / "vocab.txt").string();
    write_vocab(vocab_, vocab_path);
    save_mlm_hf(out_dir, *model_, vocab_path);
    return std::int64_t{0};
  });
  return out_dir;
}

PretrainResult Pretrainer::initial_result(const ResumePoint& at) const {
  PretrainResult result;
  result.planned_steps = planned_steps_;
  if (!setup_.resume.empty()) {
    result.heldout_loss = at.heldout_loss;
    result.heldout_accuracy = at.heldout_accuracy;
    result.resumed_step = at.step;
  }
  return result;
}

PretrainResult Pretrainer::run() {
  const PretrainConfig& pc = setup_.pretrain;
  const TrainConfig oc = pc.optimizer();
  const bool rank0 = comm_.rank() == 0;
  auto params = trainable_named_parameters(*model_);
  GradientReducer reducer(comm_, params, {pc.bucket_mb, ReduceOp::kSum});
  auto optimizer = make_adamw(params, oc);
  const std::vector<torch::Tensor> trainable = tensors_of(params);
  const std::int64_t global_batch = std::int64_t{pc.batch_size} * comm_.size();
  log_plan(reducer, global_batch);

  const ResumePoint at = resume(*optimizer, params, global_batch);
  const std::int64_t start = at.step;
  Cursor cursor = at.cursor;
  PretrainResult result = initial_result(at);
  std::ofstream metrics = open_metrics_file((fs::path(setup_.run_dir) / "pretrain").string(), rank0);
  auto checkpoint = [&](std::int64_t steps_done) {
    result.last_checkpoint = write_checkpoint(steps_done, cursor, global_batch, result, *optimizer, params);
  };

  StepLogger logger(step_log_options(start, rank0 ? &metrics : nullptr));
  const StepSchedule schedule = step_schedule(start);
  StopSignal stop_signal;
  result.steps = start;
  model_->train();
  for (std::int64_t step = start; step < planned_steps_; ++step) {
    const auto t_step = Clock::now();
    std::int64_t global_predicted = 0;
    const MlmBatch mine = step_batch(step_texts(cursor, global_batch),
                                     static_cast<std::uint64_t>(cursor.epoch) + 1, &global_predicted);
    const double lr = learning_rate(oc, step, planned_steps_);
    double grad_norm = 0;
    MlmSums s = pretrain_step(*model_, mine, static_cast<double>(global_predicted), reducer, *optimizer,
                              trainable, pc.clip_norm, lr, &grad_norm);
    if (++cursor.step == steps_per_epoch_) cursor = {cursor.epoch + 1, 0};

    const StepTotals totals =
        reduce_step_totals(comm_, s.loss_sum.item<double>(), static_cast<double>(s.predicted));
    result.steps = step + 1;
    result.last_loss = totals.mean_loss();
    StepRecord record;  // the loss as a sum over the predicted pieces, the bar's as their mean
    record.done = step + 1;
    record.loss_sum = totals.loss_sum;
    record.loss_count = totals.count;
    record.items = global_batch;
    record.comm_wait_s = reducer.stats().wait_s;
    record.step_s = std::chrono::duration<double>(Clock::now() - t_step).count();
    record.lr = lr;
    record.grad_norm = grad_norm;
    record.bar_loss = result.last_loss;
    logger.record(record);
    const StepEnd end = step_end(schedule, step + 1);

    if (totals.stop) {  // some rank got a signal: all stop here, saving first
      result.stop_signal = announce_stop_signal(logger, step + 1, planned_steps_);
      checkpoint(step + 1);
      break;
    }
    if (end.validate) {
      if (!end.last) logger.break_line();  // the bar ended its own line after the last step
      record_heldout(step + 1, result, rank0 ? &metrics : nullptr);
    }
    if (end.checkpoint) checkpoint(step + 1);
    if (end.stop_after) {
      result.stopped_after = true;
      announce_stop_after("pretrain: ", step + 1 - start, step + 1, planned_steps_);
      break;
    }
  }
  result.texts_per_s = logger.rate();
  model_->eval();
  if (result.stop_signal == 0 && !result.stopped_after && result.steps == planned_steps_) {
    result.out_dir = save_pretrained();
  }
  return result;
}

}  // namespace llmrec
