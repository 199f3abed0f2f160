// `llmrec check`: is this installation and this set of ranks fit to train?
//
// Every rank measures its BLAS; then the collectives are run with known
// inputs and their results compared exactly, and the all-reduce bus
// bandwidth is measured at a few sizes. Rank 0 prints a table and writes
// <run.dir>/check.json. Exit code 1 if any collective gave a wrong result.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/app_context.h"
#include "apps/commands.h"
#include "apps/config_options.h"
#include "common/version.h"

namespace llmrec {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// fp32 matrix product speed: a reference BLAS shows at once (~1.5 vs ~60).
double matmul_gflops(int n, int reps) {
  at::Tensor a = at::randn({n, n});
  at::Tensor b = at::randn({n, n});
  at::mm(a, b);  // warm-up
  auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) at::mm(a, b);
  return 2.0 * n * n * n * reps / seconds_since(t0) / 1e9;
}

struct CheckResult {
  std::string name;
  bool ok;
  std::string detail;
};

/// Runs each collective on inputs whose exact result is known.
std::vector<CheckResult> check_collectives(Communicator& comm) {
  std::vector<CheckResult> results;
  const int r = comm.rank();
  const int w = comm.size();
  auto record = [&](std::string name, const at::Tensor& got, const at::Tensor& want) {
    bool ok = got.sizes() == want.sizes() && at::equal(got, want);
    results.push_back(
        {std::move(name), ok, ok ? std::string() : fmt::format("got {}", got.sum().item<double>())});
  };
  const std::int64_t n = 1000;
  for (auto dtype : {at::kFloat, at::kDouble, at::kInt, at::kLong}) {
    std::string type = c10::toString(dtype);
    // Element i on rank r is r + i (exact in every dtype used here).
    at::Tensor idx = at::arange(n, at::TensorOptions().dtype(dtype));
    at::Tensor t = idx + r;
    comm.all_reduce(t, {ReduceOp::kSum});
    record("all_reduce sum " + type, t, idx * w + (w * (w - 1) / 2));
    t = idx + r;
    comm.all_reduce(t, {ReduceOp::kMax});
    record("all_reduce max " + type, t, idx + (w - 1));
    t = idx + r;
    comm.all_reduce(t, {ReduceOp::kMin});
    record("all_reduce min " + type, t, idx.clone());
    t = (idx + r) * 2 * w;  // avg = 2*w*i + (w-1)*w... exact in integers too
    comm.all_reduce(t, {ReduceOp::kAvg});
    record("all_reduce avg " + type, t, idx * 2 * w + (w - 1) * w);
  }
  // Non-contiguous: every other column of a matrix.
  at::Tensor m = at::full({8, 6}, static_cast<double>(r + 1), at::kDouble);
  at::Tensor cols = m.slice(1, 0, 6, 2);
  comm.all_reduce(cols, {ReduceOp::kSum});
  at::Tensor want_m = at::full({8, 6}, static_cast<double>(r + 1), at::kDouble);
  want_m.slice(1, 0, 6, 2).fill_(static_cast<double>(w * (w + 1)) / 2);
  record("all_reduce non-contiguous", m, want_m);

  const int root = w - 1;
  at::Tensor b = at::full({257}, static_cast<std::int64_t>(r * 10 + 7), at::kLong);
  comm.broadcast(b, {root});
  record("broadcast from last rank", b, at::full({257}, static_cast<std::int64_t>(root * 10 + 7), at::kLong));

  at::Tensor g = at::full({3, 2}, static_cast<float>(r), at::kFloat);
  at::Tensor gathered = comm.all_gather(g);
  record("all_gather", gathered, at::arange(w, at::kFloat).view({w, 1, 1}).expand({w, 3, 2}).contiguous());

  // Rank k contributes k rows (rank 0 none) of value k.
  at::Tensor v = at::full({r, 4}, static_cast<float>(r), at::kFloat);
  auto parts = comm.all_gather_v(v);
  bool v_ok = static_cast<int>(parts.size()) == w;
  for (int k = 0; v_ok && k < w; ++k)
    v_ok = at::equal(parts[static_cast<std::size_t>(k)], at::full({k, 4}, float(k)));
  results.push_back({"all_gather_v (variable rows)", v_ok, v_ok ? "" : "wrong rows"});

  comm.barrier();
  results.push_back({"barrier", true, ""});
  return results;
}

/// Bus bandwidth (GB/s) of an all-reduce of `bytes`, median of `reps`.
/// busbw = 2(W-1)/W * bytes / time, the nccl-tests convention.
double allreduce_busbw(Communicator& comm, std::int64_t bytes, int reps, double& median_s) {
  at::Tensor t = at::ones({bytes / 4}, at::kFloat);
  comm.all_reduce(t);  // warm-up
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    comm.barrier();
    auto t0 = Clock::now();
    comm.all_reduce(t);
    times.push_back(seconds_since(t0));
  }
  // The slowest rank decides the collective's time.
  at::Tensor tt = at::tensor(times, at::kDouble);
  comm.all_reduce(tt, {ReduceOp::kMax});
  std::vector<double> slowest(tt.data_ptr<double>(), tt.data_ptr<double>() + reps);
  std::sort(slowest.begin(), slowest.end());
  median_s = slowest[slowest.size() / 2];
  const int w = comm.size();
  return w == 1 ? 0.0 : 2.0 * (w - 1) / w * static_cast<double>(bytes) / median_s / 1e9;
}

