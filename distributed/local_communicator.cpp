#include "distributed/local_communicator.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "common/logging.h"
#include "distributed/collective_signature.h"
#include "distributed/queued_work.h"

namespace llmrec {
namespace {

using Clock = std::chrono::steady_clock;

/// What the ranks of a group share: one Round per collective (by issue
/// number), filled as the ranks arrive, completed by the last one.
struct Group {
  explicit Group(int world_) : world(world_) {}
  struct Round {
    std::vector<Signature> signatures;
    std::vector<at::Tensor> inputs;
    int arrived = 0;
    int left = 0;
    bool done = false;
    std::string mismatch;             ///< set when the signatures differ (or combining failed)
    std::vector<at::Tensor> results;  ///< what every rank reads
  };
  const int world;
  std::mutex mutex;
  std::condition_variable cv;
  std::map<std::uint64_t, Round> rounds;
};

/// Combines the inputs of a round once every rank has arrived.
using Combine = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>& inputs)>;

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator(std::shared_ptr<Group> group, int rank, const CommConfig& config)
      : group_(std::move(group)), rank_(rank), config_(config) {
    char name[256] = {0};
    if (gethostname(name, sizeof(name) - 1) != 0) name[0] = '\0';
    host_ = name;
    tag_ = fmt::format("rank {}/{}", rank_, group_->world);
    worker_ = std::thread([this] { worker_loop(); });
  }

  ~LocalCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  int rank() const override { return rank_; }
  int size() const override { return group_->world; }
  int local_rank() const override { return rank_; }
  int local_size() const override { return group_->world; }
  std::string host() const override { return host_; }
  std::string describe() const override {
    return fmt::format("local ({} ranks as threads of one process)", group_->world);
  }

  void all_reduce(const at::Tensor& tensor, const AllReduceOptions& opts) override {
    all_reduce_async(tensor, opts)->wait();
  }

  std::shared_ptr<Work> all_reduce_async(const at::Tensor& tensor, const AllReduceOptions& opts) override {
    check_cpu_tensor(tensor, "all_reduce", tag_, "the local backend");
    const auto t = tensor.scalar_type();
    check_cpu_reducible(t, tag_);
    Signature sig{static_cast<std::int64_t>(OpKind::kAllReduce), static_cast<std::int64_t>(t),
                  static_cast<std::int64_t>(opts.op), tensor.numel(), 0};
    const ReduceOp op = opts.op;
    const int world = size();
    Combine combine = [op, world](const std::vector<at::Tensor>& in) {
      at::Tensor acc = in[0].clone();
      for (std::size_t k = 1; k < in.size(); ++k) {  // rank order: deterministic
        switch (op) {
          case ReduceOp::kSum:
          case ReduceOp::kAvg: acc.add_(in[k]); break;
          case ReduceOp::kMin: acc = at::minimum(acc, in[k]); break;
          case ReduceOp::kMax: acc = at::maximum(acc, in[k]); break;
        }
      }
      if (op == ReduceOp::kAvg && acc.numel() > 0) {
        acc = acc.is_floating_point() ? acc.div(world) : acc.div(world, "trunc");
      }
      return std::vector<at::Tensor>{acc};
    };
    return enqueue(sig, opts.timeout, tensor, std::move(combine),
                   [tensor](const std::vector<at::Tensor>& r) { tensor.copy_(r[0].view(tensor.sizes())); });
  }

  void broadcast(const at::Tensor& tensor, const BroadcastOptions& opts) override {
    check_cpu_tensor(tensor, "broadcast", tag_, "the local backend");
    check_broadcast_root(opts.root, size(), tag_);
    Signature sig{static_cast<std::int64_t>(OpKind::kBroadcast),
                  static_cast<std::int64_t>(tensor.scalar_type()), opts.root, tensor.numel(), 0};
    const int root = opts.root;
    enqueue(
        sig, opts.timeout, tensor,
        [root](const std::vector<at::Tensor>& in) {
          return std::vector<at::Tensor>{in[static_cast<std::size_t>(root)]};
        },
        [tensor](const std::vector<at::Tensor>& r) { tensor.copy_(r[0].view(tensor.sizes())); })
        ->wait();
  }

  at::Tensor all_gather(const at::Tensor& tensor, const CollectiveOptions& opts) override {
    check_cpu_tensor(tensor, "all_gather", tag_, "the local backend");
    Signature sig{static_cast<std::int64_t>(OpKind::kAllGather),
                  static_cast<std::int64_t>(tensor.scalar_type()), 0, tensor.numel(),
                  shape_hash(tensor.sizes())};
    auto out = std::make_shared<at::Tensor>();
    enqueue(
        sig, opts.timeout, tensor,
        [](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{at::stack(in)}; },
        [out](const std::vector<at::Tensor>& r) { *out = r[0].clone(); })
        ->wait();
    return *out;
  }

  std::vector<at::Tensor> all_gather_v(const at::Tensor& tensor, const CollectiveOptions& opts) override {
    check_cpu_tensor(tensor, "all_gather_v", tag_, "the local backend");
    check_gather_v_input(tensor, tag_);
    Signature sig{static_cast<std::int64_t>(OpKind::kAllGatherV),
                  static_cast<std::int64_t>(tensor.scalar_type()), 0, -1,
                  shape_hash(tensor.sizes().slice(1))};
    auto out = std::make_shared<std::vector<at::Tensor>>();
    enqueue(
        sig, opts.timeout, tensor, [](const std::vector<at::Tensor>& in) { return in; },
        [out](const std::vector<at::Tensor>& r) {
          for (const auto& t : r) out->push_back(t.clone());
        })
        ->wait();
    return std::move(*out);
  }

