#include "trainer/progress.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace llmrec {

std::string format_duration(double seconds) {
  if (seconds < 0 || !std::isfinite(seconds)) return "?";
  auto t = std::llround(seconds);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

double eta_seconds(double elapsed, std::int64_t start, std::int64_t done, std::int64_t planned) {
  return elapsed / static_cast<double>(std::max<std::int64_t>(done - start, 1)) *
         static_cast<double>(planned - done);
}

void progress_bar(std::int64_t done, std::int64_t planned, double loss, double rate, const char* unit,
                  double eta) {
  const int width = 30;
  const int filled = static_cast<int>(width * done / std::max<std::int64_t>(planned, 1));
  std::fprintf(stderr, "\r[%s%s] %lld/%lld loss %.4f %.0f %s/s ETA %s   ",
               std::string(static_cast<std::size_t>(filled), '#').c_str(),
               std::string(static_cast<std::size_t>(width - filled), '.').c_str(),
               static_cast<long long>(done), static_cast<long long>(planned), loss, rate, unit,
               format_duration(eta).c_str());
  if (done == planned) std::fprintf(stderr, "\n");
}

StepLogger::StepLogger(StepLogOptions options) : o_(std::move(options)) {}

void StepLogger::record(const StepRecord& r) {
  loss_sum_ += r.loss_sum;
  loss_count_ += r.loss_count;
  wait_s_ += r.comm_wait_s;
  step_s_ += r.step_s;
  items_ += r.items;
  total_items_ += r.items;
  ++steps_;
  const auto now = Clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double eta = eta_seconds(elapsed, o_.start_step, r.done, o_.planned_steps);
  if (r.done % o_.log_every == 0 || r.done == o_.planned_steps) {
    const double secs = std::chrono::duration<double>(now - window_start_).count();
    const double rate = static_cast<double>(items_) / std::max(secs, 1e-9);
    const double loss = loss_sum_ / std::max(loss_count_, 1.0);
    const double comm_share = wait_s_ / std::max(step_s_, 1e-9);
    nlohmann::json line = {{"step", r.done},
                           {"epoch", static_cast<double>(r.done) / static_cast<double>(o_.steps_per_epoch)},
                           {"loss", loss},
                           {"lr", r.lr},
                           {"grad_norm", r.grad_norm},
                           {o_.rate_key, rate},
                           {"comm_wait_s", wait_s_ / static_cast<double>(steps_)},
                           {"comm_share", comm_share},
                           {"elapsed_s", elapsed}};
    line.update(r.extra);
    if (o_.metrics != nullptr) *o_.metrics << line.dump() << "\n" << std::flush;
    if (!o_.bar) {
      spdlog::info("{} {}/{} loss {:.4f} lr {:.2e} {:.0f} {}/s comm {:.1f}% ETA {}", o_.name, r.done,
                   o_.planned_steps, loss, r.lr, rate, o_.unit, 100.0 * comm_share, format_duration(eta));
    }
    loss_sum_ = loss_count_ = wait_s_ = step_s_ = 0;
    items_ = steps_ = 0;
    window_start_ = now;
  }
  if (o_.bar) {
    progress_bar(r.done, o_.planned_steps, r.bar_loss,
                 static_cast<double>(total_items_) / std::max(elapsed, 1e-9), o_.unit.c_str(), eta);
  }
}

void StepLogger::break_line() const {
  if (o_.bar) std::fprintf(stderr, "\n");
}

double StepLogger::rate() const {
  const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  return static_cast<double>(total_items_) / std::max(elapsed, 1e-9);
}

ValidationVerdict judge_validation(double score, double best_score, int bad_evals, int patience) {
  ValidationVerdict v;
  if (score > best_score) {
    v.improved = true;
    return v;
  }
  if (patience <= 0) {  // no early stopping: nothing is counted
    v.bad_evals = bad_evals;
    return v;
  }
  v.bad_evals = bad_evals + 1;
  v.stop = v.bad_evals >= patience;
  return v;
}

StepEnd step_end(const StepSchedule& s, std::int64_t done) {
  StepEnd e;
  e.last = done == s.planned_steps;
  const bool epoch_end = done % s.steps_per_epoch == 0;
  e.validate =
      s.validates && (s.eval_every > 0 ? (done % s.eval_every == 0 || e.last) : (epoch_end || e.last));
  e.stop_after = s.stop_after > 0 && done - s.start_step >= s.stop_after && !e.last;
  const bool periodic = s.checkpoint_every > 0 && done % s.checkpoint_every == 0;
  e.checkpoint = periodic || e.last || e.stop_after;
  return e;
}

}  // namespace llmrec
