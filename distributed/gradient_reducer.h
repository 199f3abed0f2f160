#pragma once
/// Bucketed, overlapped all-reduce of trainable gradients (the data-parallel
/// half of the distributed contract, docs/architecture.md).
///
/// Protocol, per optimizer step:
///  1. Construction: buckets of about `bucket_mb` are assigned over the
///     parameters in reverse order (the order backward produces gradients),
///     one dtype per bucket. Every rank checks, with two collectives, that
///     all ranks hold the same parameter names, shapes and dtypes; a
///     mismatch throws CommError saying what differs on which rank.
///  2. Backward: a hook on each parameter copies its gradient (plus any
///     gradient accumulated by earlier micro-steps) into its bucket's flat
///     buffer; when a bucket is full it is all-reduced asynchronously, while
///     backward goes on. Buckets are launched strictly in bucket order, so
///     every rank issues the same collectives in the same order.
///  3. finish(): fills the buckets of parameters that got no gradient this
///     step with their accumulated gradient or zeros (the same on every
///     rank), launches what is left, waits for everything and writes the
///     reduced values back into each parameter's .grad.
///  Micro-steps without communication: wrap their backward in no_sync();
///  gradients then accumulate in .grad as usual.
///  One rank has nothing to reduce: no buffers, no collectives (stats say
///  0 buckets, 0 bytes); gradients stay in .grad as backward leaves them,
///  and finish() gives a parameter without one zeros, as above.
///
///   GradientReducer reducer(comm, named_trainable_params, {25.0, ReduceOp::kAvg});
///   { auto guard = reducer.no_sync(); loss1.backward(); }   // accumulate only
///   loss2.backward();                                        // buckets fly
///   reducer.finish();                                        // all reduced
///   optimizer.step();

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "distributed/communicator.h"

namespace llmrec {

/// Default bucket size, as PyTorch DDP's.
constexpr double kDefaultBucketMb = 25.0;

struct ReducerOptions {
  double bucket_mb = kDefaultBucketMb;
  ReduceOp op = ReduceOp::kAvg;  ///< Avg: mean of the ranks' gradients; Sum: their sum
};

/// One bucket: parameters reduced together in one flat buffer.
struct Bucket {
  std::vector<std::size_t> params;    ///< indices into the reducer's parameter list
  std::vector<std::int64_t> offsets;  ///< element offset of each of them in the flat buffer
  std::int64_t numel = 0;             ///< elements in the flat buffer
  at::ScalarType dtype = at::kFloat;
};

/// Assigns parameters to buckets of at most `bucket_bytes` (a parameter
/// larger than that gets a bucket of its own), walking the parameters in
/// reverse order and never mixing dtypes. Pure, for tests.
std::vector<Bucket> compute_bucket_assignment(const std::vector<at::Tensor>& params,
                                              std::int64_t bucket_bytes);

/// Communication figures of the last finished step.
struct ReducerStats {
  std::int64_t bytes = 0;                 ///< bytes all-reduced
  std::int64_t buckets = 0;               ///< collectives launched
  std::int64_t launched_in_backward = 0;  ///< of those, launched before finish()
  double wait_s = 0;                      ///< time finish() spent waiting for collectives
};

class GradientReducer {
 public:
  GradientReducer(Communicator& comm, const std::vector<std::pair<std::string, at::Tensor>>& params,
                  const ReducerOptions& options = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// While alive, backward passes accumulate locally without communication.
  class NoSync {
   public:
    explicit NoSync(GradientReducer& r) : r_(r) { r_.sync_ = false; }
    ~NoSync() { r_.sync_ = true; }
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;

   private:
    GradientReducer& r_;
  };
  NoSync no_sync() { return NoSync(*this); }

  /// Completes the step's reduction (see the protocol above). A timed-out
  /// collective throws CommTimeout naming the bucket and its parameters.
  void finish();

  const std::vector<Bucket>& buckets() const { return buckets_; }
  const ReducerStats& stats() const { return stats_; }
  /// Bytes all-reduced per step on more than one rank (the gradients' size).
  std::int64_t bytes_per_step() const;

 private:
  void mark_ready(std::size_t param, const at::Tensor& grad);
  void launch_ready_buckets();
  void launch(std::size_t bucket);
  void verify_same_parameters() const;
  std::string bucket_name(std::size_t bucket) const;

  Communicator& comm_;
  ReducerOptions options_;
  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<std::size_t, std::size_t>> where_;  ///< param -> (bucket, position)
  std::vector<at::Tensor> flat_;                            ///< one flat buffer per bucket
  std::vector<std::size_t> pending_;                        ///< params not yet ready, per bucket
  std::vector<char> ready_;                                 ///< per param, this step
  std::vector<std::shared_ptr<Work>> work_;
  std::size_t next_launch_ = 0;  ///< buckets launch in order
  bool sync_ = true;
  std::vector<unsigned> hooks_;
  std::mutex mutex_;
  ReducerStats stats_;
  ReducerStats current_;
};

}  // namespace llmrec