  void barrier(const CollectiveOptions& opts) override {
    Signature sig{static_cast<std::int64_t>(OpKind::kBarrier), -1, 0, 0, 0};
    enqueue(
        sig, opts.timeout, at::Tensor(),
        [](const std::vector<at::Tensor>&) { return std::vector<at::Tensor>{}; },
        [](const std::vector<at::Tensor>&) {})
        ->wait();
  }

  [[noreturn]] void abort(int code) override {
    logging_flush();
    std::_Exit(code);
  }

 private:
  using Deliver = std::function<void(const std::vector<at::Tensor>&)>;
  struct Task {
    std::shared_ptr<QueuedWork> work;
    Signature signature;
    Seconds timeout;
    at::Tensor input;
    Combine combine;
    Deliver deliver;
    std::uint64_t seq = 0;
  };

  std::shared_ptr<QueuedWork> enqueue(const Signature& sig, Seconds timeout, const at::Tensor& input,
                                      Combine combine, Deliver deliver) {
    if (timeout.count() <= 0) timeout = Seconds(config_.timeout_s);
    std::lock_guard<std::mutex> lock(mutex_);
    ++issued_;
    Task task{std::make_shared<QueuedWork>(fmt::format("{} #{}", llmrec::describe(sig), issued_), tag_),
              sig,
              timeout,
              input,
              std::move(combine),
              std::move(deliver),
              issued_};
    auto work = task.work;
    queue_.push_back(std::move(task));
    cv_.notify_all();
    return work;
  }

  void worker_loop() {
    while (true) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      execute(task);
    }
  }

  void execute(Task& task) {
    if (!broken_.empty()) {
      task.work->finish(std::make_exception_ptr(CommError(fmt::format(
          "{}: {} not run: the communicator failed earlier ({})", tag_, task.work->what(), broken_))));
      return;
    }
    try {
      task.deliver(rendezvous(task));
      task.work->finish(nullptr);
    } catch (const CommTimeout& e) {
      broken_ = e.what();
      task.work->finish(std::current_exception());
    } catch (const CommError&) {  // agreed: every rank saw the same mismatch
      task.work->finish(std::current_exception());
    } catch (const std::exception& e) {
      broken_ = fmt::format("{}: {} failed: {}", tag_, task.work->what(), e.what());
      task.work->finish(std::make_exception_ptr(CommError(broken_)));
    }
  }

  /// Deposits this rank's part of collective #seq, waits for the others,
  /// and returns the combined results (the last rank to arrive combines).
  std::vector<at::Tensor> rendezvous(const Task& task) {
    Group& g = *group_;
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(task.timeout);
    std::unique_lock<std::mutex> lock(g.mutex);
    Group::Round& round = g.rounds[task.seq];
    if (round.signatures.empty()) {
      round.signatures.resize(static_cast<std::size_t>(g.world));
      round.inputs.resize(static_cast<std::size_t>(g.world));
    }
    round.signatures[static_cast<std::size_t>(rank_)] = task.signature;
    round.inputs[static_cast<std::size_t>(rank_)] =
        task.input.defined() ? task.input.clone(at::MemoryFormat::Contiguous) : task.input;
    if (++round.arrived == g.world) {
      if (signatures_agree(round.signatures)) {
        try {
          round.results = task.combine(round.inputs);
        } catch (const std::exception& e) {  // every rank gets the error, none waits for a result
          round.mismatch = fmt::format("{}: {} failed: {}", tag_, task.work->what(), e.what());
        }
      } else {
        round.mismatch = signature_mismatch(tag_, fmt::format("#{}", task.seq), round.signatures);
      }
      round.inputs.clear();
      round.done = true;
      g.cv.notify_all();
    } else if (!g.cv.wait_until(lock, deadline, [&] { return round.done; })) {
      ++round.left;  // the round stays for the late ranks; whoever leaves last erases it
      throw CommTimeout(collective_timeout_message(fmt::format("{} ({})", tag_, host_),
                                                   "collective " + task.work->what(), task.timeout.count()));
    }
    std::vector<at::Tensor> results = round.results;
    const std::string mismatch = round.mismatch;
    if (++round.left == g.world) g.rounds.erase(task.seq);
    lock.unlock();
    if (!mismatch.empty()) throw CommError(mismatch);
    return results;
  }

  std::shared_ptr<Group> group_;
  int rank_;
  CommConfig config_;
  std::string host_;
  std::string tag_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stop_ = false;
  std::uint64_t issued_ = 0;
  std::string broken_;  // only the queue thread reads and writes it
  std::thread worker_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> create_local_communicators(int world, const CommConfig& config) {
  LLMREC_CHECK(world >= 1, "local communicator group: world size must be positive, got {}", world);
  auto group = std::make_shared<Group>(world);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < world; ++r) out.push_back(std::make_unique<LocalCommunicator>(group, r, config));
  return out;
}

}  // namespace llmrec
