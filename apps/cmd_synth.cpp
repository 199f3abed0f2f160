// `llmrec synth`: write the synthetic shop (docs/data.md).
#include <chrono>
#include <cstdio>

#include "apps/commands.h"
#include "data/synth.h"

namespace llmrec {

void add_synth_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "synth",
      "Write a synthetic shop (catalogue.csv, interactions.csv, latent truth) for demos and benchmarks");
  struct Args {
    std::string out;
    std::string size = "demo";
    std::int64_t items = 0, users = 0;
    double history = 0, cold_share = -1, beta = -1;
    int min_history = 0;
    std::uint64_t seed = 1234;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("-o,--out", a->out, "Output directory")->required();
  cmd->add_option("--size", a->size,
                  "demo (2k items, 3k users), bench-tiny (20k, 50k), bench-small (100k, 200k)")
      ->check(CLI::IsMember({"demo", "bench-tiny", "bench-small"}))
      ->capture_default_str();
  cmd->add_option("--items", a->items, "Override the number of items")->check(CLI::Range(10, 100000000));
  cmd->add_option("--users", a->users, "Override the number of users")->check(CLI::Range(1, 1000000000));
  cmd->add_option("--history", a->history, "Override the mean events per user")
      ->check(CLI::Range(2.0, 10000.0));
  cmd->add_option("--min-history", a->min_history,
                  "Override the fewest events per user (default 5; e.g. 3 with --history 6 for a shop of "
                  "users with few events)")
      ->check(CLI::Range(2, 10000));
  cmd->add_option("--cold-share", a->cold_share, "Share of items released after the cut")
      ->check(CLI::Range(0.0, 0.89));
  cmd->add_option("--beta", a->beta,
                  "Weight of popularity in each choice, P(item | user) ~ popularity^beta x exp(match) "
                  "(default 1; 0 = the users' tastes alone)")
      ->check(CLI::Range(0.0, 4.0));
  cmd->add_option("--seed", a->seed, "Random seed")->capture_default_str();
  cmd->callback([a] {
    SynthOptions o = SynthOptions::preset(a->size);
    if (a->items > 0) o.items = a->items;
    if (a->users > 0) o.users = a->users;
    if (a->history > 0) o.mean_history = a->history;
    if (a->min_history > 0) o.min_history = a->min_history;
    if (a->cold_share >= 0) o.cold_share = a->cold_share;
    if (a->beta >= 0) o.beta = a->beta;
    o.seed = a->seed;
    auto t0 = std::chrono::steady_clock::now();
    SynthSummary s = write_synth_shop(o, a->out);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf(
        "synth: %lld items (%lld cold, released after the cut), %lld users, %lld events (%lld on cold items) "
        "in %.1f s -> %s/{catalogue,interactions,users,latent_items,latent_users}.csv, synth.json\n",
        static_cast<long long>(s.items), static_cast<long long>(s.cold_items),
        static_cast<long long>(s.users), static_cast<long long>(s.events),
        static_cast<long long>(s.cold_events), secs, a->out.c_str());
  });
}

}  // namespace llmrec
