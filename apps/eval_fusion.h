#pragma once
// Fusion of scorers as eval.fusion configures it; shared by `llmrec eval`
// and `llmrec train` (whose test table fuses the trained model).
#include <memory>
#include <string>
#include <vector>

#include "apps/app_context.h"
#include "data/dataset.h"
#include "models/recommender.h"
#include "trainer/export.h"
#include "trainer/scorer.h"

namespace llmrec {

/// The fused scorer of eval.fusion.weights over `scorers` (by name), with
/// weights tuned on the validation split when eval.fusion.tune is set
/// (the scorer named "model", when present, is the reference of weight 1);
/// nullptr when no fusion is configured. Collective.
std::shared_ptr<Scorer> build_eval_fusion(const std::vector<std::shared_ptr<Scorer>>& scorers,
                                          AppContext& ctx, const DatasetFile& file);

/// The line that heads a results table made with eval.swap_histories (a
/// diagnostic, not quality figures); "" otherwise. `eval` and `train` print it.
std::string eval_table_note(const EvalConfig& config);

/// Collective: the ranking an export carries, chosen as `llmrec train` and
/// `llmrec eval --checkpoint` choose their test rows: the model's cold
/// scoring calibrated on validation, ItemKNN with its tuned options, and
/// eval.fusion.weights restricted to the components serving computes
/// (model, itemknn, popularity, tfidf; the others are left out, logged and
/// recorded) fused as eval.fusion says (tuned on validation, the missing
/// policy included, with eval.fusion.tune).
ExportRanking export_ranking_choose(Recommender model, AppContext& ctx, const DatasetFile& file);

}  // namespace llmrec
