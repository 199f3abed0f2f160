#include "apps/app_context.h"

#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>

#include <filesystem>
#include <fstream>

#include "common/malloc_policy.h"
#include "common/openmp_policy.h"
#include "common/version.h"
#include "distributed/communicator.h"

namespace llmrec {

Config app_load_config(const ConfigOptions& options) {
  Config config;
  load_config(options.config_path, options.overrides, config);
  return config;
}

namespace {

void prepare_run_dir(AppContext& ctx) {
  namespace fs = std::filesystem;
  ctx.run_dir = ctx.config.run.dir;
  if (ctx.comm->rank() == 0) {
    std::error_code ec;
    fs::create_directories(fs::path(ctx.run_dir) / "logs", ec);
    if (ec) throw IoError(fmt::format("cannot create run directory {}: {}", ctx.run_dir, ec.message()));
    std::string path = (fs::path(ctx.run_dir) / "config.yaml").string();
    std::ofstream out(path);
    out << "# resolved configuration, written by llmrec " << version_string() << " ("
        << version_git_revision() << ")\n"
        << ConfigWriter::write(ctx.config);
    if (!out) throw IoError(fmt::format("cannot write {}", path));
  }
  ctx.comm->barrier();
  logging_add_file((fs::path(ctx.run_dir) / "logs" / fmt::format("rank-{}.log", ctx.comm->rank())).string());
}

}  // namespace

c10::DeviceType app_device_type(const RunConfig& run) {
  const bool gpu = torch::cuda::is_available();
  if (run.device == "cpu" || (run.device == "auto" && !gpu)) return c10::DeviceType::CPU;
  if (!gpu) {
    throw ConfigError(
        "run.device is cuda but LibTorch sees no GPU: this build's LibTorch is CPU-only, or no GPU is "
        "visible (CUDA_VISIBLE_DEVICES, driver); see docs/building.md for a CUDA build");
  }
  return c10::DeviceType::CUDA;
}

int app_run_distributed(const ConfigOptions& options, const std::function<int(AppContext&)>& body) {
  AppContext ctx;
  ctx.config = app_load_config(options);
  const std::string malloc_policy = set_malloc_policy(ctx.config.run.malloc_policy);
  if (ctx.config.run.threads > 0) at::set_num_threads(ctx.config.run.threads);
  const c10::DeviceType device = app_device_type(ctx.config.run);
  // Before MPI starts: this may start the process again (common/openmp_policy.h).
  const std::string wait_policy = openmp_wait_policy(at::get_num_threads(), device == c10::DeviceType::CPU);
  ctx.comm = create_communicator(ctx.config.comm, device);
  if (device == c10::DeviceType::CUDA) {  // the GPU the NCCL backend chose by the same rule
    const int gpus = static_cast<int>(torch::cuda::device_count());
    ctx.device = c10::Device(
        device, static_cast<c10::DeviceIndex>(device_for_local_rank(ctx.comm->local_rank(), gpus)));
  }
  init_logging(ctx.config.log, ctx.comm->rank(), ctx.comm->size());
  try {
    prepare_run_dir(ctx);
    spdlog::info("llmrec {} ({}) on {} rank(s), {}, device {}{}", version_string(), version_git_revision(),
                 ctx.comm->size(), ctx.comm->describe(), ctx.device.str(),
                 ctx.config.run.precision == "bf16" ? ", bf16 autocast" : "");
    spdlog::info("malloc: {}; OpenMP: {} thread(s), wait policy {}", malloc_policy, at::get_num_threads(),
                 wait_policy);
    spdlog::debug("resolved configuration:\n{}", ConfigWriter::write(ctx.config));
    return body(ctx);
  } catch (const CommTimeout& e) {
    spdlog::critical("{}", e.what());
    spdlog::critical("aborting all ranks (exit code {})", kExitCommTimeout);
    ctx.comm->abort(kExitCommTimeout);
    return kExitCommTimeout;  // not reached: abort() ends the process
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    if (ctx.comm->size() > 1) {
      spdlog::critical("aborting all ranks so that none is left waiting (exit code {})", kExitError);
      ctx.comm->abort(kExitError);
    }
    return kExitError;
  }
}

}  // namespace llmrec