int run_check(AppContext& ctx) {
  Communicator& comm = *ctx.comm;
  nlohmann::json report;
  report["llmrec"] = version_string();
  report["git"] = version_git_revision();
  report["world_size"] = comm.size();
  report["backend"] = comm.describe();

  // Per-rank facts, gathered to every rank.
  const double gflops = matmul_gflops(512, 10);
  at::Tensor facts = at::tensor(
      {gflops, double(comm.local_rank()), double(comm.local_size()), double(at::get_num_threads())},
      at::kDouble);
  at::Tensor all_facts = comm.all_gather(facts);
  std::string host = comm.host();
  at::Tensor host_bytes =
      at::from_blob(host.data(), {static_cast<std::int64_t>(host.size())}, at::kByte).clone();
  auto hosts = comm.all_gather_v(host_bytes);
  if (blas_is_reference()) spdlog::warn("BLAS: {}", blas_describe());

  auto checks = check_collectives(comm);
  int failed = 0;
  for (const auto& c : checks) failed += c.ok ? 0 : 1;
  // Agree on the outcome, so that every rank exits with the same code.
  at::Tensor failed_t = at::tensor({failed}, at::kInt);
  comm.all_reduce(failed_t, {ReduceOp::kMax});
  const int worst_failed = failed_t.item<int>();

  std::vector<std::pair<std::int64_t, double>> bw;
  for (std::int64_t bytes : {std::int64_t{4} << 10, std::int64_t{1} << 20, std::int64_t{16} << 20}) {
    double median_s = 0;
    double gbps = allreduce_busbw(comm, bytes, 10, median_s);
    bw.emplace_back(bytes, median_s);
    report["allreduce"].push_back({{"bytes", bytes}, {"median_s", median_s}, {"busbw_gbps", gbps}});
  }

  if (comm.rank() != 0) return worst_failed ? kExitError : 0;

  std::string out = fmt::format("llmrec check: {} rank(s), {}\n", comm.size(), comm.describe());
  out += fmt::format("BLAS {}\n\n  rank  host                  local  threads  matmul GFLOP/s\n",
                     blas_describe());
  for (int k = 0; k < comm.size(); ++k) {
    auto f = all_facts[k];
    std::string h(reinterpret_cast<const char*>(hosts[k].data_ptr<std::uint8_t>()), hosts[k].numel());
    out += fmt::format("  {:>4}  {:<20}  {:>2}/{:<2}  {:>7}  {:>14.1f}\n", k, h, int(f[1].item<double>()),
                       int(f[2].item<double>()), int(f[3].item<double>()), f[0].item<double>());
    report["ranks"].push_back({{"rank", k},
                               {"host", h},
                               {"local_rank", int(f[1].item<double>())},
                               {"threads", int(f[3].item<double>())},
                               {"matmul512_gflops", f[0].item<double>()}});
  }
  out += "\n  collective                         result\n";
  for (const auto& c : checks) {
    out += fmt::format("  {:<34} {}\n", c.name, c.ok ? "ok" : "WRONG " + c.detail);
    report["collectives"].push_back({{"name", c.name}, {"ok", c.ok}});
  }
  if (comm.size() > 1) {
    out += "\n  all-reduce size   median time   bus bandwidth\n";
    for (const auto& [bytes, s] : bw) {
      double gbps = 2.0 * (comm.size() - 1) / comm.size() * double(bytes) / s / 1e9;
      out += fmt::format(
          "  {:>13}   {:>8.1f} us   {:>8.2f} GB/s\n",
          bytes >= (1 << 20) ? fmt::format("{} MiB", bytes >> 20) : fmt::format("{} KiB", bytes >> 10),
          s * 1e6, gbps);
    }
  }
  out += worst_failed ? fmt::format("\nFAILED: {} collective check(s) gave wrong results\n", worst_failed)
                      : "\nall collective checks passed\n";
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);

  report["ok"] = worst_failed == 0;
  std::string path = ctx.run_dir + "/check.json";
  std::ofstream(path) << report.dump(2) << "\n";
  spdlog::info("wrote {}", path);
  return worst_failed ? kExitError : 0;
}

}  // namespace

void add_check_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "check",
      "Check this installation and the ranks of this job: BLAS speed, exact collective results, "
      "all-reduce bandwidth (run it under mpirun)");
  auto options = std::make_shared<ConfigOptions>();
  add_config_options(*cmd, *options);
  cmd->callback([options] {
    int rc = app_run_distributed(*options, run_check);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace llmrec
