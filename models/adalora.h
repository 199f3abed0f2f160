#pragma once
/// AdaLoRA (Zhang et al. 2023) with HF PEFT's semantics: adaptive adapters
/// (models/lora_linear.h, `LoraAdapterOptions::adaptive`) start at rank r
/// and a rank allocator prunes their triplets (row i of A, E_i, column i of
/// B) to an average of target_r per module by importance:
///
///   ipt(p)  = |p * grad p|                        per entry, after each step
///   I(p)    = beta1 I(p) + (1 - beta1) ipt(p)      smoothed importance
///   U(p)    = beta2 U(p) + (1 - beta2) |ipt(p) - I(p)|
///   s(p)    = I(p) * U(p)
///   S_i     = s(E_i) + mean_j s(A_ij) + mean_j s(B_ji)   the triplet's score
///
/// The budget (triplets kept over all modules) is init_r x modules up to
/// step tinit, then falls cubically to target_r x modules at step
/// total_step - tfinal; every delta_t steps in between (and at every step
/// after) the E_i of the triplets whose score is at or below the
/// (init budget - budget)-th smallest are set to 0. Training adds
/// orth_reg_weight x mean over A and B of ||A A^T - I||_F, ||B^T B - I||_F.
///
/// Data-parallel training calls adalora_update_and_allocate after the
/// optimizer step with the all-reduced gradients still in place, so every
/// rank computes the same scores and masks the same triplets. The
/// allocator's state lives in each adapter's buffers, so checkpoints carry
/// it and a resumed run continues exactly.
///
///   const ModelAdaLoraConfig& s = config.lora.adaptive;  // total_step set
///   loss = loss + adalora_orthogonal_regulariser(*bert) * s.orth_reg_weight;
///   ... backward, all-reduce, optimizer.step() ...
///   adalora_update_and_allocate(*bert, s, step);  // step = optimizer steps done
///   optimizer.zero_grad();

#include <torch/nn/module.h>

#include <cstdint>
#include <string>
#include <vector>

#include "models/model_config.h"

namespace llmrec {

/// The budget at `step` (triplets kept over all modules) and whether the
/// allocator masks at that step: PEFT's RankAllocator.budget_schedule.
struct AdaLoraBudget {
  std::int64_t budget = 0;
  bool mask = false;
};
AdaLoraBudget adalora_budget(const ModelAdaLoraConfig& s, std::int64_t init_budget,
                             std::int64_t target_budget, std::int64_t step);

/// Throws ConfigError naming the keys (`model.lora.adaptive.*`) when the
/// schedule leaves no step to prune in (tinit + tfinal >= total_step) or a
/// value is out of range. `s.enabled` is not read: the schedule's own.
void adalora_check_schedule(const ModelAdaLoraConfig& s, std::int64_t init_r);

/// What one call did: the budget, and whether triplets were masked.
struct AdaLoraUpdate {
  std::int64_t budget = 0;
  bool masked = false;
};

/// After optimizer step `step` (1 = the first), with the step's gradients
/// in place: PEFT's AdaLoraModel.update_and_allocate over every adaptive
/// adapter of `model`. Throws llmrec::Error when `model` has none.
AdaLoraUpdate adalora_update_and_allocate(torch::nn::Module& model, const ModelAdaLoraConfig& s,
                                          std::int64_t step);

/// Sets E to 0 for every triplet the last allocation pruned (between two
/// allocations training may have moved it), so that the model computes what
/// its rank pattern says: what a saved adapter holds.
void adalora_apply_rank_pattern(torch::nn::Module& model);

/// mean over the adaptive adapters' A and B of ||A A^T - I||_F and
/// ||B^T B - I||_F (a scalar with autograd history); undefined when
/// `model` has no adaptive adapter.
torch::Tensor adalora_orthogonal_regulariser(const torch::nn::Module& model);

/// Each adaptive adapter's kept triplets (module name -> r flags), in
/// module order.
std::vector<std::pair<std::string, std::vector<bool>>> adalora_rank_pattern(const torch::nn::Module& model);
/// That pattern in words: "K of M rank-1 triplets kept (<module> k, ...)".
std::string adalora_rank_summary(const torch::nn::Module& model);

}  // namespace llmrec
