#pragma once
/// The fusion's arithmetic, shared by evaluation (trainer/fusion.h, which
/// documents the method) and serving: per-user z-standardisation of each
/// component's scores, the weighted sum, and the weights cold items take.
/// Pure functions on float rows; no LibTorch.

#include <cstdint>
#include <string>
#include <vector>

namespace llmrec {

/// How a component's score of an item it cannot score enters the fusion.
enum class FusionMissing {
  kScored,       ///< as the component scored it (its z of 0 events)
  kRenormalise,  ///< left out; the other components' sum scaled to the full weight
  kColdWeights,  ///< left out; the others with weights of their own (tuned)
};
const char* fusion_missing_name(FusionMissing m);
/// "scored" | "renormalise" | "cold_weights"; ConfigError naming `what` otherwise.
FusionMissing parse_fusion_missing(const std::string& name, const std::string& what);

/// Pure: the weights c_k that cold items take under `policy` (trainer/fusion.h).
/// `scores_cold[k]`: component k scores cold items. kColdWeights takes
/// `tuned` (one per component), with 0 forced where scores_cold[k] is false.
std::vector<double> fusion_cold_weights(FusionMissing policy, const std::vector<double>& weights,
                                        const std::vector<bool>& scores_cold,
                                        const std::vector<double>& tuned = {});

/// Pure: z-standardises one row of `n` scores into `z` (trainer/fusion.h).
/// Throws Error for NaN or +inf.
void fusion_standardise(const float* scores, std::int64_t n, float* z);

/// Pure: out[i] = sum_k w_k z[k][i] in double, components in order,
/// skipping weight 0 (even a -inf there); -inf when a weighted z is -inf.
/// w = `cold_weights` (one per component) for the items with cold[i] = 1,
/// `weights` for the others; `cold` nullptr: every item takes `weights`.
void fusion_combine(const std::vector<const float*>& z, const std::vector<double>& weights, std::int64_t n,
                    float* out, const std::uint8_t* cold = nullptr,
                    const std::vector<double>& cold_weights = {});

}  // namespace llmrec
