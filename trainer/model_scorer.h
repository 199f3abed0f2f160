#pragma once
/// The trained recommender as a Scorer: every catalogue item's vector l and
/// key A l computed once (in fixed blocks of items spread over the ranks and
/// all-gathered, so the result does not depend on the world size), then per
/// request the user vectors from the last T history items and s = u . (A l).
/// Cold items (no training event) use their text vector alone.

#include <memory>

#include "data/dataset.h"
#include "distributed/communicator.h"
#include "models/recommender.h"
#include "trainer/scorer.h"

namespace llmrec {

class ModelScorer : public Scorer {
 public:
  /// Collective: every rank encodes its share of the items.
  ModelScorer(Recommender model, const ItemTable& items, int text_len, Communicator& comm,
              std::string name = "model");

  std::string name() const override { return name_; }
  nlohmann::json params() const override;
  at::Tensor score(const ScoreRequest& request) override;

  const at::Tensor& item_vectors() const { return item_vecs_; }  ///< [I, d] l
  const at::Tensor& item_keys() const { return item_keys_; }     ///< [I, d] A l

 private:
  Recommender model_;
  std::string name_;
  std::int64_t history_;
  at::Tensor item_vecs_;        ///< float32, CPU
  at::Tensor item_vecs_model_;  ///< the same on the model's device and dtype
  at::Tensor item_keys_;
};

/// Items per encoding block (fixed, so that results do not depend on W).
constexpr std::int64_t kEncodeBlock = 256;

/// Item vectors of every item (eval mode, no gradient), blocks of
/// kEncodeBlock items dealt round-robin to the ranks and all-gathered.
/// `item_ids`: the dataset item id of each row of `items` (whose ID vector
/// it gets; rows marked cold get none), for a table that is not the whole
/// catalogue in id order (`llmrec export --update`); empty = the row index.
at::Tensor encode_all_items(Recommender& model, const ItemTable& items, int text_len, Communicator& comm,
                            const std::vector<std::int64_t>& item_ids = {});

}  // namespace llmrec
