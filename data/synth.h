#pragma once
/// The synthetic shop (`llmrec synth`, docs/data.md).
///
/// Items have a category (10 departments x 5 leaves), a brand, a price band,
/// a style, a colour, tags, and a title and description whose words follow
/// those attributes. Popularity is Zipf-like. Each user has latent tastes
/// (1-3 leaf categories, 1-2 brands, a price band, 1-2 styles) and a
/// time-ordered history drawn from
///
///   P(item | user) ~ popularity^beta * exp(match(user, item))
///   match = 2.5 [leaf liked] + 0.8 [department liked] + 1.2 [brand liked]
///         + 0.8 [style liked] - 0.5 |price band - preferred band|
///
/// without repeats. A share of the items (default 10%) is released only
/// after the cut time: every user's events before the cut avoid them, and
/// each user's last event falls after the cut, so cold items appear only as
/// last (test) events and only their text can recommend them.
///
/// Output, in raw export shape: catalogue.csv, interactions.csv, users.csv
/// (profile text for 85% of the users: an age band and a region that carry
/// no taste, and stated interests drawn from the latent tastes with noise;
/// data.users / model.user.profile), and the latent truth for the oracle:
/// latent_items.csv, latent_users.csv, synth.json (parameters and counts).
/// Deterministic for a seed.

#include <cstdint>
#include <string>

namespace llmrec {

struct SynthOptions {
  std::int64_t items = 2000;
  std::int64_t users = 3000;  ///< 0 = the catalogue only (no interactions file)
  double mean_history = 20;   ///< mean events per user
  int min_history = 5;        ///< every user has at least this many
  double cold_share = 0.10;   ///< items released after the cut
  double zipf = 1.1;          ///< popularity of the item at rank k ~ k^-zipf
  double beta = 1.0;          ///< weight of popularity in the choice
  std::uint64_t seed = 1234;
  std::int64_t start_time = 1700000000;  ///< unix seconds of the first event
  int days = 180;                        ///< span of the log
  double after_cut = 0.1;                ///< share of the span after the cut

  /// Presets: "demo" (2k items, 3k users), "bench-tiny" (20k, 50k),
  /// "bench-small" (100k, 200k); mean history 20. Error for other names.
  static SynthOptions preset(const std::string& name);
};

struct SynthSummary {
  std::int64_t items = 0;
  std::int64_t cold_items = 0;
  std::int64_t users = 0;
  std::int64_t events = 0;
  std::int64_t cold_events = 0;  ///< events on cold items (all after the cut)
  std::int64_t cut_time = 0;     ///< unix seconds
};

/// Writes the shop to `out_dir` (created if missing). With users = 0 only
/// catalogue.csv and latent_items.csv are written.
SynthSummary write_synth_shop(const SynthOptions& options, const std::string& out_dir);

}  // namespace llmrec
