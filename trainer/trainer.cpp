#include "trainer/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <tuple>

#include "common/error.h"
#include "common/time_features.h"
#include "data/wordpiece.h"
#include "distributed/agree.h"
#include "distributed/gradient_reducer.h"
#include "models/adalora.h"
#include "trainer/optimizer.h"
#include "trainer/progress.h"
#include "trainer/train_step.h"

namespace llmrec {

namespace fs = std::filesystem;
namespace {

/// train.init_from: the file's weights into `model` unless resuming (the
/// checkpoint holds them then). Whether it loaded them.
bool load_init_from(const TrainerSetup& setup, Recommender& model) {
  const std::string& init_from = setup.train.init_from;
  if (init_from.empty()) return false;
  if (!setup.resume.empty()) {
    spdlog::info("train.init_from {} not read: resuming from {}, which holds the weights", init_from,
                 setup.resume);
    return false;
  }
  std::vector<std::string> fresh;
  std::int64_t loaded = 0;
  try {
    loaded = checkpoint_init_model(init_from, model, &fresh);
  } catch (const IoError& e) {  // a missing or damaged file: name the key that pointed at it
    throw IoError(fmt::format("train.init_from: {}", e.what()));
  }
  spdlog::info("train.init_from {}: {} tensors loaded{}", init_from, loaded,
               fresh.empty() ? std::string()
                             : fmt::format("; {} adapter tensors new (the file has none), starting at their "
                                           "initialisation",
                                           fresh.size()));
  return true;
}

/// train.item_cache_refresh for `model` (0 = off); ConfigError where it
/// has no meaning.
int item_cache_refresh(const TrainerSetup& setup, const RecommenderImpl& model) {
  const int refresh = setup.train.item_cache_refresh;
  if (refresh == 0) return 0;
  if (!setup.model.item_text) {
    throw ConfigError("train.item_cache_refresh: the model reads no item text (model.item_text false)");
  }
  if (model.encoder_frozen()) {
    throw ConfigError(
        "train.item_cache_refresh: model.bert.freeze keeps every item's features for the whole run "
        "already; set train.item_cache_refresh to 0");
  }
  if (setup.model.lora.r == 0 && refresh > 1) {
    spdlog::warn(
        "train.item_cache_refresh {} with every encoder weight trainable (model.lora.r 0): the encoder "
        "moves too fast for rows kept over several steps; on Scientific the training loss rose after "
        "each refresh at lr 1e-3 (N 5 and 20) and 1e-4 (N 20), and validation NDCG@10 fell from 0.097 "
        "to 0.026 (docs/ranker.md). Use adapters (model.lora.r > 0) or train.item_cache_refresh 0",
        refresh);
  }
  return refresh;
}

/// Every rank's kept item features, for a checkpoint: [tables, items,
/// width] float32 and [tables, items] uint8, one table per rank (rank r's
/// rows were encoded when its own batches first needed them), or one table
/// when every rank keeps the same (model.loss.negatives: all, or one rank:
/// then only the tables' digests cross ranks, not the tables).
/// Collective: every rank calls it at the same step.
std::pair<torch::Tensor, torch::Tensor> gather_item_features(Communicator& comm,
                                                             const TextFeatureCache& cache,
                                                             std::int64_t items, std::int64_t width,
                                                             const torch::Device& device) {
  const auto [table, kept] = cache.state();
  const torch::Tensor mine =
      table.defined()
          ? torch::cat({table.to(torch::kFloat), kept.to(torch::kFloat).unsqueeze(1)}, 1)
          : torch::zeros({items, width + 1}, torch::TensorOptions().dtype(torch::kFloat).device(device));
  const torch::Tensor all =
      (first_rank_differing(comm, {mine}) < 0 ? mine.unsqueeze(0) : comm.all_gather(mine)).cpu();
  return {all.narrow(2, 0, width).contiguous(), all.select(2, width).to(torch::kUInt8).contiguous()};
}

/// model.lora.adaptive's total_step 0 becomes the planned steps, written
/// into `lora` so that the model's configuration (and so every checkpoint
/// and saved adapter) carries it; ConfigError naming the keys for a
/// schedule that cannot run. Nothing without AdaLoRA.
void resolve_adalora_schedule(ModelLoraConfig& lora, std::int64_t planned_steps) {
  ModelAdaLoraConfig& a = lora.adaptive;
  if (!a.enabled) return;
  if (a.total_step == 0) a.total_step = static_cast<int>(std::min<std::int64_t>(planned_steps, 2000000000));
  adalora_check_schedule(a, lora.r);
}

/// The model's time and context features, the context columns' sizes read
/// from the dataset (ConfigError naming the key for a column it lacks).
ContextSpec context_spec_of(const ModelConfig& model, const DatasetFile& dataset) {
  ContextSpec spec;
  spec.time = parse_time_features(model.user.time_features);
  for (const std::string& column : model.user.context_columns) {
    try {
      spec.column_values.push_back(static_cast<std::int64_t>(dataset.context_values(column).size()));
    } catch (const IoError& e) {
      throw ConfigError(fmt::format("model.user.context_columns: {}", e.what()));
    }
  }
  return spec;
}

std::atomic<int> g_signal{0};
void on_signal(int sig) {
  g_signal.store(sig);
}

using Clock = std::chrono::steady_clock;

}  // namespace

StopSignal::StopSignal() {
  g_signal.store(0);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}
StopSignal::~StopSignal() {
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}
int StopSignal::received() {
  return g_signal.load();
}

StepTotals reduce_step_totals(Communicator& comm, double loss_sum, double count) {
  at::Tensor agg = at::tensor({loss_sum, count, static_cast<double>(StopSignal::received())}, at::kDouble);
  comm.all_reduce(agg);
  return {agg[0].item<double>(), agg[1].item<double>(), agg[2].item<double>() != 0};
}

std::ofstream open_metrics_file(const std::string& dir, bool open) {
  std::ofstream metrics;
  if (!open) return metrics;
  fs::create_directories(dir);
  metrics.open(fs::path(dir) / "metrics.jsonl", std::ios::app);
  return metrics;
}

int announce_stop_signal(StepLogger& logger, std::int64_t steps_done, std::int64_t planned) {
  logger.break_line();
  const int signal = StopSignal::received() != 0 ? StopSignal::received() : SIGTERM;
  spdlog::warn("stop requested ({}): every rank stopped after step {} of {}", strsignal(signal), steps_done,
               planned);
  return signal;
}

int exit_after_stop_signal(int signal, std::int64_t steps, std::int64_t planned,
                           const std::string& checkpoint) {
  spdlog::error(
      "stopped by {} after step {} of {}: the run is incomplete; checkpoint {} (continue with --resume auto)",
      strsignal(signal), steps, planned, checkpoint);
  return 128 + signal;
}

void announce_stop_after(const char* prefix, std::int64_t steps_this_run, std::int64_t steps_done,
                         std::int64_t planned) {
  spdlog::info("{}stopped after {} steps of this run (step {} of {}), as asked; continue with --resume auto",
               prefix, steps_this_run, steps_done, planned);
}

Trainer::Trainer(TrainerSetup setup, Communicator& comm) : setup_(std::move(setup)), comm_(comm) {
  DatasetFile dataset(setup_.dataset);
  const auto vocab = static_cast<int>(dataset.vocab().size());
  auto& bert = setup_.model.bert;
  if (!bert.pretrained.empty()) {
    // The dataset's token ids must mean what they meant in pre-training.
    const std::filesystem::path vocab_path = std::filesystem::path(bert.pretrained) / "vocab.txt";
    if (std::filesystem::is_regular_file(vocab_path) &&
        WordPieceTokenizer::from_file(vocab_path.string()).tokens() != dataset.vocab()) {
      throw ConfigError(
          fmt::format("model.bert.pretrained {}: its vocab.txt is not the vocabulary of the dataset {}; "
                      "prepare the dataset with data.vocab: {}",
                      bert.pretrained, setup_.dataset, vocab_path.string()));
    }
  } else {
    if (bert.vocab_size == 0) {
      bert.vocab_size = vocab;
    } else if (bert.vocab_size != vocab) {
      throw ConfigError(
          fmt::format("model.bert.vocab_size is {} but the dataset {} has a vocabulary of {} tokens; "
                      "set model.bert.vocab_size: 0 to take the dataset's",
                      bert.vocab_size, setup_.dataset, vocab));
    }
  }
  if (setup_.model.text_len > dataset.text_len()) {
    throw ConfigError(
        fmt::format("model.text_len {} is longer than the dataset's items ({} tokens, data.text_len)",
                    setup_.model.text_len, dataset.text_len()));
  }
  text_len_ = setup_.model.text_len;

  SamplerOptions so;
  so.batch_size = setup_.train.batch_size;
  so.history = setup_.model.user.history;
  so.seed = static_cast<std::uint64_t>(setup_.train.seed);
  so.sampled_negatives = setup_.model.loss.sampled_negatives;
  so.sequences = setup_.model.user.pooling == "causal";
  so.all_items = setup_.model.loss.negatives == "all";  // every item a candidate: a full softmax
  so.context = context_spec_of(setup_.model, dataset);
  so.context_columns = setup_.model.user.context_columns;
  so.profiles = setup_.model.user.profile;
  sampler_ = std::make_shared<BatchSampler>(dataset, comm_.rank(), comm_.size(), so);
  const std::int64_t per_epoch = sampler_->steps_per_epoch() / setup_.train.micro_batches;
  if (per_epoch == 0) {
    throw ConfigError(
        fmt::format("an epoch has {} batches per rank, fewer than train.micro_batches {}: lower "
                    "train.batch_size or train.micro_batches",
                    sampler_->steps_per_epoch(), setup_.train.micro_batches));
  }
  planned_steps_ = setup_.train.max_steps > 0 ? setup_.train.max_steps : per_epoch * setup_.train.epochs;
  resolve_adalora_schedule(setup_.model.lora, planned_steps_);

  torch::manual_seed(static_cast<std::uint64_t>(setup_.train.seed));  // same initial weights on every rank
  model_ = Recommender(RecommenderOptions(setup_.model)
                           .id_items(dataset.num_items())
                           .context_values(so.context.column_values));
  init_loaded_ = load_init_from(setup_, model_);
  model_->to(setup_.device);  // initialised on the CPU (same weights on every rank), then moved
  cache_refresh_ = item_cache_refresh(setup_, *model_);
}

Trainer::~Trainer() = default;

std::string Trainer::write_checkpoint(TrainingState& state, torch::optim::AdamW& optimizer,
                                      const std::vector<std::pair<std::string, torch::Tensor>>& params) {
  state.rng = gather_rng_states(comm_);
  const std::string dir = checkpoint_dir(setup_.run_dir);
  std::string path = checkpoint_path(dir, state.step);
  std::pair<torch::Tensor, torch::Tensor> item_features;
  if (cache_refresh_ > 0) {
    item_features =
        gather_item_features(comm_, *text_cache_, static_cast<std::int64_t>(sampler_->items().ids.size()),
                             model_->options().config().bert.hidden, setup_.device);
  }
  // Rank 0 writes; every rank learns how it went (a full disk is the same
  // error everywhere, naming the path), so none waits or goes on alone.
  run_on_rank0(comm_, [&] {
    std::filesystem::create_directories(dir);
    CheckpointParts parts;
    parts.model = model_;
    parts.optimizer = &optimizer;
    parts.params = &params;
    parts.best = best_;
    parts.state = &state;
    std::tie(parts.item_features, parts.item_features_kept) = item_features;
    parts.run_config_yaml = setup_.run_config_yaml;
    save_checkpoint(path, parts);
    checkpoint_prune(dir, setup_.train.keep_checkpoints);
    return std::int64_t{0};
  });
  spdlog::info("checkpoint after step {}: {}", state.step, path);
  return path;
}

void Trainer::log_plan(const GradientReducer& reducer,
                       const std::vector<std::pair<std::string, torch::Tensor>>& params) const {
  std::int64_t n_trainable = 0, n_total = 0;
  for (const auto& [n, p] : params) n_trainable += p.numel();
  for (const auto& p : model_->parameters()) n_total += p.numel();
  const TrainConfig& tc = setup_.train;
  spdlog::info(
      "model: {} parameters, {} trainable ({} tensors); {} bytes all-reduced per step in {} bucket(s)",
      n_total, n_trainable, params.size(), reducer.bytes_per_step(), reducer.buckets().size());
  if (model_->encoder_frozen()) {
    spdlog::info(
        "model.bert.freeze: the item encoder trains nothing; each item's pooled output is computed "
        "the first time a batch holds it and kept");
  } else if (cache_refresh_ > 0) {
    spdlog::info(
        "train.item_cache_refresh {}: the batch's own items encoded at every step; the other "
        "candidates' encoder outputs kept, encoded again every {} steps",
        cache_refresh_, cache_refresh_);
  }
  spdlog::info(
      "data: {} training examples ({} on this rank), {} batches of {} per rank and epoch, {} steps "
      "planned ({} micro-batches each, negatives {})",
      sampler_->global_examples(), sampler_->local_examples(), sampler_->steps_per_epoch(), tc.batch_size,
      planned_steps_, tc.micro_batches, tc.negatives);
}

Trainer::ResumePoint Trainer::resume(torch::optim::AdamW& optimizer,
                                     const std::vector<std::pair<std::string, torch::Tensor>>& params) {
  ResumePoint at;
  if (setup_.resume.empty()) return at;
  TrainingState saved;
  CheckpointParts parts;
  parts.model = model_;
  parts.optimizer = &optimizer;
  parts.params = &params;
  parts.best = std::dynamic_pointer_cast<RecommenderImpl>(model_->clone());
  parts.state = &saved;
  load_checkpoint(setup_.resume, parts);
  best_ = parts.best;
  if (best_) best_->eval();
  if (cache_refresh_ > 0 && parts.item_features.defined()) {
    // Each rank its own table (the same one when the ranks kept the same);
    // on another world size rank r takes table r mod the tables saved.
    const std::int64_t t = comm_.rank() % parts.item_features.size(0);
    text_cache_->restore(parts.item_features[t].to(setup_.device),
                         parts.item_features_kept[t].to(setup_.device),
                         model_->options().config().bert.hidden, setup_.resume);
  } else if (cache_refresh_ > 0) {
    spdlog::info("{} keeps no item features: every candidate is encoded again at the next step",
                 setup_.resume);
  }
  at.step = saved.step;
  at.best_score = saved.best_score;
  at.best_step = saved.best_step;
  at.bad_evals = saved.bad_evals;
  at.validation_due = saved.validation_due;
  rng_restore(saved.rng, comm_.rank());
  const std::int64_t spe = sampler_->steps_per_epoch();
  if (saved.world_size == comm_.size() && saved.steps_per_epoch == spe) {
    at.cursor = saved.cursor;
  } else {
    at.cursor = {saved.cursor.epoch, std::min(spe - 1, saved.cursor.step * spe / saved.steps_per_epoch)};
    spdlog::warn(
        "resuming a checkpoint of world size {} ({} batches per rank and epoch) on world size {} ({}): "
        "model, optimizer and schedule continue exactly; the data continue at batch {} of epoch {} "
        "(the same share of the epoch), so the rest of that epoch is not the same examples",
        saved.world_size, saved.steps_per_epoch, comm_.size(), spe, at.cursor.step, at.cursor.epoch);
  }
  if (saved.planned_steps != planned_steps_) {
    spdlog::warn(
        "the checkpoint planned {} steps, this run plans {}: the learning-rate schedule follows this run's",
        saved.planned_steps, planned_steps_);
  }
  spdlog::info("resumed from {} after step {} (epoch {}, batch {})", setup_.resume, at.step, at.cursor.epoch,
               at.cursor.step);
  return at;
}

Trainer::StepSums Trainer::optimizer_step(BatchLoader& loader, const StepContext& ctx,
                                          GradientReducer& reducer, torch::optim::AdamW& optimizer,
                                          const std::vector<torch::Tensor>& trainable, std::int64_t step) {
  const TrainConfig& tc = setup_.train;
  StepSums sums;
  for (int m = 0; m < tc.micro_batches; ++m) {
    Batch batch = loader.next();
    MicroStepResult r = train_micro_step(model_, batch, ctx, /*sync=*/m + 1 == tc.micro_batches);
    sums.loss_sum += r.loss_sum;
    sums.examples += r.examples;
  }
  reducer.finish();
  // The norm before clipping, with clipping on or off (an infinite maximum
  // computes it and scales nothing).
  sums.grad_norm = torch::nn::utils::clip_grad_norm_(
      trainable, tc.clip_norm > 0 ? tc.clip_norm : std::numeric_limits<double>::infinity());
  sums.lr = learning_rate(tc, step, planned_steps_);
  set_learning_rate(optimizer, sums.lr);
  optimizer.step();
  const ModelAdaLoraConfig& adalora = setup_.model.lora.adaptive;
  if (adalora.enabled) {  // the all-reduced gradients are still there: every rank allocates the same ranks
    sums.adalora_budget = adalora_update_and_allocate(*model_->bert, adalora, step + 1).budget;
  }
  release_gradients(optimizer);
  return sums;
}

StepContext Trainer::step_context(GradientReducer& reducer) {
  const TrainConfig& tc = setup_.train;
  StepContext ctx;
  ctx.comm = &comm_;
  ctx.reducer = &reducer;
  ctx.global_negatives = tc.negatives == "global";
  ctx.micro_batches = tc.micro_batches;
  ctx.text_len = text_len_;
  ctx.cold = &sampler_->items().cold;
  ctx.num_items = static_cast<std::int64_t>(sampler_->items().ids.size());
  ctx.device = setup_.device;
  ctx.bf16 = setup_.bf16;
  if (model_->encoder_frozen() || cache_refresh_ > 0) {
    text_cache_ = std::make_unique<TextFeatureCache>(ctx.num_items);
    ctx.text_cache = text_cache_.get();
  }
  // A full softmax over local negatives: every rank holds every item, so
  // each encodes its share (exact, docs/training.md "A full softmax shared out").
  ctx.shard_items = tc.shard_item_encoding && setup_.model.loss.negatives == "all" && !ctx.global_negatives &&
                    ctx.text_cache == nullptr && comm_.size() > 1 && setup_.model.item_text;
  return ctx;
}

StepLogOptions Trainer::step_log_options(std::int64_t start_step, std::ostream* metrics) const {
  const TrainConfig& tc = setup_.train;
  StepLogOptions log;
  log.planned_steps = planned_steps_;
  log.start_step = start_step;
  log.steps_per_epoch = sampler_->steps_per_epoch() / tc.micro_batches;
  log.log_every = tc.log_every;
  log.bar = comm_.rank() == 0 && tc.progress && isatty(STDERR_FILENO);
  log.metrics = metrics;
  return log;
}

StepSchedule Trainer::step_schedule(std::int64_t start_step, bool validates) const {
  const TrainConfig& tc = setup_.train;
  StepSchedule schedule;
  schedule.planned_steps = planned_steps_;
  schedule.steps_per_epoch = sampler_->steps_per_epoch() / tc.micro_batches;
  schedule.eval_every = tc.eval_every;
  schedule.checkpoint_every = tc.checkpoint_every;
  schedule.start_step = start_step;
  schedule.stop_after = setup_.stop_after;
  schedule.validates = validates;
  return schedule;
}

void Trainer::validate_now(const std::function<double(Recommender&)>& validate, std::int64_t steps_done,
                           TrainResult& result, int& bad_evals, std::ostream* metrics) {
  model_->eval();
  const double score = validate(model_);
  model_->train();
  if (metrics != nullptr) {
    *metrics << nlohmann::json{{"step", steps_done}, {"valid_ndcg@10", score}}.dump() << "\n" << std::flush;
  }
  const ValidationVerdict verdict =
      judge_validation(score, result.best_score, bad_evals, setup_.train.patience);
  spdlog::info("validation after step {}: NDCG@10 {:.4f}{}", steps_done, score,
               verdict.improved ? " (best)" : "");
  bad_evals = verdict.bad_evals;
  if (verdict.improved) {
    result.best_score = score;
    result.best_step = steps_done;
    best_ = std::dynamic_pointer_cast<RecommenderImpl>(model_->clone());
    best_->eval();
  } else if (verdict.stop) {
    result.early_stopped = true;
    spdlog::info("early stopping: {} validations without improvement; best NDCG@10 {:.4f} at step {}",
                 bad_evals, result.best_score, result.best_step);
  }
}

StepRecord Trainer::step_record(std::int64_t steps_done, const StepTotals& totals, const StepSums& sums,
                                const ReducerStats& reducer, double step_s) {
  const double step_loss = totals.mean_loss();
  StepRecord record;
  record.done = steps_done;
  record.loss_sum = step_loss;
  record.items = static_cast<std::int64_t>(totals.count);
  record.comm_wait_s = reducer.wait_s;
  record.step_s = step_s;
  record.lr = sums.lr;
  record.grad_norm = sums.grad_norm;
  record.bar_loss = step_loss;
  record.extra = {{"allreduce_bytes_per_step", reducer.bytes}};
  if (sums.adalora_budget >= 0) record.extra["adalora_budget"] = sums.adalora_budget;
  return record;
}

TrainResult Trainer::run(const std::function<double(Recommender&)>& validate) {
  const TrainConfig& tc = setup_.train;
  const bool rank0 = comm_.rank() == 0;
  auto params = trainable_named_parameters(*model_);
  GradientReducer reducer(comm_, params, {tc.bucket_mb, ReduceOp::kAvg});
  auto optimizer = make_adamw(params, tc);
  const std::vector<torch::Tensor> trainable = tensors_of(params);
  log_plan(reducer, params);
  const StepContext ctx = step_context(reducer);

  const ResumePoint at = resume(*optimizer, params);
  TrainResult result;
  result.planned_steps = planned_steps_;
  result.best_score = at.best_score;
  result.best_step = at.best_step;
  result.steps = at.step;
  if (!setup_.resume.empty()) result.resumed_step = at.step;
  int bad_evals = at.bad_evals;

  std::ofstream metrics = open_metrics_file(setup_.run_dir, rank0);
  std::ostream* metrics_out = rank0 ? &metrics : nullptr;
  StepLogger logger(step_log_options(at.step, metrics_out));
  const StepSchedule schedule = step_schedule(at.step, static_cast<bool>(validate));
  StopSignal stop_signal;
  BatchLoader loader(sampler_, at.cursor, /*depth=*/2, /*pin_memory=*/setup_.device.is_cuda());

  TrainingState state;
  state.world_size = comm_.size();
  state.steps_per_epoch = sampler_->steps_per_epoch();
  state.planned_steps = planned_steps_;
  auto checkpoint = [&](std::int64_t steps_done, bool due) {
    state.step = steps_done;
    state.cursor = loader.cursor();
    state.best_score = result.best_score;
    state.best_step = result.best_step;
    state.bad_evals = bad_evals;
    state.validation_due = due;
    result.last_checkpoint = write_checkpoint(state, *optimizer, params);
  };
  // A run stopped by a signal right at a validation step validates first.
  if (at.validation_due && validate) validate_now(validate, at.step, result, bad_evals, metrics_out);
  // A run from train.init_from validates the file's model first: it is the
  // first best, so the run's best model is never below where it started.
  if (init_loaded_ && at.step == 0 && validate) validate_now(validate, 0, result, bad_evals, metrics_out);

  model_->train();
  for (std::int64_t step = at.step; step < planned_steps_ && !result.early_stopped; ++step) {
    const auto t_step = Clock::now();
    if (cache_refresh_ > 0 && step % cache_refresh_ == 0) text_cache_->clear();  // stale keys renewed
    const StepSums sums = optimizer_step(loader, ctx, reducer, *optimizer, trainable, step);
    const StepTotals totals = reduce_step_totals(comm_, sums.loss_sum, static_cast<double>(sums.examples));
    result.steps = step + 1;
    result.last_loss = totals.mean_loss();
    logger.record(step_record(step + 1, totals, sums, reducer.stats(),
                              std::chrono::duration<double>(Clock::now() - t_step).count()));

    const StepEnd end = step_end(schedule, step + 1);
    if (totals.stop) {  // some rank got a signal: all stop here, saving first
      result.stop_signal = announce_stop_signal(logger, step + 1, planned_steps_);
      checkpoint(step + 1, end.validate);
      break;
    }
    if (end.validate) {
      logger.break_line();
      validate_now(validate, step + 1, result, bad_evals, metrics_out);
    }
    if (end.checkpoint || result.early_stopped) checkpoint(step + 1, false);
    if (end.stop_after) {
      result.stopped_after = true;
      announce_stop_after("", step + 1 - at.step, step + 1, planned_steps_);
      break;
    }
  }
  result.examples_per_s = logger.rate();
  if (setup_.model.lora.adaptive.enabled)
    spdlog::info("AdaLoRA after step {}: {}", result.steps, adalora_rank_summary(*model_->bert));
  model_->eval();
  if (best_) best_->eval();
  return result;
}

}  // namespace llmrec
