#pragma once
/// Training examples and batches on each rank.
///
/// Sharding: users are split into W contiguous ranges with about the same
/// number of training examples (a pure function of the per-user counts, so
/// every rank computes the same plan without communicating); each rank reads
/// only its range from the dataset (hyperslabs).
///
/// Examples: for each training event j >= 1 of a user, (history = the up to
/// T events before j, target = event j, weight = its event weight).
///
/// Sequences (SamplerOptions::sequences, for the causal user tower): an
/// example is a window of a user's training sequence, and every event j >= 1
/// is a target in exactly one window, predicted from the window's events
/// before it. A user with n training events has one window if n - 1 <= T
/// (inputs = events 0..n-2, targets = events 1..n-1); a longer one gets
/// more, each ending T/2 events after the previous one, and a later window
/// keeps a loss only on the targets the earlier ones did not cover, so each
/// target sees at least T/2 events before it (or its whole prefix). The
/// same cut as the SASRec anchor (shared peers' quality_anchors.py).
///
/// Epochs: each rank shuffles its examples with a permutation seeded by
/// (seed, epoch, rank); every rank runs the same number of steps per epoch,
/// max over ranks of ceil(examples / batch), so a rank with fewer examples
/// gets a shorter (possibly empty) last batch: every example is seen exactly
/// once per epoch and no collective can hang on a short shard.
///
/// A Cursor (epoch, step) names a batch; batch(cursor) is a pure function,
/// so a checkpoint that saves the cursor resumes the same remaining batches.
/// BatchLoader prepares the next batches on a background thread.

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/time_features.h"
#include "data/dataset.h"

namespace llmrec {

/// Users [begin, end) of one rank and their training examples.
struct Shard {
  std::int64_t user_begin = 0;
  std::int64_t user_end = 0;
  std::int64_t examples = 0;
};

/// Training examples of a user with `train_events` training events.
inline std::int64_t examples_of_user(std::int64_t train_events) {
  return train_events > 1 ? train_events - 1 : 0;
}

/// Sequence windows (see above) of a user with `train_events` training
/// events and history T.
inline std::int64_t windows_of_user(std::int64_t train_events, std::int64_t history) {
  const std::int64_t targets = examples_of_user(train_events);
  if (targets == 0) return 0;
  const std::int64_t stride = std::max<std::int64_t>(1, history / 2);
  return 1 + (std::max<std::int64_t>(0, targets - history) + stride - 1) / stride;
}

/// Splits users into `world` contiguous ranges balancing the examples.
std::vector<Shard> shard_users(const std::vector<std::int64_t>& train_end, int world);

struct Cursor {
  std::int64_t epoch = 0;
  std::int64_t step = 0;
  bool operator==(const Cursor& o) const { return epoch == o.epoch && step == o.step; }
};

/// One batch of a rank. Item rows: the unique items of the batch (targets
/// and histories), sorted by item id; history and target index those rows.
///
/// With sequences, `history` holds one window per row (its input events),
/// and target, weight, example_user and example_event have one entry per
/// target event; `target_slot` says which history slot's user vector
/// predicts it (row * T + slot: the slot of the event just before it).
struct Batch {
  Cursor cursor;
  at::Tensor item_ids;       ///< [U] int64 dataset item ids
  at::Tensor item_tokens;    ///< [U, L] int64
  at::Tensor item_mask;      ///< [U, L] int64, 1 = token
  at::Tensor history;        ///< [B, T] int64 rows of item_ids, -1 = padding; right-aligned, most recent last
  at::Tensor target;         ///< [B] int64 row of the target item
  at::Tensor weight;         ///< [B] float32 event weight
  at::Tensor negatives;      ///< [N] int64 rows of the sampled negatives (empty without them)
  at::Tensor item_log_q;     ///< [U] float32 log of each item's share of training events (logQ correction)
  at::Tensor example_user;   ///< [B] int64 dataset user index (for checks and logs)
  at::Tensor example_event;  ///< [B] int64 dataset event index of the target
  at::Tensor target_slot;    ///< sequences only: [B] int64 flat index into history [rows, T]; else undefined
  /// With SamplerOptions::context features (F of them), else undefined:
  at::Tensor history_context;  ///< [rows, T, F] int64 each slot's event's values (0 in padding)
  at::Tensor query_context;    ///< [B] x F int64 each target event's values (gap: since the event before it)
  /// With SamplerOptions::profiles, else undefined: each row's user's
  /// profile text, [rows, L] int64 tokens and mask (zeros: no profile).
  at::Tensor profile_tokens;
  at::Tensor profile_mask;
  std::int64_t size() const { return target.defined() ? target.size(0) : 0; }
  /// Rows of `history`: users (sequence windows with target_slot).
  std::int64_t rows() const { return history.defined() ? history.size(0) : 0; }
};

struct SamplerOptions {
  std::int64_t batch_size = 64;  ///< users (examples) per rank and step
  std::int64_t history = 20;     ///< T
  std::uint64_t seed = 1234;
  std::int64_t sampled_negatives = 0;  ///< extra negatives per batch, uniform over the catalogue
  /// Examples are sequence windows with a target at every position
  /// (batch_size = windows per rank and step).
  bool sequences = false;
  /// Every item with training events is in every batch as a negative (a
  /// full softmax over the items that can be targets); sampled_negatives is
  /// then unused.
  bool all_items = false;
  /// Time and context features of every history slot and target
  /// (common/time_features.h); context.column_values are those of
  /// `context_columns` (the dataset's data.columns.context names).
  ContextSpec context;
  std::vector<std::string> context_columns;
  /// Each row carries its user's profile text (model.user.profile); the
  /// dataset must have been prepared with data.users.
  bool profiles = false;
};

/// Rows `rows` of a [n, text_len] token table (int32, `length` real tokens
/// per row) as int64 tensors tokens [R, text_len] and mask [R, text_len]
/// (1 = token); a row -1 is all padding (token 0, mask 0).
std::pair<at::Tensor, at::Tensor> text_tensors(const std::vector<std::int32_t>& tokens,
                                               const std::vector<std::int32_t>& length, int text_len,
                                               const std::vector<std::int64_t>& rows);

/// Rows [lo, hi) of a [n, full_len] token table (int32, `length` real
/// tokens per row), their first `keep` columns (a model reading fewer
/// tokens than the table holds): int64 tokens [hi - lo, keep] and mask.
std::pair<at::Tensor, at::Tensor> text_rows(const std::vector<std::int32_t>& tokens,
                                            const std::vector<std::int32_t>& length, std::int64_t full_len,
                                            std::int64_t lo, std::int64_t hi, std::int64_t keep);

class BatchSampler {
 public:
  /// Reads this rank's users from `dataset` and the whole item table.
  BatchSampler(const DatasetFile& dataset, int rank, int world, const SamplerOptions& options);

