// `llmrec bench train | allreduce | export | serve`: the training step, the
// communicator, the export's item encoding and serving latency, on the workloads of
// bench/README.md, each printing one JSON line per result (rank 0) in the
// shape of the peers' lines (../shared/peers/torch_ddp_bench.py), so that
// bench/README.md can put them side by side.
//
// The train and export workloads generate their batches and item texts the
// way the PyTorch peer does (Zipf(1.1) item draws over the catalogue, full
// histories, a fixed random token sequence per item of length U{12..L}), so
// both sides do the same work per step: the unique items of 64 users x 21
// events through BERT+LoRA, the attention ranker, the in-batch softmax over
// the unique targets, AdamW on the trainable parameters, one all-reduce of
// their gradients. The step itself is llmrec's: train_micro_step, the
// GradientReducer, AdamW and the per-step loss/stop all-reduce of the
// Trainer.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <thread>

#include "apps/app_context.h"
#include "apps/bench.h"
#include "apps/config_options.h"
#include "common/random.h"
#include "common/sha256.h"
#include "common/version.h"
#include "distributed/gradient_reducer.h"
#include "models/mlm.h"
#include "serving/ann_index.h"
#include "serving/engine.h"
#include "serving/quantised_keys.h"
#include "trainer/model_scorer.h"
#include "trainer/optimizer.h"
#include "trainer/pretrain.h"
#include "trainer/train_step.h"
#include "trainer/trainer.h"

namespace llmrec {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Workload {
  std::string name;
  std::int64_t items = 20000;
  std::int64_t batch = 64;
  ModelConfig model;
};

/// The workloads of bench/README.md (the model of the peer for bench-tiny).
Workload workload_of(const std::string& name) {
  Workload w;
  w.name = name;
  ModelConfig& m = w.model;
  m.dim = 128;
  m.text_len = 32;
  m.pooling = "cls";
  m.item_id_embedding = false;
  m.bert.layers = 2;
  m.bert.hidden = 128;
  m.bert.heads = 2;
  m.bert.intermediate = 512;
  m.bert.vocab_size = 30522;
  m.bert.max_positions = 512;
  m.bert.dropout = 0.0;
  m.lora.r = 8;
  m.lora.alpha = 16;
  m.lora.dropout = 0.0;
  m.lora.targets = {"query", "value"};
  m.user.history = 20;
  m.user.heads = 2;
  m.user.layers = 0;
  m.user.dropout = 0.0;
  m.loss.negatives = "in_batch";
  if (name == "bench-tiny-seq") {  // the peer's --user causal: 2 pre-LN causal blocks, FFN width d
    m.user.pooling = "causal";
    m.user.layers = 2;
    m.user.ff_dim = m.dim;
  }
  if (name == "bench-small") {
    w.items = 100000;
    w.batch = 128;
    m.bert.layers = 4;
    m.bert.hidden = 256;
    m.bert.heads = 4;
    m.bert.intermediate = 1024;
    m.text_len = 48;
  }
  return w;
}

/// The peer's synthetic catalogue: item i's text is a fixed random token
/// sequence [CLS] ... [SEP] of length U{12..L}, zero-padded.
struct SyntheticCatalogue {
  at::Tensor tokens;  ///< [I, L] int64
  at::Tensor mask;    ///< [I, L] int64
  at::Tensor length;  ///< [I] int64
  SyntheticCatalogue(std::int64_t items, std::int64_t L, std::uint64_t seed) {
    at::Generator g = at::detail::createCPUGenerator(seed);
    length = at::randint(12, L + 1, {items}, g, at::kLong);
    tokens = at::randint(1996, 30522, {items, L}, g, at::kLong);
    mask = (at::arange(L, at::kLong).unsqueeze(0) < length.unsqueeze(1)).to(at::kLong);
    tokens.select(1, 0).fill_(101);
    tokens.index_put_({at::arange(items, at::kLong), length - 1}, at::scalar_tensor(102, at::kLong));
    tokens.mul_(mask);
  }
};

/// The peer's batches: B users x (T history + 1 target) ids ~ Zipf(s).
/// With `every_position` (the peer's --user causal), slot t of each history
/// predicts the event after it (slot t + 1, the target after the last): B x T
/// targets.
class SyntheticBatches {
 public:
  SyntheticBatches(const SyntheticCatalogue& cat, std::int64_t batch, std::int64_t history, double zipf,
                   std::uint64_t seed, bool every_position)
      : cat_(cat),
        batch_(batch),
        history_(history),
        every_position_(every_position),
        gen_(at::detail::createCPUGenerator(seed)) {
    probs_ = at::arange(1, cat.tokens.size(0) + 1, at::kDouble).pow(-zipf);
  }
  Batch next() {
    at::Tensor draws = at::multinomial(probs_, batch_ * (history_ + 1), /*replacement=*/true, gen_);
    auto [uniq, inverse, counts] = at::_unique2(draws, /*sorted=*/true, /*return_inverse=*/true, false);
    at::Tensor inv = inverse.view({batch_, history_ + 1});
    Batch b;
    b.item_ids = uniq;
    b.item_tokens = cat_.tokens.index_select(0, uniq);
    b.item_mask = cat_.mask.index_select(0, uniq);
    b.history = inv.narrow(1, 0, history_).contiguous();
    std::int64_t targets = batch_;
    if (every_position_) {
      targets = batch_ * history_;
      b.target = inv.narrow(1, 1, history_).reshape({-1}).contiguous();
      b.target_slot = at::arange(targets, at::kLong);  // row r, slot t -> r * T + t
    } else {
      b.target = inv.select(1, history_).contiguous();
    }
    b.weight = at::ones({targets}, at::kFloat);
    b.negatives = at::empty({0}, at::kLong);
    b.item_log_q = at::zeros({uniq.size(0)}, at::kFloat);
    b.example_user = at::zeros({targets}, at::kLong);
    b.example_event = at::zeros({targets}, at::kLong);
    return b;
  }

