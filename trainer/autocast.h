#pragma once
/// Mixed precision for a scope: LibTorch's autocast on one device type, to
/// bfloat16 (`run.precision: bf16`). Matrix products and other autocast-listed
/// ops run in bf16; reductions and the softmax stay float32; weights,
/// gradients and optimizer state are untouched float32. Restores the
/// previous state (and drops autocast's weight-cast cache) on exit.

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace llmrec {

class AutocastGuard {
 public:
  /// enabled false: does nothing. device: CUDA (the use) or CPU (tests).
  AutocastGuard(c10::DeviceType device, bool enabled, c10::ScalarType dtype = c10::ScalarType::BFloat16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool active_ = false;
  bool was_enabled_ = false;
  c10::ScalarType was_dtype_ = c10::ScalarType::Undefined;
};

/// Whether autocast is on for `device` in this thread (for tests and logs).
bool autocast_enabled(c10::DeviceType device);

}  // namespace llmrec