  std::int64_t steps_per_epoch() const { return steps_per_epoch_; }
  /// Examples of this rank: targets (one per training event after a user's first).
  std::int64_t local_examples() const { return shard_.examples; }
  /// Batch rows of this rank per epoch: examples, or windows with sequences.
  std::int64_t local_rows() const { return static_cast<std::int64_t>(example_user_.size()); }
  std::int64_t global_examples() const { return global_examples_; }
  const Shard& shard() const { return shard_; }
  const ItemTable& items() const { return items_; }

  /// The batch at `cursor` (deterministic; thread-safe).
  Batch batch(const Cursor& cursor) const;

 private:
  /// The epoch's order of this rank's examples; computed once per epoch
  /// (every batch of an epoch asks for it) and shared.
  std::shared_ptr<const std::vector<std::int64_t>> permutation(std::int64_t epoch) const;
  /// The batch's negatives (item ids): every item with training events
  /// (all_items), or sampled ones; none for an empty batch (`rows` 0).
  std::vector<std::int64_t> batch_negatives(const Cursor& cursor, std::int64_t rows) const;
  /// item_ids, item_tokens, item_mask and item_log_q of the batch's unique items.
  void fill_items(const std::vector<std::int64_t>& ids, Batch& out) const;
  /// profile_tokens and profile_mask of the rows perm[lo, hi): their users' profiles.
  void fill_profiles(const std::vector<std::int64_t>& perm, std::int64_t lo, std::int64_t hi,
                     Batch& out) const;
  /// The first event of example e's window: its history (or inputs) and
  /// target(s) are events [window_begin(e), example_event_[e]].
  std::int64_t window_begin(std::size_t e) const;
  /// The unique items of examples perm[lo, hi) (windows and targets) and of
  /// `negatives`, sorted by id.
  std::vector<std::int64_t> batch_item_ids(const std::vector<std::int64_t>& perm, std::int64_t lo,
                                           std::int64_t hi, const std::vector<std::int64_t>& negatives) const;
  /// Targets of examples perm[lo, hi): one each, or (sequences) every event
  /// of a window after its `covered` mark.
  std::int64_t count_targets(const std::vector<std::int64_t>& perm, std::int64_t lo, std::int64_t hi) const;
  /// Writes the time features of slice event `event` of local user `user`
  /// to out[0 .. F).
  void event_features(std::size_t user, std::int64_t event, std::int64_t* out) const;

  SamplerOptions options_;
  int rank_;
  Shard shard_;
  std::int64_t steps_per_epoch_ = 0;
  std::int64_t global_examples_ = 0;
  ItemTable items_;
  int text_len_ = 0;
  double log_q_total_ = 1;  ///< training events + items (add-one smoothing)
  UserSlice slice_;
  std::vector<std::int32_t> event_codes_;    ///< the slice's context codes, C per event
  std::vector<std::int32_t> example_user_;   ///< local user of each example (window)
  std::vector<std::int64_t> example_event_;  ///< slice-relative event index of the target (window's last)
  std::vector<std::int64_t>
      example_covered_;  ///< sequences: window targets up to this event index have a loss elsewhere
  mutable std::mutex perm_mutex_;
  mutable std::int64_t perm_epoch_ = -1;
  mutable std::shared_ptr<const std::vector<std::int64_t>> perm_;
};

/// Prefetches batches in order on a background thread.
class BatchLoader {
 public:
  /// pin_memory: batches in page-locked memory (for a GPU; needs a CUDA LibTorch).
  BatchLoader(std::shared_ptr<const BatchSampler> sampler, Cursor start, int depth = 2,
              bool pin_memory = false);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  /// The next batch (blocks until prepared); rethrows a preparation error.
  Batch next();
  /// The cursor of the batch next() returns next: save it in a checkpoint.
  Cursor cursor() const;

 private:
  void run();

  std::shared_ptr<const BatchSampler> sampler_;
  int depth_;
  bool pin_memory_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Batch> ready_;
  std::exception_ptr error_;
  Cursor produce_;  ///< next cursor the thread prepares
  Cursor consume_;  ///< next cursor next() returns
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace llmrec
