#include "distributed/mpi_communicator.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "common/logging.h"
#include "distributed/collective_signature.h"
#include "distributed/mpi_check.h"
#include "distributed/queued_work.h"
#include "distributed/unique_handle.h"

namespace llmrec {

namespace detail {
void mpi_failed(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) len = 0;
  throw CommError(fmt::format("{} failed: {} (MPI error {}, {}:{})", call,
                              std::string(text, static_cast<std::size_t>(len)), code, file, line));
}
}  // namespace detail

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  if (MPI_Get_library_version(text, &len) != MPI_SUCCESS) return "unknown MPI";
  std::string s(text, static_cast<std::size_t>(len));
  auto comma = s.find(',');
  return s.substr(0, comma);
}

namespace {

using Clock = std::chrono::steady_clock;

// MPI counts are ints: larger reductions go in chunks of this many elements.
constexpr std::int64_t kMaxChunk = std::int64_t{1} << 30;
// How long a destroyed communicator waits at least for a timed-out
// collective to complete before giving up on MPI_Finalize.
constexpr double kMinDrainSeconds = 10.0;

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "single";
    case MPI_THREAD_FUNNELED: return "funneled";
    case MPI_THREAD_SERIALIZED: return "serialized";
    case MPI_THREAD_MULTIPLE: return "multiple";
    default: return "unknown";
  }
}

/// Process-wide MPI initialisation, shared by the communicators alive.
class MpiRuntime {
 public:
  static std::shared_ptr<MpiRuntime> acquire() {
    static std::mutex mutex;
    static std::weak_ptr<MpiRuntime> current;
    std::lock_guard<std::mutex> lock(mutex);
    if (auto rt = current.lock()) return rt;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) {
      throw CommError(
          "MPI was already finalised in this process: create one communicator per process "
          "and keep it for the whole run");
    }
    std::shared_ptr<MpiRuntime> rt(new MpiRuntime());
    current = rt;
    return rt;
  }

  ~MpiRuntime() {
    if (owns_ && finalize_) MPI_Finalize();
  }

  int thread_level() const { return provided_; }
  /// Called when a collective is stuck: MPI_Finalize would block forever.
  void skip_finalize() { finalize_ = false; }

 private:
  MpiRuntime() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided_) != MPI_SUCCESS) {
        throw CommError("MPI_Init_thread failed: is this binary started by a matching mpirun/srun?");
      }
      owns_ = true;
    } else {
      MPI_Query_thread(&provided_);
    }
    if (provided_ < MPI_THREAD_SERIALIZED) {
      throw CommError(
          fmt::format("the MPI library ({}) provides thread level '{}', llmrec needs at least 'serialized' "
                      "(collectives run on a communication thread): use an MPI built with thread support",
                      mpi_library_version(), thread_level_name(provided_)));
    }
  }

  int provided_ = MPI_THREAD_SINGLE;
  bool owns_ = false;
  bool finalize_ = true;
};

/// Thrown when every rank detects the same problem at the same point of a
/// collective (e.g. mismatched sizes): the ranks stay in step, so the
/// communicator remains usable.
class AgreedError : public CommError {
 public:
  using CommError::CommError;
};

MPI_Datatype reduce_type(at::ScalarType t, const std::string& tag) {
  check_cpu_reducible(t, tag);
  switch (t) {
    case at::kDouble: return MPI_DOUBLE;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    default: return MPI_FLOAT;
  }
}

MPI_Op reduce_mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: return MPI_SUM;
    case ReduceOp::kMin: return MPI_MIN;
    case ReduceOp::kMax: return MPI_MAX;
  }
  return MPI_SUM;
}

void check_cpu(const at::Tensor& t, const char* op, const std::string& tag) {
  check_cpu_tensor(t, op, tag, "the MPI backend");
}

int int_count(std::int64_t n, const char* what, const std::string& tag) {
  if (n > INT_MAX) {
    throw AgreedError(
        fmt::format("{}: {} of {} bytes exceeds MPI's 2 GiB count limit; split it", tag, what, n));
  }
  return static_cast<int>(n);
}

