#pragma once
/// The Work of a collective that a rank's queue thread runs (the MPI and
/// in-process backends): the queue thread calls start() and finish(); the
/// caller waits. Internal to distributed/.

#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>

#include "distributed/communicator.h"

namespace llmrec {

class QueuedWork : public Work {
 public:
  using Clock = std::chrono::steady_clock;
  /// what: "all_reduce(sum) Float x 4 #2"; tag: "rank 0/2 (host)".
  QueuedWork(std::string what, std::string tag) : what_(std::move(what)), tag_(std::move(tag)) {}

  bool completed() override;
  /// timeout > 0: a soft wait (CommTimeout "still running", the collective
  /// goes on). Otherwise until finish(), or, once start() gave a backstop,
  /// until that backstop (a blocking call that every rank entered but that
  /// never returns: a rank or link lost mid-transfer).
  void wait(Seconds timeout = Seconds{0}) override;

  /// The queue thread started the collective; a waiter gives up at `backstop`.
  void start(Clock::time_point backstop, double timeout_s);
  /// The collective ended, with `error` or without (null).
  void finish(std::exception_ptr error);
  const std::string& what() const { return what_; }

 private:
  std::string what_;
  std::string tag_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  bool started_ = false;
  Clock::time_point backstop_;
  double timeout_s_ = 0;
  std::exception_ptr error_;
};

}  // namespace llmrec
