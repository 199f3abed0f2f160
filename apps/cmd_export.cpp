// `llmrec export`: the file serving reads (docs/export-format.md) from a
// trained model and its dataset, and catalogue updates of it without
// retraining.
//
//   llmrec export --checkpoint runs/x/model.h5 -c x.yaml [--output runs/x/export.h5]
//   llmrec export --update runs/x/export.h5 --catalogue new.csv --checkpoint runs/x/model.h5 [--output
//   new.h5]
//
// Under mpirun the item tower, the user tower and the ItemKNN rows are spread
// over the ranks (the file does not depend on their number); rank 0 writes
// the file and prints a summary.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>

#include "apps/app_context.h"
#include "apps/commands.h"
#include "apps/config_options.h"
#include "apps/eval_fusion.h"
#include "common/pseudonym.h"
#include "data/dataset.h"
#include "trainer/checkpoint.h"
#include "trainer/export.h"

namespace llmrec {
namespace {

/// The command line of `llmrec export`.
struct ExportCommand {
  ConfigOptions options;
  std::string checkpoint;    ///< --checkpoint: the trained model
  std::string output;        ///< --output: "" = <run.dir>/export.h5, or the --update file itself
  std::string update;        ///< --update: an export to add a catalogue to
  std::string catalogue;     ///< --catalogue: the new catalogue file (with --update)
  std::string pseudonymise;  ///< --pseudonymise: a key file; users/ids become keyed pseudonyms
};

std::string human_bytes(std::int64_t n) {
  const double b = static_cast<double>(n);
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.1f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.1f} MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt::format("{:.1f} KiB", b / 1024.0);
  return fmt::format("{} B", n);
}

/// The lines every export and update end with.
std::string summary_tail(const ExportSummary& s, int ranks) {
  const double rate = s.encode_seconds > 0 ? static_cast<double>(s.items_encoded) / s.encode_seconds : 0.0;
  std::string out =
      fmt::format("{} items ({} cold), {} users ({} history events), {} CF neighbours per item\n", s.items,
                  s.cold_items, s.users, s.events, s.neighbours);
  out += fmt::format(
      "encoded {} items in {:.2f} s ({:.0f} items/s) and {} users on {} rank(s); {:.2f} s in all\n",
      s.items_encoded, s.encode_seconds, rate, s.users_encoded, ranks, s.seconds);
  if (s.users_with_profile >= 0)
    out += fmt::format("user profiles: {} of {} users have one (users/profile_vectors)\n",
                       s.users_with_profile, s.users);
  out += fmt::format("-> {} ({})\n", s.path, human_bytes(s.file_bytes));
  return out;
}

int run_export(const ExportCommand& cmd, AppContext& ctx) {
  Recommender model = checkpoint_load_model(cmd.checkpoint);
  std::string out;
  if (!cmd.update.empty()) {
    CatalogueUpdateOptions options;
    options.on_error = ctx.config.data.on_error;
    options.show_errors = ctx.config.data.show_errors;
    ExportSummary s = add_catalogue_to_export(cmd.update, cmd.catalogue, model, cmd.checkpoint, cmd.output,
                                              *ctx.comm, options);
    spdlog::info("export: catalogue update {} of {} written to {}", s.catalogue_updates, cmd.update, s.path);
    out = fmt::format(
        "llmrec export --update: {}: {} item(s): {} new, {} changed, {} unchanged; {} bad row(s) "
        "skipped\n",
        cmd.catalogue, s.catalogue_rows, s.items_added, s.items_replaced, s.items_unchanged, s.rows_skipped);
    out += s.skipped_report;
    out += fmt::format("catalogue update {} of the export of {}\n", s.catalogue_updates, cmd.checkpoint);
    out += summary_tail(s, ctx.comm->size());
  } else {
    DatasetFile file(ctx.config.data.dataset);
    const std::string output =
        cmd.output.empty() ? (std::filesystem::path(ctx.run_dir) / "export.h5").string() : cmd.output;
    const ExportRanking ranking = export_ranking_choose(model, ctx, file);
    const std::string key = cmd.pseudonymise.empty() ? std::string() : read_pseudonym_key(cmd.pseudonymise);
    ExportSummary s = write_export(output, model, cmd.checkpoint, file, ConfigWriter::write(ctx.config),
                                   ranking, *ctx.comm, key);
    spdlog::info("export: {} items, {} users written to {} in {:.2f} s", s.items, s.users, s.path, s.seconds);
    out = fmt::format("llmrec export: {} with dataset {}\n", cmd.checkpoint, file.path());
    out += summary_tail(s, ctx.comm->size());
    if (!key.empty()) {
      out += fmt::format(
          "user ids pseudonymised with the key of {} (HMAC-SHA256; the key is not in the export: "
          "serve and recommend take --pseudonym-key-file {})\n",
          cmd.pseudonymise, cmd.pseudonymise);
    }
  }
  if (ctx.comm->rank() == 0) {
    std::fputs(out.c_str(), stdout);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "export",
      "Write the file serving reads (item, user and CF data, the user tower; docs/export-format.md) from a "
      "trained model, or add a catalogue file to an export without retraining (run it under mpirun)");
  auto args = std::make_shared<ExportCommand>();
  add_config_options(*cmd, args->options);
  cmd->add_option("--checkpoint", args->checkpoint, "The trained model (model.h5 written by `llmrec train`)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option(
      "-o,--output", args->output,
      "The export to write; default <run.dir>/export.h5, with --update the updated export itself");
  auto* update = cmd->add_option("--update", args->update,
                                 "An export to update with --catalogue: new items are added, changed ones "
                                 "re-encoded (data.on_error applies to the new file's rows)")
                     ->check(CLI::ExistingFile);
  auto* catalogue = cmd->add_option("--catalogue", args->catalogue,
                                    "The new catalogue file (CSV/TSV/JSONL with the export's "
                                    "data.catalogue_columns)")
                        ->check(CLI::ExistingFile);
  auto* pseudo =
      cmd->add_option("--pseudonymise", args->pseudonymise,
                      "A key file (first line, at least 16 bytes; keep it out of the export's way): "
                      "user ids are stored as keyed pseudonyms, HMAC-SHA256 of the id, never raw")
          ->check(CLI::ExistingFile);
  pseudo->excludes(update);
  update->needs(catalogue);
  catalogue->needs(update);
  cmd->callback([args] {
    int rc = app_run_distributed(args->options, [args](AppContext& ctx) { return run_export(*args, ctx); });
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace llmrec
