#include "distributed/queued_work.h"

#include "common/error.h"

namespace llmrec {

bool QueuedWork::completed() {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

void QueuedWork::wait(Seconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto ready = [&] { return done_; };
  if (timeout.count() > 0) {
    if (!cv_.wait_for(lock, timeout, ready)) {
      throw CommTimeout(
          fmt::format("{}: {} still running after waiting {:.3g} s", tag_, what_, timeout.count()));
    }
  } else {
    // The queue thread enforces the deadline itself, except inside a
    // blocking call (an MPI all-reduce after every rank has arrived): the
    // backstop catches a rank or link lost mid-transfer.
    while (!cv_.wait_for(lock, std::chrono::milliseconds(100), ready)) {
      if (started_ && Clock::now() > backstop_) {
        throw CommTimeout(fmt::format(
            "{}: collective {} did not complete within {:.3g} s (comm.timeout_s) although every rank had "
            "entered it: a rank died or the network failed during the transfer. The communicator is "
            "unusable; "
            "abort the job.",
            tag_, what_, timeout_s_));
      }
    }
  }
  if (error_) std::rethrow_exception(error_);
}

void QueuedWork::start(Clock::time_point backstop, double timeout_s) {
  std::lock_guard<std::mutex> lock(mutex_);
  started_ = true;
  backstop_ = backstop;
  timeout_s_ = timeout_s;
}

void QueuedWork::finish(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

}  // namespace llmrec