 private:
  const SyntheticCatalogue& cat_;
  std::int64_t batch_, history_;
  bool every_position_;
  at::Generator gen_;
  at::Tensor probs_;
};

/// Model FLOPs of one training step on one rank (forward + backward of the
/// model's matrix products, 2 per multiply-add; softmax, norms and the
/// optimizer left out): U items of L tokens through the item tower (with
/// cls pooling the last layer's output is needed at [CLS] only: keys and
/// values of every token, the rest for one row), `rows` histories of T
/// slots through the user tower, `targets` user vectors scored against
/// `candidates` keys. Backward: 1x the forward for products with a frozen
/// weight (the input's gradient only), 2x for trainable weights and for
/// products of two activations.
double step_model_flops(const ModelConfig& m, double U, double rows, double targets, double candidates) {
  const double L = m.text_len, H = m.bert.hidden, I = m.bert.intermediate, d = m.dim, T = m.user.history;
  const double r = m.lora.r, ff = m.user.ff_dim > 0 ? m.user.ff_dim : 4 * d;
  const bool frozen = m.lora.r > 0;          // LoRA: the base is frozen
  const double base_w = frozen ? 2.0 : 3.0;  // forward + backward factor of the base's weight products
  double f = 0;
  // Item tower, per layer and `q` query rows: Q K V O projections, scores
  // and context, FFN; LoRA on query and value (x A^T, then B).
  auto layer = [&](double q) {
    const double weights = 2 * H * H * (2 * L + 2 * q) + 2 * q * H * I * 2;
    const double acts = 2 * q * L * H * 2;
    const double lora = m.lora.r > 0 ? 2 * (q + L) * H * r * 2 : 0.0;
    return base_w * weights + 3 * acts + 3 * lora;
  };
  const double last_rows = m.pooling == "cls" ? 1 : L;
  if (m.bert.layers > 0) f += U * ((m.bert.layers - 1) * layer(L) + layer(last_rows));
  f += U * 3 * (2 * H * d);  // item_proj
  // User tower over the rows' T slots.
  const double user_layer = 2 * T * d * d * 4 + 2 * T * d * ff * 2 + 2 * T * T * d * 2;
  f += rows * 3 * m.user.layers * user_layer;
  if (m.user.pooling == "attention") f += rows * 3 * (2 * T * d * d * 2 + 2 * d * d * 2 + 2 * T * d * 2);
  const double user_out = m.user.pooling == "causal" ? T : 1;  // slots through norm + proj
  f += rows * 3 * user_out * 2 * d * d;
  // Scorer: keys A l of the candidates, logits of every target.
  f += 3 * (2 * candidates * d * d + 2 * targets * candidates * d);
  return f;
}

/// GFLOP/s of a 1024 x 1024 float32 matrix product on this process's threads.
double sgemm_gflops() {
  at::Tensor a = at::randn({1024, 1024}), b = at::randn({1024, 1024});
  at::matmul(a, b);
  const int reps = 5;
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) at::matmul(a, b);
  return 2.0 * 1024 * 1024 * 1024 * reps / since(t0) / 1e9;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

/// Max over ranks of each value.
std::vector<double> max_over_ranks(Communicator& comm, const std::vector<double>& v) {
  at::Tensor t = at::tensor(v, at::kDouble);
  comm.all_reduce(t, {ReduceOp::kMax});
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

std::string config_hash(ModelConfig mc) {
  return sha256_hex(ConfigWriter::write(mc)).substr(0, 12);
}

nlohmann::json header(const std::string& bench, const std::string& workload, Communicator& comm,
                      const std::string& device = "cpu") {
  return {{"bench", bench},
          {"workload", workload},
          {"git", version_git_revision()},
          {"world_size", comm.size()},
          {"threads_per_rank", at::get_num_threads()},
          {"omp_wait_policy",
           std::getenv("OMP_WAIT_POLICY") != nullptr ? std::getenv("OMP_WAIT_POLICY") : "default"},
          {"device", device},
          {"blas", blas_describe()}};
}

/// Times of 10 blocking all-reduces of `bytes` (after 2 untimed): the
/// gradient all-reduce alone, not overlapped, i.e. what the reducer can hide.
std::vector<double> allreduce_alone_s(Communicator& comm, std::int64_t bytes, const c10::Device& device) {
  at::Tensor flat =
      at::zeros({std::max<std::int64_t>(bytes / 4, 1)}, at::TensorOptions().dtype(at::kFloat).device(device));
  std::vector<double> alone;
  for (int i = 0; i < 12; ++i) {
    comm.barrier();
    auto t0 = Clock::now();
    comm.all_reduce(flat, {ReduceOp::kAvg});
    if (i >= 2) alone.push_back(since(t0));
  }
  return alone;
}

/// What every training bench prints beside its throughput (collective):
/// the gradient all-reduce (waited for, alone, the share backward hid),
/// model FLOPs and their utilisation of every rank's sgemm ceiling, and
/// whether the replicas agree. `flops` and `sgemm` are this rank's.
nlohmann::json step_figures(Communicator& comm,
                            const std::vector<std::pair<std::string, torch::Tensor>>& params, double flops,
                            double sgemm, double elapsed, int steps, double wait_ms, double alone_ms,
                            std::int64_t allreduce_bytes) {
  double csum = 0;  // replicas must agree: max and -min of the checksum over ranks
  std::int64_t n_trainable = 0;
  for (const auto& [n, p] : params) {
    csum += p.detach().to(at::kDouble).sum().item<double>();
    n_trainable += p.numel();
  }
  auto sync = max_over_ranks(comm, {csum, -csum});
  at::Tensor fl = at::tensor({flops, sgemm}, at::kDouble);  // sums over ranks
  comm.all_reduce(fl, {ReduceOp::kSum});
  const double achieved_gflops = fl[0].item<double>() / elapsed / 1e9, sgemm_sum = fl[1].item<double>();
  return {{"comm_wait_ms_median", wait_ms},
          {"allreduce_alone_ms_median", alone_ms},
          {"allreduce_hidden_share",
           comm.size() > 1 && alone_ms > 0 ? std::clamp(1.0 - wait_ms / alone_ms, 0.0, 1.0) : 0.0},
          {"model_gflop_per_step", fl[0].item<double>() / steps / 1e9},
          {"achieved_gflops", achieved_gflops},
          {"sgemm1024_gflops_rank0", sgemm},
          {"sgemm1024_gflops_all_ranks", sgemm_sum},
          {"mfu", sgemm_sum > 0 ? achieved_gflops / sgemm_sum : 0.0},
          {"trainable_params", n_trainable},
          {"allreduce_bytes_per_step", allreduce_bytes},
          {"params_in_sync", sync[0] == -sync[1]}};
}

/// The measured steps of bench train on this rank: times in ms per step.
struct TrainStepTimes {
  std::vector<double> step, data, forward, backward, wait, optimizer, unique_items;
  double flops = 0;  ///< this rank's model FLOPs over the measured steps
  double loss_last = 0;
};

/// The model, its reducer and optimizer of bench train: the Trainer's step.
struct BenchTrainer {
  Recommender model{nullptr};
  std::vector<std::pair<std::string, torch::Tensor>> params;
  std::unique_ptr<GradientReducer> reducer;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  StepContext step;
};

BenchTrainer bench_trainer(AppContext& ctx, const Workload& w) {
  BenchTrainer t;
  t.model = Recommender(RecommenderOptions(w.model));
  t.model->to(ctx.device);
  t.model->train();
  t.params = trainable_named_parameters(*t.model);
  t.reducer = std::make_unique<GradientReducer>(*ctx.comm, t.params, ReducerOptions{25.0, ReduceOp::kAvg});
  TrainConfig tc;
  tc.lr = 1e-3;
  tc.weight_decay = 0.01;
  t.optimizer = make_adamw(t.params, tc);
  t.step.comm = ctx.comm.get();
  t.step.reducer = t.reducer.get();
  t.step.text_len = w.model.text_len;
  t.step.num_items = w.items;
  t.step.device = ctx.device;
  t.step.bf16 = ctx.config.run.precision == "bf16";
  return t;
}

/// The start of the measured steps: every rank at once, and rank 0's
/// profiler from here on with --profile.
Clock::time_point start_measuring(Communicator& comm, const BenchOptions& o,
                                  std::optional<torch::autograd::profiler::RecordProfile>& profile) {
  comm.barrier();
  if (!o.profile.empty() && comm.rank() == 0) profile.emplace(o.profile);
  return Clock::now();
}

/// One optimizer step as the Trainer runs it (micro-step, reducer, AdamW,
/// the per-step loss all-reduce), timed into `times` when `measured`.
void bench_train_step(BenchTrainer& t, SyntheticBatches& data, const Workload& w, AppContext& ctx,
                      bool measured, TrainStepTimes& times) {
  Communicator& comm = *ctx.comm;
  const auto t0 = Clock::now();
  Batch b = data.next();
  const double data_s = since(t0);
  MicroStepResult r = train_micro_step(t.model, b, t.step, /*sync=*/true);
  t.reducer->finish();
  const double wait_s = t.reducer->stats().wait_s;
  const auto t3 = Clock::now();
  t.optimizer->step();
  release_gradients(*t.optimizer);
  if (ctx.device.is_cuda())
    torch::cuda::synchronize(ctx.device.index());  // step times include the GPU's queued work
  // The Trainer's per-step loss / examples / stop all-reduce.
  const StepTotals totals = reduce_step_totals(comm, r.loss_sum, static_cast<double>(r.examples));
  const double opt_s = since(t3);
  if (!measured) return;
  times.step.push_back(since(t0) * 1e3);
  times.data.push_back(data_s * 1e3);
  times.forward.push_back(r.forward_s * 1e3);
  times.backward.push_back(r.backward_s * 1e3);
  times.wait.push_back(wait_s * 1e3);
  times.optimizer.push_back(opt_s * 1e3);
  times.unique_items.push_back(static_cast<double>(b.item_ids.size(0)));
  const double candidates =
      w.model.loss.negatives == "batch_items"
          ? static_cast<double>(b.item_ids.size(0))
          : static_cast<double>(std::get<0>(at::_unique(b.target)).numel() + b.negatives.numel());
  times.flops += step_model_flops(w.model, static_cast<double>(b.item_ids.size(0)),
                                  static_cast<double>(b.rows()), static_cast<double>(b.size()), candidates);
  times.loss_last = totals.mean_loss();
}

int bench_train(AppContext& ctx, const BenchOptions& o) {
  Communicator& comm = *ctx.comm;
  Workload w = workload_of(o.workload);
  w.model.pooling = o.pooling;
  if (o.lora_r >= 0) w.model.lora.r = o.lora_r;
  const std::int64_t batch = o.batch > 0 ? o.batch : w.batch;
  SyntheticCatalogue cat(w.items, w.model.text_len, static_cast<std::uint64_t>(o.seed));
  SyntheticBatches data(
      cat, batch, w.model.user.history, 1.1,
      static_cast<std::uint64_t>(o.seed) * 1000 + 1 + static_cast<std::uint64_t>(comm.rank()),
      w.model.user.pooling == "causal");
  torch::manual_seed(static_cast<std::uint64_t>(o.seed));  // identical init on all ranks
  BenchTrainer t = bench_trainer(ctx, w);
  const std::vector<double> alone = allreduce_alone_s(comm, t.reducer->bytes_per_step(), ctx.device);

  // The machine's ceiling for MFU: every rank's sgemm at once.
  comm.barrier();
  const double sgemm = sgemm_gflops();
  TrainStepTimes times;
  Clock::time_point t_start;
  std::optional<torch::autograd::profiler::RecordProfile> profile;
  for (int step = 0; step < o.warmup + o.steps; ++step) {
    if (step == o.warmup) t_start = start_measuring(comm, o, profile);
    bench_train_step(t, data, w, ctx, step >= o.warmup, times);
  }
  comm.barrier();
  const double elapsed = since(t_start);
  profile.reset();  // writes the trace (its time is not in the figures)

  double mean_unique = 0;
  for (double u : times.unique_items) mean_unique += u;
  mean_unique /= std::max<double>(1, static_cast<double>(times.unique_items.size()));
  auto m = max_over_ranks(
      comm, {median(times.step), median(times.data), median(times.forward), median(times.backward),
             median(times.wait), median(times.optimizer), peak_rss_mb(), median(alone) * 1e3});
  at::Tensor u = at::tensor({mean_unique}, at::kDouble);
  comm.all_reduce(u, {ReduceOp::kAvg});
  std::int64_t n_total = 0;
  for (auto& p : t.model->parameters()) n_total += p.numel();
  nlohmann::json line = header("train", w.name, comm, ctx.device.str());
  line.update(step_figures(comm, t.params, times.flops, sgemm, elapsed, o.steps, m[4], m[7],
                           t.reducer->bytes_per_step()));
  line.update({{"config_hash", config_hash(w.model)},
               {"examples_per_s", static_cast<double>(comm.size() * batch * o.steps) / elapsed},
               {"step_ms_median", m[0]},
               {"data_ms_median", m[1]},
               {"forward_ms_median", m[2]},
               {"backward_ms_median", m[3]},
               {"optimizer_ms_median", m[5]},
               {"unique_items_per_step_mean", u.item<double>()},
               {"total_params", n_total},
               {"peak_rss_mb", m[6]},
               {"loss_last", times.loss_last},
               {"warmup_steps", o.warmup},
               {"measured_steps", o.steps},
               {"batch_per_rank", batch},
               {"pooling", w.model.pooling},
               {"user_tower", w.model.user.pooling},
               {"lora_r", w.model.lora.r},
               {"precision", ctx.config.run.precision}});
  if (comm.rank() == 0) {
    std::printf("%s\n", line.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}

/// Model FLOPs of one pre-training step on one rank: `rows` texts padded to
/// `width` tokens through BERT (every weight trained: backward 2x forward),
/// the last layer's keys and values for every token but the rest for the
/// `masked` positions alone (BertModel::hidden_at: what the head reads),
/// the head at those positions (dense H x H and the tied decoder H x V).
double mlm_step_flops(const ModelConfig& m, double rows, double width, double masked) {
  const double H = m.bert.hidden, I = m.bert.intermediate, V = m.bert.vocab_size, S = width;
  const double layer = 2 * S * H * H * 4 + 2 * S * H * I * 2 + 2 * S * S * H * 2;
  const double last = 2 * S * H * H * 2 * rows + masked * (2 * H * H * 2 + 2 * H * I * 2 + 2 * S * H * 2);
  return 3 * (rows * (m.bert.layers - 1) * layer + last + masked * (2 * H * H + 2 * H * V));
}

/// `bench pretrain`, workload mlm-tiny (../shared/peers/torch_mlm_bench.py):
/// bench-tiny's BERT with every weight trained and the BertForMaskedLM head,
/// --batch texts per rank drawn uniformly from bench-tiny's catalogue,
/// BERT's masking, AdamW lr 1e-4; the step is `llmrec pretrain`'s
/// (pretrain_step: gathered head, bucketed all-reduce overlapped with
/// backward).
/// The peer's vocabulary: tokens "t<i>" with BERT's special ids.
MlmVocab bench_mlm_vocab(std::int64_t size) {
  std::vector<std::string> vocab(static_cast<std::size_t>(size));
  for (std::size_t i = 0; i < vocab.size(); ++i) vocab[i] = "t" + std::to_string(i);
  vocab[0] = "[PAD]";
  vocab[100] = "[UNK]";
  vocab[101] = "[CLS]";
  vocab[102] = "[SEP]";
  vocab[103] = "[MASK]";
  return MlmVocab::from(vocab, "mlm-tiny");
}

/// `batch` random catalogue texts (rows of `tokens` [items, L], lengths
/// `length`), whole-word masked at 15%; their real tokens into `real`.
MlmBatch random_mlm_batch(const at::Tensor& tokens, const at::Tensor& length, const MlmVocab& mv,
                          std::int64_t batch, std::mt19937_64& draw, std::uint64_t& text_seed, double& real) {
  const auto* tok = tokens.data_ptr<std::int32_t>();
  const auto* len = length.data_ptr<std::int64_t>();
  const std::int64_t items = tokens.size(0), L = tokens.size(1);
  std::vector<MaskedText> texts;
  texts.reserve(static_cast<std::size_t>(batch));
  real = 0;
  for (std::int64_t k = 0; k < batch; ++k) {
    const auto i = static_cast<std::int64_t>(random_below(draw(), static_cast<std::uint64_t>(items)));
    texts.push_back(mlm_mask_text(tok + i * L, len[i], mv, {0.15, true}, splitmix64(++text_seed)));
    real += static_cast<double>(len[i]);
  }
  return mlm_batch(texts, mv.pad);
}

int bench_pretrain(AppContext& ctx, const BenchOptions& o) {
  Communicator& comm = *ctx.comm;
  Workload w = workload_of("bench-tiny");
  const std::int64_t batch = o.batch > 0 ? o.batch : 128;
  SyntheticCatalogue cat(w.items, w.model.text_len, static_cast<std::uint64_t>(o.seed));
  const MlmVocab mv = bench_mlm_vocab(w.model.bert.vocab_size);
  const at::Tensor tokens = cat.tokens.to(at::kInt).contiguous();
  std::mt19937_64 draw(static_cast<std::uint64_t>(o.seed) * 1000 + 7 +
                       static_cast<std::uint64_t>(comm.rank()));

  torch::manual_seed(static_cast<std::uint64_t>(o.seed));  // identical init on all ranks
  BertForMaskedLM model(bert_config_from(w.model.bert));
  model->to(ctx.device);
  model->train();
  auto params = trainable_named_parameters(*model);
  const std::vector<torch::Tensor> trainable = tensors_of(params);
  GradientReducer reducer(comm, params, {25.0, ReduceOp::kSum});
  TrainConfig tc;
  tc.lr = 1e-4;
  tc.weight_decay = 0.01;
  auto optimizer = make_adamw(params, tc);
  const std::vector<double> alone = allreduce_alone_s(comm, reducer.bytes_per_step(), ctx.device);
  comm.barrier();
  const double sgemm = sgemm_gflops();

  std::vector<double> t_step, t_data, t_wait, t_opt;
  double flops = 0, tokens_done = 0, loss_last = 0;
  std::uint64_t text_seed = 0;
  std::optional<torch::autograd::profiler::RecordProfile> profile;
  Clock::time_point t_start;
  for (int step = 0; step < o.warmup + o.steps; ++step) {
    if (step == o.warmup) t_start = start_measuring(comm, o, profile);
    const auto t0 = Clock::now();
    double real = 0;
    MlmBatch b = random_mlm_batch(tokens, cat.length, mv, batch, draw, text_seed, real);
    const double data_s = since(t0);
    const auto t1 = Clock::now();
    MlmSums sums = pretrain_step(*model, b, static_cast<double>(b.predicted * comm.size()), reducer,
                                 *optimizer, trainable, 0.0, tc.lr, nullptr);
    const double wait_s = reducer.stats().wait_s;
    // The pre-training loop's per-step loss / stop all-reduce.
    const StepTotals totals =
        reduce_step_totals(comm, sums.loss_sum.item<double>(), static_cast<double>(sums.predicted));
    if (step >= o.warmup) {
      t_step.push_back(since(t0) * 1e3);
      t_data.push_back(data_s * 1e3);
      t_wait.push_back(wait_s * 1e3);
      t_opt.push_back(since(t1) * 1e3);
      flops += mlm_step_flops(w.model, static_cast<double>(b.ids.size(0)), static_cast<double>(b.ids.size(1)),
                              static_cast<double>(b.predicted));
      tokens_done += real;
      loss_last = totals.mean_loss();
    }
  }
  comm.barrier();
  const double elapsed = since(t_start);
  profile.reset();  // writes the trace (its time is not in the figures)
  auto m = max_over_ranks(comm, {median(t_step), median(t_data), median(t_wait), median(t_opt), peak_rss_mb(),
                                 median(alone) * 1e3});
  at::Tensor all_tokens = at::tensor({tokens_done}, at::kDouble);
  comm.all_reduce(all_tokens, {ReduceOp::kSum});
  nlohmann::json line = header("pretrain", "mlm-tiny", comm, ctx.device.str());
  line.update(
      step_figures(comm, params, flops, sgemm, elapsed, o.steps, m[2], m[5], reducer.bytes_per_step()));
  line.update({{"sequences_per_s", static_cast<double>(comm.size() * batch * o.steps) / elapsed},
               {"tokens_per_s", all_tokens.item<double>() / elapsed},
               {"step_ms_median", m[0]},
               {"data_ms_median", m[1]},
               {"forward_backward_optimizer_ms_median", m[3]},
               {"peak_rss_mb", m[4]},
               {"loss_last", loss_last},
               {"warmup_steps", o.warmup},
               {"measured_steps", o.steps},
               {"batch_per_rank", batch}});
  if (comm.rank() == 0) {
    std::printf("%s\n", line.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}

/// Bus bandwidth of an all-reduce of `bytes` taking `s` seconds on W ranks.
double bus_gbps(double bytes, double s, int world) {
  return s > 0 ? 2.0 * (world - 1) / world * bytes / s / 1e9 : 0.0;
}

int bench_allreduce(AppContext& ctx, const BenchOptions& o) {
  Communicator& comm = *ctx.comm;
  if (comm.size() < 2) {
    spdlog::error("bench allreduce needs at least 2 ranks (run it under mpirun -np 2)");
    return 1;
  }
  for (std::int64_t bytes = 4 << 10; bytes <= (static_cast<std::int64_t>(o.max_mb) << 20); bytes *= 4) {
    const std::int64_t n = bytes / 4;
    at::Tensor t = at::ones({n}, at::TensorOptions().dtype(at::kFloat).device(ctx.device));
    std::vector<float> raw(static_cast<std::size_t>(n), 1.0f);
    const int reps = bytes <= (1 << 20) ? 50 : bytes <= (16 << 20) ? 10 : 4;
    std::vector<double> ours, mpi;
    for (int i = 0; i < reps + 2; ++i) {  // alternate, the first two untimed
      comm.barrier();
      auto t0 = Clock::now();
      comm.all_reduce(t);
      const double a = since(t0);
      comm.barrier();
      // Raw MPI on the job's communicator: the ceiling (our MPI backend
      // runs on MPI_COMM_WORLD's duplicate, on its own thread).
      t0 = Clock::now();
      raw_mpi_all_reduce_sum(raw.data(), n);
      const double b = since(t0);
      if (i >= 2) {
        ours.push_back(a);
        mpi.push_back(b);
      }
    }
    auto m = max_over_ranks(comm, {median(ours), median(mpi)});
    nlohmann::json line = header("allreduce", "float32-sum", comm, ctx.device.str());
    line.update({{"bytes", bytes},
                 {"reps", reps},
                 {"llmrec_us_median", m[0] * 1e6},
                 {"mpi_us_median", m[1] * 1e6},
                 {"llmrec_bus_gbps", bus_gbps(static_cast<double>(bytes), m[0], comm.size())},
                 {"mpi_bus_gbps", bus_gbps(static_cast<double>(bytes), m[1], comm.size())},
                 {"ratio", m[0] > 0 ? m[1] / m[0] : 0.0}});
    if (comm.rank() == 0) {
      std::printf("%s\n", line.dump().c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}

int bench_encode(AppContext& ctx, const BenchOptions& o) {
  Communicator& comm = *ctx.comm;
  Workload w = workload_of(o.workload);
  SyntheticCatalogue cat(w.items, w.model.text_len, static_cast<std::uint64_t>(o.seed));
  torch::manual_seed(static_cast<std::uint64_t>(o.seed));
  Recommender model(RecommenderOptions(w.model));
  model->eval();
  ItemTable items;
  items.ids.resize(static_cast<std::size_t>(w.items));
  at::Tensor tok32 = cat.tokens.to(at::kInt).contiguous();
  items.tokens.assign(tok32.data_ptr<std::int32_t>(), tok32.data_ptr<std::int32_t>() + tok32.numel());
  at::Tensor len32 = cat.length.to(at::kInt).contiguous();
  items.length.assign(len32.data_ptr<std::int32_t>(), len32.data_ptr<std::int32_t>() + len32.numel());
  items.cold.assign(static_cast<std::size_t>(w.items), 1);
  {  // warm-up: one block
    ItemTable first = items;
    first.ids.resize(kEncodeBlock);
    first.tokens.resize(static_cast<std::size_t>(kEncodeBlock * w.model.text_len));
    first.length.resize(kEncodeBlock);
    first.cold.resize(kEncodeBlock);
    encode_all_items(model, first, w.model.text_len, comm);
  }
  std::vector<double> secs;
  at::Tensor vecs;
  for (int r = 0; r < o.repeats; ++r) {
    comm.barrier();
    auto t0 = Clock::now();
    vecs = encode_all_items(model, items, w.model.text_len, comm);
    at::Tensor keys = model->item_keys(vecs);  // what the export stores
    secs.push_back(since(t0));
  }
  auto m = max_over_ranks(comm, {median(secs), peak_rss_mb()});
  nlohmann::json line = header("export", w.name, comm);
  line.update({{"config_hash", config_hash(w.model)},
               {"items", w.items},
               {"repeats", o.repeats},
               {"seconds_median", m[0]},
               {"items_per_s", static_cast<double>(w.items) / m[0]},
               {"peak_rss_mb", m[1]}});
  if (comm.rank() == 0) {
    std::printf("%s\n", line.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}

/// p-th quantile (0..1) of `v` (sorted copy, nearest rank).
double quantile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

/// recall@k of `found` against the exact top `truth` (both k long at most).
double recall_at(const std::vector<std::int32_t>& found, const std::vector<std::int32_t>& truth) {
  if (truth.empty()) return 1.0;
  std::size_t hits = 0;
  for (std::int32_t i : found) hits += std::find(truth.begin(), truth.end(), i) != truth.end();
  return static_cast<double>(hits) / static_cast<double>(truth.size());
}

serving::AnnOptions ann_options_of(const BenchOptions& o) {
  serving::AnnOptions a;
  a.metric = o.ann_metric;
  a.m = o.ann_m;
  a.ef_construction = o.ann_ef_construction;
  a.ef_search = o.ann_ef_search;
  return a;
}

/// The exact top k of `keys` [n, d] for query q: one matrix-vector product
/// and a partial sort, as the engine does (ties: the smaller row first).
std::vector<std::int32_t> exact_top_k(const at::Tensor& keys, const float* q, int k) {
  const std::int64_t n = keys.size(0), d = keys.size(1);
  const at::Tensor s = at::mv(keys, at::from_blob(const_cast<float*>(q), {d}, at::kFloat)).contiguous();
  const float* sp = s.data_ptr<float>();
  std::vector<std::int32_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  const auto top = static_cast<std::ptrdiff_t>(std::min<std::int64_t>(k, n));
  std::partial_sort(order.begin(), order.begin() + top, order.end(), [&](std::int32_t a, std::int32_t b) {
    return sp[a] > sp[b] || (sp[a] == sp[b] && a < b);
  });
  order.resize(static_cast<std::size_t>(top));
  return order;
}

/// Exact search as the engine runs it for a model-only request: the int8
/// scan with its bound, then exact scores of the candidates only.
std::vector<std::int32_t> scan_top_k(const serving::QuantisedKeys& quantised, const float* kp, std::int64_t d,
                                     const float* q, int k, std::size_t& candidates) {
  const std::vector<std::int32_t> c = quantised.candidates(q, k, nullptr);
  candidates = c.size();
  std::vector<std::pair<float, std::int32_t>> s;
  s.reserve(c.size());
  for (std::int32_t i : c) {
    double acc = 0;
    for (std::int64_t j = 0; j < d; ++j) acc += static_cast<double>(kp[i * d + j]) * q[j];
    s.emplace_back(static_cast<float>(acc), i);
  }
  const auto top = std::min<std::size_t>(static_cast<std::size_t>(k), s.size());
  std::partial_sort(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(top), s.end(),
                    [](const auto& a, const auto& b) {
                      return a.first > b.first || (a.first == b.first && a.second < b.second);
                    });
  std::vector<std::int32_t> out;
  out.reserve(top);
  for (std::size_t j = 0; j < top; ++j) out.push_back(s[j].second);
  return out;
}

/// Per-query latencies (ms) and recall@k of one search method.
struct SearchRun {
  std::vector<double> ms;
  std::vector<double> recall;
  double mean_recall() const {
    return recall.empty()
               ? 0.0
               : std::accumulate(recall.begin(), recall.end(), 0.0) / static_cast<double>(recall.size());
  }
  double min_recall() const { return recall.empty() ? 0.0 : *std::min_element(recall.begin(), recall.end()); }
};

/// HNSW at one efSearch over every query, in a pass of its own (20 untimed
/// warm-up queries first), so that no setting runs on caches another warmed.
SearchRun hnsw_pass(const serving::AnnIndex& index, const at::Tensor& queries, int k, int ef_search,
                    const std::vector<std::vector<std::int32_t>>& truth) {
  SearchRun run;
  std::vector<std::int32_t> ids;
  std::vector<float> dots;
  const auto d = queries.size(1);
  for (std::int64_t r = -20; r < queries.size(0); ++r) {
    const float* q = queries.data_ptr<float>() + std::max<std::int64_t>(r, 0) * d;
    const auto t = Clock::now();
    index.search(q, k, ids, dots, ef_search);
    const double ms = since(t) * 1e3;
    if (r < 0) continue;
    run.ms.push_back(ms);
    run.recall.push_back(recall_at(ids, truth[static_cast<std::size_t>(r)]));
  }
  return run;
}

/// bench serve --synthetic-items N: the search alone over N random keys
/// (64 clusters, d = --dim): exact (matrix-vector product and partial sort)
/// alternated per query with the engine's int8 scan, then the HNSW index at
/// each efSearch in a pass of its own, recall against the exact top k.
int bench_serve_synthetic(AppContext& ctx, const BenchOptions& o) {
  const std::int64_t n = o.synthetic_items, d = o.dim;
  at::manual_seed(static_cast<std::uint64_t>(o.seed));
  const at::Tensor centres = at::randn({64, d});
  const at::Tensor keys =
      (centres.index_select(0, at::randint(64, {n}, at::kLong)) + 0.5 * at::randn({n, d})).contiguous();
  const at::Tensor queries =
      (centres.index_select(0, at::randint(64, {o.requests}, at::kLong)) + 0.5 * at::randn({o.requests, d}))
          .contiguous();
  const float* kp = keys.data_ptr<float>();
  // The graph is built on every core; the queries run on the configured
  // threads (OMP_NUM_THREADS=1: one core).
  const int search_threads = at::get_num_threads();
  const int build_threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  at::set_num_threads(build_threads);
  const auto tb = Clock::now();
  serving::AnnIndex index(kp, n, d, ann_options_of(o));
  const double build_s = since(tb);
  at::set_num_threads(search_threads);
  const serving::QuantisedKeys quantised(kp, n, d);

  std::vector<std::vector<std::int32_t>> truth;
  SearchRun exact, scan;
  std::vector<double> scan_candidates;
  for (std::int64_t r = -20; r < o.requests; ++r) {  // 20 untimed warm-up queries
    const float* q = queries.data_ptr<float>() + std::max<std::int64_t>(r, 0) * d;
    auto t = Clock::now();
    std::vector<std::int32_t> top = exact_top_k(keys, q, o.k);
    const double e_ms = since(t) * 1e3;
    std::size_t cands = 0;
    t = Clock::now();
    const std::vector<std::int32_t> scanned = scan_top_k(quantised, kp, d, q, o.k, cands);
    const double s_ms = since(t) * 1e3;
    if (r < 0) continue;
    exact.ms.push_back(e_ms);
    scan.ms.push_back(s_ms);
    scan.recall.push_back(recall_at(scanned, top));
    scan_candidates.push_back(static_cast<double>(cands));
    truth.push_back(std::move(top));
  }
  std::vector<int> efs{o.ann_ef_search};
  efs.insert(efs.end(), o.ann_ef_sweep.begin(), o.ann_ef_sweep.end());
  std::vector<SearchRun> hnsw;
  nlohmann::json sweep = nlohmann::json::array();
  for (int ef : efs) {
    hnsw.push_back(hnsw_pass(index, queries, o.k, ef, truth));
    const SearchRun& h = hnsw.back();
    sweep.push_back({{"ef_search", ef},
                     {"p50_ms", quantile(h.ms, 0.50)},
                     {"p99_ms", quantile(h.ms, 0.99)},
                     {"recall_at_k", h.mean_recall()},
                     {"recall_at_k_min", h.min_recall()}});
  }
  nlohmann::json line = header("serve", fmt::format("synthetic-{}x{}", n, d), *ctx.comm);
  line.update({{"items", n},
               {"dim", d},
               {"k", o.k},
               {"requests", o.requests},
               {"index", index.describe()},
               {"index_build_s", build_s},
               {"index_build_threads", build_threads},
               {"exact_p50_ms", quantile(exact.ms, 0.50)},
               {"exact_p99_ms", quantile(exact.ms, 0.99)},
               {"exact_int8_scan_p50_ms", quantile(scan.ms, 0.50)},
               {"exact_int8_scan_p99_ms", quantile(scan.ms, 0.99)},
               {"exact_int8_scan_candidates_p50", quantile(scan_candidates, 0.50)},
               {"exact_int8_scan_recall_min", scan.min_recall()},
               {"hnsw_p50_ms", quantile(hnsw.front().ms, 0.50)},
               {"hnsw_p99_ms", quantile(hnsw.front().ms, 0.99)},
               {"hnsw_max_ms", quantile(hnsw.front().ms, 1.0)},
               {"recall_at_k", hnsw.front().mean_recall()},
               {"recall_at_k_min", hnsw.front().min_recall()},
               {"hnsw_sweep", sweep},
               {"search_threads", search_threads},
               {"peak_rss_mb", peak_rss_mb()}});
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
  return 0;
}

/// One process: latency of single top-k requests for random known users
/// (model score, or fused with --cf-weight; seen items excluded) and of
/// batches of 32; with --ann hnsw the same users also through the HNSW
/// index, alternated request by request, with recall@k against exact.
/// Latencies (ms) of `batches` batched calls of 32 requests each.
std::vector<double> batch32_ms(const serving::RecommendEngine& engine, int batches,
                               const std::function<serving::RecommendRequest()>& request) {
  std::vector<double> ms;
  for (int b = 0; b < batches; ++b) {
    std::vector<serving::RecommendRequest> rs;
    for (int i = 0; i < 32; ++i) rs.push_back(request());
    const auto t = Clock::now();
    engine.recommend_batch(rs);
    ms.push_back(since(t) * 1e3);
  }
  return ms;
}

int bench_serve(AppContext& ctx, const BenchOptions& o) {
  if (o.synthetic_items > 0) return bench_serve_synthetic(ctx, o);
  if (o.export_path.empty()) {
    throw ConfigError("bench serve needs --export FILE (made by llmrec export) or --synthetic-items N");
  }
  const bool ann = o.ann == "hnsw";
  auto t_load = Clock::now();
  auto engine = serving::RecommendEngine::open(
      o.export_path, "", ann ? std::optional<serving::AnnOptions>(ann_options_of(o)) : std::nullopt);
  const double load_s = since(t_load);
  const auto& e = engine->data();
  if (e.num_users == 0)
    throw ConfigError(fmt::format("{}: the export has no users to ask for", o.export_path));
  std::mt19937_64 gen(static_cast<std::uint64_t>(o.seed));
  std::uniform_int_distribution<std::int64_t> pick(0, e.num_users - 1);
  auto request = [&] {
    serving::RecommendRequest r;
    r.user = e.user_ids[static_cast<std::size_t>(pick(gen))];
    r.k = o.k;
    r.cf_weight = o.cf_weight;
    r.search = "exact";
    return r;
  };
  for (int i = 0; i < 20; ++i) engine->recommend(request());  // warm-up
  std::vector<double> single;
  SearchRun hnsw;
  const auto t0 = Clock::now();
  double ann_s = 0;
  for (int i = 0; i < o.requests; ++i) {
    serving::RecommendRequest r = request();
    auto t = Clock::now();
    const serving::Recommendation exact = engine->recommend(r);
    single.push_back(since(t) * 1e3);
    if (!ann) continue;
    r.search = "hnsw";
    t = Clock::now();
    const serving::Recommendation approx = engine->recommend(r);
    hnsw.ms.push_back(since(t) * 1e3);
    ann_s += hnsw.ms.back() / 1e3;
    std::vector<std::int32_t> truth, found;
    for (const auto& it : exact.items) truth.push_back(it.item);
    for (const auto& it : approx.items) found.push_back(it.item);
    hnsw.recall.push_back(recall_at(found, truth));
  }
  const double single_s = since(t0) - ann_s;
  const std::vector<double> batch_ms = batch32_ms(*engine, std::max(1, o.requests / 32), request);
  nlohmann::json line = header("serve", o.export_path, *ctx.comm);
  line.update({{"items", e.num_items},
               {"users", e.num_users},
               {"dim", e.dim},
               {"k", o.k},
               {"cf_weight", o.cf_weight},
               {"search", "exact"},
               {"export_load_s", load_s},
               {"requests", o.requests},
               {"p50_ms", quantile(single, 0.50)},
               {"p99_ms", quantile(single, 0.99)},
               {"max_ms", quantile(single, 1.0)},
               {"requests_per_s", static_cast<double>(o.requests) / single_s},
               {"batch32_p50_ms", quantile(batch_ms, 0.50)},
               {"batch32_requests_per_s",
                32.0 * static_cast<double>(batch_ms.size()) /
                    std::max(1e-9, std::accumulate(batch_ms.begin(), batch_ms.end(), 0.0) / 1e3)},
               {"peak_rss_mb", peak_rss_mb()}});
  if (ann) {
    line.update({{"index", engine->ann_index()->describe()},
                 {"index_build_s", engine->ann_index()->build_seconds()},
                 {"hnsw_p50_ms", quantile(hnsw.ms, 0.50)},
                 {"hnsw_p99_ms", quantile(hnsw.ms, 0.99)},
                 {"hnsw_max_ms", quantile(hnsw.ms, 1.0)},
                 {"recall_at_k", hnsw.mean_recall()}});
  }
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
  return 0;
}

void add_workload_options(CLI::App& cmd, BenchOptions& o) {
  cmd.add_option("--workload", o.workload,
                 "bench-tiny, bench-tiny-seq (bench-tiny with the causal user tower and a loss at every "
                 "history position, the peer's --user causal) or bench-small (bench/README.md)")
      ->check(CLI::IsMember({"bench-tiny", "bench-tiny-seq", "bench-small"}))
      ->capture_default_str();
  cmd.add_option("--seed", o.seed, "Seed of the catalogue, batches and weights")->capture_default_str();
}

void add_step_options(CLI::App& cmd, BenchOptions& o) {
  cmd.add_option("--steps", o.steps, "Measured steps")->check(CLI::Range(1, 100000))->capture_default_str();
  cmd.add_option("--warmup", o.warmup, "Untimed steps first")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
}

void add_profile_option(CLI::App& cmd, BenchOptions& o) {
  cmd.add_option("--profile", o.profile,
                 "Write a chrome://tracing file of rank 0's measured steps, one event per operator "
                 "(the profiler slows the steps: the figures of a profiled run are not comparable)");
}

void add_train_bench_options(CLI::App& cmd, BenchOptions& o) {
  add_workload_options(cmd, o);
  add_step_options(cmd, o);
  cmd.add_option("--batch", o.batch, "Users per rank and step (0 = the workload's)")
      ->check(CLI::Range(0, 1 << 20));
  cmd.add_option("--pooling", o.pooling,
                 "cls (the peer's model; only what h_[CLS] needs is computed) or mean (every token of every "
                 "layer, i.e. the full forward)")
      ->check(CLI::IsMember({"cls", "mean"}))
      ->capture_default_str();
  cmd.add_option("--lora-r", o.lora_r,
                 "LoRA rank of the item tower (default: the workload's, 8); 0 = full fine-tuning, whose "
                 "~18 MB gradient makes the all-reduce a visible share of the step")
      ->check(CLI::Range(0, 1024));
  add_profile_option(cmd, o);
}

void add_pretrain_bench_options(CLI::App& cmd, BenchOptions& o) {
  cmd.add_option("--seed", o.seed, "Seed of the catalogue, batches and weights")->capture_default_str();
  cmd.add_option("--batch", o.batch, "Texts per rank and step (0 = the workload's 128)")
      ->check(CLI::Range(0, 1 << 20));
  add_step_options(cmd, o);
  add_profile_option(cmd, o);
}

void add_allreduce_bench_options(CLI::App& cmd, BenchOptions& o) {
  cmd.add_option("--max-mb", o.max_mb, "Largest buffer in MiB (from 4 KiB, x4 each)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
}

void add_export_bench_options(CLI::App& cmd, BenchOptions& o) {
  add_workload_options(cmd, o);
  cmd.add_option("--repeats", o.repeats, "Timed passes; the median is reported")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
}

void add_serve_bench_options(CLI::App& cmd, BenchOptions& o) {
  auto* exp =
      cmd.add_option("--export", o.export_path, "Export file (llmrec export)")->check(CLI::ExistingFile);
  auto* syn =
      cmd.add_option("--synthetic-items", o.synthetic_items,
                     "Instead of an export: the search alone over this many random keys (64 clusters)")
          ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 31));
  exp->excludes(syn);
  cmd.add_option("--dim", o.dim, "With --synthetic-items: the keys' dimension")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{65536}))
      ->capture_default_str();
  cmd.add_option("--ann", o.ann, "hnsw: also through the HNSW index (alternated), with recall@k")
      ->check(CLI::IsMember({"none", "hnsw"}))
      ->capture_default_str();
  cmd.add_option("--ann-metric", o.ann_metric, "HNSW graph: l2 (augmented keys) or ip")
      ->check(CLI::IsMember({"l2", "ip"}))
      ->capture_default_str();
  cmd.add_option("--ann-ef-sweep", o.ann_ef_sweep,
                 "With --synthetic-items: more efSearch values measured on the same graph (each in a pass of "
                 "its own)")
      ->delimiter(',');
  cmd.add_option("--ann-m", o.ann_m, "HNSW: M")->check(CLI::Range(4, 256))->capture_default_str();
  cmd.add_option("--ann-ef-construction", o.ann_ef_construction, "HNSW: efConstruction")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  cmd.add_option("--ann-ef-search", o.ann_ef_search, "HNSW: efSearch")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  cmd.add_option("--requests", o.requests, "Timed single requests")
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  cmd.add_option("--k", o.k, "Items per request")->check(CLI::Range(1, 1000))->capture_default_str();
  cmd.add_option("--cf-weight", o.cf_weight, "ItemKNN fusion weight (0 = model score only)")
      ->check(CLI::Range(0.0, 1000.0))
      ->capture_default_str();
  cmd.add_option("--seed", o.seed, "Seed of the user choice")->capture_default_str();
}

}  // namespace

void add_bench_distributed(CLI::App& bench) {
  struct Options {
    ConfigOptions config;
    BenchOptions bench;
  };
  auto add = [&bench](const std::string& name, const std::string& help,
                      void (*options)(CLI::App&, BenchOptions&),
                      int (*body)(AppContext&, const BenchOptions&)) {
    auto* cmd = bench.add_subcommand(name, help);
    auto o = std::make_shared<Options>();
    add_config_options(*cmd, o->config);
    options(*cmd, o->bench);
    cmd->callback([o, body] {
      int rc = app_run_distributed(o->config, [o, body](AppContext& ctx) { return body(ctx, o->bench); });
      if (rc != 0) throw CLI::RuntimeError(rc);
    });
  };
  add("train",
      "Training examples/s of the workload's model on synthetic batches (run under mpirun; "
      "--set run.threads=N for threads per rank)",
      add_train_bench_options, bench_train);
  add("pretrain",
      "Masked-LM pre-training sequences/s on workload mlm-tiny (../shared/peers/torch_mlm_bench.py; "
      "run under mpirun; --set run.threads=N for threads per rank)",
      add_pretrain_bench_options, bench_pretrain);
  add("allreduce", "Communicator all-reduce vs raw MPI_Allreduce, 4 KiB .. --max-mb (under mpirun -np 2+)",
      add_allreduce_bench_options, bench_allreduce);
  add("export", "Items encoded per second through the item tower, as llmrec export does",
      add_export_bench_options, bench_encode);
  add("serve",
      "Latency of top-k requests over an export, exact and (--ann hnsw) approximate, or of the search alone "
      "over --synthetic-items random keys (one process)",
      add_serve_bench_options, bench_serve);
}

}  // namespace llmrec