struct OpContext {
  std::uint64_t seq;
  std::string what;
  Clock::time_point deadline;
  double timeout_s;
};

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const CommConfig& config) : runtime_(MpiRuntime::acquire()), config_(config) {
    MPI_Comm dup = MPI_COMM_NULL;
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    comm_ = UniqueHandle<MPI_Comm>(dup, [](MPI_Comm c) { MPI_Comm_free(&c); });
    MPI_CHECK(MPI_Comm_set_errhandler(comm_.get(), MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(comm_.get(), &rank_));
    MPI_CHECK(MPI_Comm_size(comm_.get(), &size_));
    MPI_Comm split = MPI_COMM_NULL;
    MPI_CHECK(MPI_Comm_split_type(comm_.get(), MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &split));
    UniqueHandle<MPI_Comm> node(split, [](MPI_Comm c) { MPI_Comm_free(&c); });
    MPI_CHECK(MPI_Comm_rank(node.get(), &local_rank_));
    MPI_CHECK(MPI_Comm_size(node.get(), &local_size_));
    char name[MPI_MAX_PROCESSOR_NAME] = {0};
    int len = 0;
    MPI_CHECK(MPI_Get_processor_name(name, &len));
    host_.assign(name, static_cast<std::size_t>(len));
    tag_ = fmt::format("rank {}/{}", rank_, size_);
    worker_ = std::thread([this] { worker_loop(); });
  }

  ~MpiCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
    if (!stuck_.empty() && !drain_stuck()) {
      spdlog::warn("{}: a timed-out collective never completed; skipping MPI_Finalize", tag_);
      runtime_->skip_finalize();
      // MPI may still write these buffers and use the communicator: leak
      // them rather than free them.
      new std::vector<Stuck>(std::move(stuck_));
      comm_.release();
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string host() const override { return host_; }
  std::string describe() const override {
    return fmt::format("mpi ({}, thread level {})", mpi_library_version(),
                       thread_level_name(runtime_->thread_level()));
  }

  void all_reduce(const at::Tensor& tensor, const AllReduceOptions& opts) override {
    start_all_reduce(tensor, opts, /*caller_may_run=*/true)->wait();
  }

  std::shared_ptr<Work> all_reduce_async(const at::Tensor& tensor, const AllReduceOptions& opts) override {
    return start_all_reduce(tensor, opts, /*caller_may_run=*/false);
  }

  std::shared_ptr<Work> start_all_reduce(const at::Tensor& tensor, const AllReduceOptions& opts,
                                         bool caller_may_run) {
    check_cpu(tensor, "all_reduce", tag_);
    MPI_Datatype type = reduce_type(tensor.scalar_type(), tag_);
    Signature sig{static_cast<std::int64_t>(OpKind::kAllReduce),
                  static_cast<std::int64_t>(tensor.scalar_type()), static_cast<std::int64_t>(opts.op),
                  tensor.numel(), 0};
    return enqueue(sig, opts.timeout, caller_may_run,
                   [this, tensor, type, op = opts.op](const OpContext& ctx) {
                     at::Tensor buf = tensor.is_contiguous() ? tensor : tensor.contiguous();
                     auto* base = static_cast<char*>(buf.data_ptr());
                     const std::int64_t n = buf.numel();
                     const std::int64_t elem = buf.element_size();
                     std::int64_t off = 0;
                     do {  // one call even for an empty tensor: every rank takes part
                       int count = static_cast<int>(std::min(kMaxChunk, n - off));
                       if (config_.verify && size_ > 1) {
                         // verify() has seen every rank enter this very collective: the
                         // blocking call (Open MPI's tuned algorithms, progressed inside
                         // the call) runs at the speed of raw MPI_Allreduce; a rank lost
                         // during the transfer is caught by the waiter's backstop.
                         MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, base + off * elem, count, type,
                                                 reduce_mpi_op(op), comm_.get()));
                       } else {
                         MPI_Request req;
                         MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, base + off * elem, count, type,
                                                  reduce_mpi_op(op), comm_.get(), &req));
                         wait_request(req, ctx, {buf});
                       }
                       off += count;
                     } while (off < n);
                     if (op == ReduceOp::kAvg && n > 0) {
                       if (buf.is_floating_point()) {
                         buf.div_(size_);
                       } else {
                         buf.div_(size_, "trunc");
                       }
                     }
                     if (!buf.is_same(tensor)) tensor.copy_(buf);
                   });
  }

  void broadcast(const at::Tensor& tensor, const BroadcastOptions& opts) override {
    check_cpu(tensor, "broadcast", tag_);
    check_broadcast_root(opts.root, size_, tag_);
    Signature sig{static_cast<std::int64_t>(OpKind::kBroadcast),
                  static_cast<std::int64_t>(tensor.scalar_type()), opts.root, tensor.numel(), 0};
    enqueue(sig, opts.timeout, /*caller_may_run=*/true,
            [this, tensor, root = opts.root](const OpContext& ctx) {
              at::Tensor buf = tensor.is_contiguous() ? tensor : tensor.contiguous();
              auto* base = static_cast<char*>(buf.data_ptr());
              const std::int64_t bytes = buf.numel() * buf.element_size();
              std::int64_t off = 0;
              do {
                int count = static_cast<int>(std::min(kMaxChunk, bytes - off));
                MPI_Request req;
                MPI_CHECK(MPI_Ibcast(base + off, count, MPI_BYTE, root, comm_.get(), &req));
                wait_request(req, ctx, {buf});
                off += count;
              } while (off < bytes);
              if (!buf.is_same(tensor)) tensor.copy_(buf);
            })
        ->wait();
  }

  at::Tensor all_gather(const at::Tensor& tensor, const CollectiveOptions& opts) override {
    check_cpu(tensor, "all_gather", tag_);
    Signature sig{static_cast<std::int64_t>(OpKind::kAllGather),
                  static_cast<std::int64_t>(tensor.scalar_type()), 0, tensor.numel(),
                  shape_hash(tensor.sizes())};
    std::vector<std::int64_t> out_shape{size_};
    out_shape.insert(out_shape.end(), tensor.sizes().begin(), tensor.sizes().end());
    at::Tensor out = at::empty(out_shape, tensor.options());
    enqueue(sig, opts.timeout, /*caller_may_run=*/true, [this, tensor, out](const OpContext& ctx) {
      at::Tensor in = tensor.contiguous();
      int bytes = int_count(in.numel() * in.element_size() * size_, "all_gather", tag_);
      bytes /= size_;
      MPI_Request req;
      MPI_CHECK(
          MPI_Iallgather(in.data_ptr(), bytes, MPI_BYTE, out.data_ptr(), bytes, MPI_BYTE, comm_.get(), &req));
      wait_request(req, ctx, {in, out});
    })->wait();
    return out;
  }

  std::vector<at::Tensor> all_gather_v(const at::Tensor& tensor, const CollectiveOptions& opts) override {
    check_cpu(tensor, "all_gather_v", tag_);
    check_gather_v_input(tensor, tag_);
    at::IntArrayRef row_shape = tensor.sizes().slice(1);
    Signature sig{static_cast<std::int64_t>(OpKind::kAllGatherV),
                  static_cast<std::int64_t>(tensor.scalar_type()), 0, -1, shape_hash(row_shape)};
    auto result = std::make_shared<std::vector<at::Tensor>>();
    enqueue(sig, opts.timeout, /*caller_may_run=*/true, [this, tensor, result](const OpContext& ctx) {
      at::Tensor in = tensor.contiguous();
      // MPI buffers are tensors so that a timed-out request can keep them alive.
      at::Tensor mine = at::tensor({in.size(0)}, at::kLong);
      at::Tensor rows_t = at::empty({size_}, at::kLong);
      MPI_Request req;
      MPI_CHECK(MPI_Iallgather(mine.data_ptr(), 1, MPI_INT64_T, rows_t.data_ptr(), 1, MPI_INT64_T,
                               comm_.get(), &req));
      wait_request(req, ctx, {mine, rows_t});
      std::vector<std::int64_t> rows(rows_t.data_ptr<std::int64_t>(),
                                     rows_t.data_ptr<std::int64_t>() + size_);
      const std::int64_t row_bytes =
          static_cast<std::int64_t>(c10::multiply_integers(in.sizes().slice(1))) * in.element_size();
      std::int64_t total_rows = 0;
      for (auto r : rows) total_rows += r;
      int_count(total_rows * row_bytes, "all_gather_v", tag_);
      std::vector<int> counts(rows.size()), displs(rows.size());
      for (std::size_t r = 0, at_byte = 0; r < rows.size(); ++r) {
        counts[r] = static_cast<int>(rows[r] * row_bytes);
        displs[r] = static_cast<int>(at_byte);
        at_byte += static_cast<std::size_t>(counts[r]);
      }
      std::vector<std::int64_t> shape(in.sizes().begin(), in.sizes().end());
      shape[0] = total_rows;
      at::Tensor out = at::empty(shape, in.options());
      MPI_CHECK(MPI_Iallgatherv(in.data_ptr(), counts[static_cast<std::size_t>(rank_)], MPI_BYTE,
                                out.data_ptr(), counts.data(), displs.data(), MPI_BYTE, comm_.get(), &req));
      wait_request(req, ctx, {in, out});
      std::int64_t start = 0;
      for (auto r : rows) {
        result->push_back(out.narrow(0, start, r));
        start += r;
      }
    })->wait();
    return std::move(*result);
  }

  void barrier(const CollectiveOptions& opts) override {
    Signature sig{static_cast<std::int64_t>(OpKind::kBarrier), -1, 0, 0, 0};
    enqueue(sig, opts.timeout, /*caller_may_run=*/true, [this](const OpContext& ctx) {
      MPI_Request req;
      MPI_CHECK(MPI_Ibarrier(comm_.get(), &req));
      wait_request(req, ctx, {});
    })->wait();
  }

  [[noreturn]] void abort(int code) override {
    logging_flush();
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  struct Task {
    std::shared_ptr<QueuedWork> work;
    Signature signature;
    Seconds timeout;
    std::function<void(const OpContext&)> run;
    std::uint64_t seq = 0;
  };

  /// Queues a collective for the communication thread, or, for a caller
  /// that will wait for it anyway (`caller_may_run`) while that thread is
  /// idle with nothing queued, runs it on the calling thread: two thread
  /// hand-offs fewer per blocking collective (MPI calls stay serialised by
  /// `busy_`, and the issue order is kept: nothing is queued before it).
  std::shared_ptr<Work> enqueue(const Signature& sig, Seconds timeout, bool caller_may_run,
                                std::function<void(const OpContext&)> run) {
    if (timeout.count() <= 0) timeout = Seconds(config_.timeout_s);
    Task task;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++issued_;
      task = {std::make_shared<QueuedWork>(fmt::format("{} #{}", llmrec::describe(sig), issued_),
                                           fmt::format("{} ({})", tag_, host_)),
              sig, timeout, std::move(run), issued_};
      if (!caller_may_run || busy_ || !queue_.empty()) {
        auto work = task.work;
        queue_.push_back(std::move(task));
        cv_.notify_all();
        return work;
      }
      busy_ = true;
      // The communication thread watches this call: inside a blocking MPI
      // call the caller cannot see its own backstop (a rank or link lost
      // mid-transfer).
      inline_what_ = task.work->what();
      inline_backstop_ =
          Clock::now() + std::chrono::duration_cast<Clock::duration>(task.timeout) + std::chrono::seconds(1);
      inline_timeout_s_ = task.timeout.count();
      inline_running_ = true;
    }
    cv_.notify_all();
    execute(task);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
      inline_running_ = false;
    }
    cv_.notify_all();  // the communication thread may have work queued meanwhile
    return task.work;
  }

  /// Run by the communication thread when a collective running on a
  /// caller's thread is past its backstop: that thread is stuck inside MPI,
  /// so nobody else can report it. Ends the job like the application would.
  [[noreturn]] void watchdog_fire(const std::string& what, double timeout_s) {
    spdlog::critical(
        "{} ({}): collective {} did not complete within {:.3g} s (comm.timeout_s) although every rank had "
        "entered "
        "it: a rank died or the network failed during the transfer; aborting all ranks (exit code {}).",
        tag_, host_, what, timeout_s, kExitCommTimeout);
    logging_flush();
    MPI_Abort(MPI_COMM_WORLD, kExitCommTimeout);
    std::_Exit(kExitCommTimeout);
  }

  void worker_loop() {
    while (true) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        auto ready = [&] { return (stop_ && !busy_) || (!queue_.empty() && !busy_); };
        while (!ready()) {
          if (inline_running_) {
            if (Clock::now() > inline_backstop_) watchdog_fire(inline_what_, inline_timeout_s_);
            cv_.wait_until(lock, inline_backstop_ + std::chrono::milliseconds(1));
          } else {
            cv_.wait(lock);
          }
        }
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
        busy_ = true;
      }
      execute(task);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        busy_ = false;
      }
      cv_.notify_all();
    }
  }

  /// One collective, on whichever thread holds `busy_`.
  void execute(Task& task) {
    if (!broken_.empty()) {
      task.work->finish(std::make_exception_ptr(CommError(fmt::format(
          "{}: {} not run: the communicator failed earlier ({})", tag_, task.work->what(), broken_))));
      return;
    }
    OpContext ctx{task.seq, task.work->what(),
                  Clock::now() + std::chrono::duration_cast<Clock::duration>(task.timeout),
                  task.timeout.count()};
    task.work->start(ctx.deadline + std::chrono::seconds(1), ctx.timeout_s);
    try {
      if (config_.verify && size_ > 1) verify(ctx, task.signature);
      task.run(ctx);
      task.work->finish(nullptr);
    } catch (const AgreedError&) {
      task.work->finish(std::current_exception());
    } catch (const CommTimeout& e) {
      broken_ = e.what();
      task.work->finish(std::current_exception());
    } catch (const std::exception& e) {
      broken_ = fmt::format("{}: {} failed: {}", tag_, ctx.what, e.what());
      task.work->finish(std::make_exception_ptr(CommError(broken_)));
    }
  }

  /// Polls `req` until it completes or the deadline passes. Spins (yielding)
  /// briefly for low latency, then sleeps with backoff so a waiting
  /// communication thread does not steal a core from compute.
  /// `buffers` are the tensors MPI reads or writes: if the request times
  /// out they are kept alive, since MPI may still write them later.
  void wait_request(MPI_Request& req, const OpContext& ctx, std::vector<at::Tensor> buffers) {
    const bool done = poll_until(ctx.deadline, [&] {
      int finished = 0;
      MPI_CHECK(MPI_Test(&req, &finished, MPI_STATUS_IGNORE));
      return finished != 0;
    });
    if (done) return;
    stuck_.push_back({req, std::move(buffers)});
    throw CommTimeout(collective_timeout_message(fmt::format("{} ({})", tag_, host_),
                                                 "collective " + ctx.what, ctx.timeout_s));
  }

  /// Compares this rank's signature with every other rank's (one small
  /// all-reduce of max(s) and max(-s)); on a mismatch, gathers them all so
  /// that every rank can say who passed what.
  void verify(const OpContext& ctx, const Signature& sig) {
    at::Tensor mine = at::empty({kSignatureLen}, at::kLong);
    std::memcpy(mine.data_ptr(), &sig, sizeof(sig));
    at::Tensor both = at::cat({mine, -mine});
    MPI_Request req;
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, both.data_ptr(), 2 * kSignatureLen, MPI_INT64_T, MPI_MAX,
                             comm_.get(), &req));
    wait_request(req, ctx, {both});
    const auto* buf = both.data_ptr<std::int64_t>();
    bool same = true;
    for (int i = 0; i < kSignatureLen; ++i) same = same && buf[i] == -buf[kSignatureLen + i];
    if (same) return;
    at::Tensor all_t = at::empty({size_, kSignatureLen}, at::kLong);
    MPI_CHECK(MPI_Iallgather(mine.data_ptr(), kSignatureLen, MPI_INT64_T, all_t.data_ptr(), kSignatureLen,
                             MPI_INT64_T, comm_.get(), &req));
    wait_request(req, ctx, {mine, all_t});
    std::vector<Signature> all(static_cast<std::size_t>(size_));
    std::memcpy(all.data(), all_t.data_ptr(), all.size() * sizeof(Signature));
    throw AgreedError(signature_mismatch(tag_, fmt::format("#{}", ctx.seq), all));
  }

  /// After a timeout the stuck request may still complete (a slow rank that
  /// caught up); wait for it a bounded time so that MPI can finalise.
  bool drain_stuck() {
    const Seconds grace(std::max(config_.timeout_s, kMinDrainSeconds));
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(grace);
    for (auto& stuck : stuck_) {
      while (true) {
        int done = 0;
        if (MPI_Test(&stuck.request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return false;
        if (done) break;
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    stuck_.clear();
    return true;
  }

  std::shared_ptr<MpiRuntime> runtime_;
  CommConfig config_;
  UniqueHandle<MPI_Comm> comm_;  // freed before runtime_ lets MPI finalise (members go in reverse order)
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  std::string host_;
  std::string tag_;  // "rank R/W", in every message

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool busy_ = false;  // a thread (the communication thread or a caller) is running a collective
  // The collective a caller runs on its own thread, for the watchdog.
  bool inline_running_ = false;
  std::string inline_what_;
  Clock::time_point inline_backstop_;
  double inline_timeout_s_ = 0;
  bool stop_ = false;
  std::uint64_t issued_ = 0;
  std::thread worker_;

  // State of the thread holding busy_.
  std::string broken_;
  /// Requests that timed out, with the buffers MPI may still write.
  struct Stuck {
    MPI_Request request;
    std::vector<at::Tensor> buffers;
  };
  std::vector<Stuck> stuck_;
};

}  // namespace

void raw_mpi_all_reduce_sum(float* data, std::int64_t n) {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    throw CommError("raw_mpi_all_reduce_sum: MPI is not running (create a communicator first and keep it)");
  }
  std::int64_t off = 0;
  do {
    const int count = static_cast<int>(std::min(kMaxChunk, n - off));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data + off, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    off += count;
  } while (off < n);
}

std::unique_ptr<Communicator> create_mpi_communicator(const CommConfig& config) {
  return std::make_unique<MpiCommunicator>(config);
}

}  // namespace llmrec
