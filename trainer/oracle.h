#pragma once
/// The oracle of the synthetic shop: it ranks with the generator's own
/// choice model (data/synth.h), read from the latent truth `llmrec synth`
/// writes, so its figures are the ceiling any model can reach on that data.
///
/// The synth draws each event from P(item | user) ~ popularity^beta *
/// exp(match(user, item)) over the items the user has not chosen before,
/// leaving out cold items before the cut time. The oracle scores
///
///   s(u, i) = beta * ln(popularity_i) + match(u, i)      (-inf: cold item, query time < cut)
///
/// with the weights of synth.json; evaluation leaves the history out, so
/// the ranking is by the true probability of each candidate.
///
///   auto oracle = OracleScorer::open("runs/quickstart/shop", file);   // IoError if they do not match

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "trainer/scorer.h"

namespace llmrec {

/// latent_items.csv, latent_users.csv and synth.json of one synth output.
/// Names (leaves, departments, styles) are interned as small ints.
struct SynthTruth {
  struct Item {
    std::string id;
    int department = 0;
    int leaf = 0;
    int brand = 0;  ///< brand_id (names may repeat)
    int price_band = 0;
    int style = 0;
    double popularity = 0;
    bool cold = false;     ///< released after the cut
    std::string category;  ///< "department > leaf", as in the catalogue
  };
  struct User {
    std::string id;
    std::vector<int> leaves, departments, brands, styles;
    int price_band = 0;
  };
  std::string dir;
  double beta = 1;
  std::int64_t cut_time = 0;
  double w_leaf = 0, w_department = 0, w_brand = 0, w_style = 0;
  double w_price_band_distance = 0;  ///< times |band_i - band_u| (negative)
  std::vector<Item> items;
  std::vector<User> users;
  int num_leaves = 0, num_departments = 0, num_styles = 0, num_brands = 0;

  /// match(u, i) of data/synth.cpp.
  double match(const User& u, const Item& i) const;
};

/// Reads the three files of `dir`. IoError naming file:line and the column
/// for a bad row, the key for a bad synth.json, and the counts when the
/// files disagree with each other.
SynthTruth read_synth_truth(const std::string& dir);

class OracleScorer : public Scorer {
 public:
  /// Maps every dataset item and user (by raw id) to its latent row. IoError
  /// when the dataset was not prepared from this shop: an id missing from the
  /// latent files, or an item whose category differs from its latent
  /// department > leaf.
  OracleScorer(SynthTruth truth, const ItemTable& items, const std::vector<std::string>& user_ids,
               const std::string& dataset_path);
  /// Reads the truth of `dir` and the ids of `file`.
  static std::unique_ptr<OracleScorer> open(const std::string& dir, const DatasetFile& file);

  std::string name() const override { return "oracle"; }
  nlohmann::json params() const override;
  at::Tensor score(const ScoreRequest& request) override;

 private:
  SynthTruth truth_;
  std::vector<std::int32_t> item_row_;  ///< dataset item -> truth_.items row
  std::vector<std::int32_t> user_row_;  ///< dataset user -> truth_.users row
  std::vector<double> log_pop_;         ///< beta ln(popularity) per dataset item
};

}  // namespace llmrec
