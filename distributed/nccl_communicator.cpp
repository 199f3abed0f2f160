#include "distributed/nccl_communicator.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "common/logging.h"
#include "distributed/agree.h"
#include "distributed/collective_signature.h"
#include "distributed/mpi_communicator.h"
#include "distributed/nccl_api.h"
#include "distributed/unique_handle.h"

#if LLMREC_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

namespace llmrec {
namespace {

using Clock = std::chrono::steady_clock;

/// The stream LibTorch queues the caller's kernels on for this tensor.
nccl::CuStream compute_stream(const at::Tensor& t) {
#if LLMREC_WITH_CUDA
  if (t.is_cuda())
    return reinterpret_cast<nccl::CuStream>(c10::cuda::getCurrentCUDAStream(t.device().index()).stream());
#endif
  (void)t;
  return nullptr;  // the legacy default stream: LibTorch's unless a stream guard says otherwise
}

int nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return nccl::kFloat32;
    case at::kDouble: return nccl::kFloat64;
    case at::kInt: return nccl::kInt32;
    case at::kLong: return nccl::kInt64;
    case at::kBFloat16: return nccl::kBfloat16;
    case at::kHalf: return nccl::kFloat16;
    default: return -1;
  }
}

int nccl_op(ReduceOp op, bool floating) {
  switch (op) {
    case ReduceOp::kSum: return nccl::kSum;
    case ReduceOp::kAvg:
      return floating ? nccl::kAvg : nccl::kSum;  // integers: sum, then truncating division
    case ReduceOp::kMin: return nccl::kMin;
    case ReduceOp::kMax: return nccl::kMax;
  }
  return nccl::kSum;
}

std::string cu_error(const nccl::Api& api, nccl::CuResult r) {
  const char* text = nullptr;
  if (api.CuGetErrorString(r, &text) != nccl::kCuSuccess || text == nullptr) text = "unknown CUDA error";
  return fmt::format("{} (CUDA error {})", text, r);
}

/// Completion of one NCCL collective: an event on the NCCL stream.
class NcclWork : public Work {
 public:
  NcclWork(const nccl::Api& api, nccl::Comm comm, UniqueHandle<nccl::CuEvent> done, std::string what,
           std::string tag, Clock::time_point deadline, double timeout_s, std::vector<at::Tensor> keep,
           std::function<void(const std::string&)> on_timeout, std::function<void()> then)
      : api_(api),
        comm_(comm),
        done_event_(std::move(done)),
        what_(std::move(what)),
        tag_(std::move(tag)),
        deadline_(deadline),
        timeout_s_(timeout_s),
        keep_(std::move(keep)),
        on_timeout_(std::move(on_timeout)),
        then_(std::move(then)) {}

  bool completed() override {
    std::lock_guard<std::mutex> lock(mutex_);
    return poll();
  }

  void wait(Seconds timeout) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const bool soft = timeout.count() > 0;
    const auto deadline =
        soft ? Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout) : deadline_;
    const bool done = poll_until(
        deadline, [&] { return poll(); },
        [&] {
          nccl::Result async = nccl::kSuccess;
          if (api_.CommGetAsyncError(comm_, &async) == nccl::kSuccess && async != nccl::kSuccess &&
              async != nccl::kInProgress) {
            throw CommError(fmt::format("{}: NCCL {} failed: {}", tag_, what_, api_.GetErrorString(async)));
          }
        });
    if (!done) {
      if (soft) {
        throw CommTimeout(
            fmt::format("{}: NCCL {} still running after waiting {:.3g} s", tag_, what_, timeout.count()));
      }
      std::string message = collective_timeout_message(tag_, "NCCL collective " + what_, timeout_s_);
      on_timeout_(message);
      throw CommTimeout(message);
    }
    if (then_) {  // once: results into the caller's tensor (queued after the collective on a GPU)
      auto then = std::move(then_);
      then_ = nullptr;
      then();
    }
    keep_.clear();  // finished: the buffers may be reused or freed
  }

 private:
  bool poll() {
    if (finished_) return true;
    const nccl::CuResult r = api_.CuEventQuery(done_event_.get());
    if (r == nccl::kCuNotReady) return false;
    if (r != nccl::kCuSuccess) {
      throw CommError(fmt::format("{}: waiting for NCCL {}: {}", tag_, what_, cu_error(api_, r)));
    }
    finished_ = true;
    return true;
  }

  const nccl::Api& api_;
  nccl::Comm comm_;
  UniqueHandle<nccl::CuEvent> done_event_;  // CUDA frees it once the recorded work completes
  std::string what_;
  std::string tag_;
  Clock::time_point deadline_;
  double timeout_s_;
  std::vector<at::Tensor> keep_;
  std::function<void(const std::string&)> on_timeout_;
  std::function<void()> then_;
  std::mutex mutex_;
  bool finished_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const CommConfig& config, const NcclOptions& options)
      : config_(config), options_(options), mpi_(create_mpi_communicator(config)) {
    tag_ = fmt::format("rank {}/{}", mpi_->rank(), mpi_->size());
    // Set up locally, then agree: a rank without NCCL or a GPU must not
    // leave the others waiting in ncclCommInitRank.
    std::exception_ptr failure;
    try {
      api_ = &nccl::api();
      check_cu(api_->CuInit(0), "cuInit");
      int devices = 0;
      check_cu(api_->CuDeviceGetCount(&devices), "cuDeviceGetCount");
      if (devices <= 0) throw CommError("no CUDA device is visible (CUDA_VISIBLE_DEVICES?)");
      device_ = device_for_local_rank(mpi_->local_rank(), devices);
      nccl::CuDevice dev = 0;
      check_cu(api_->CuDeviceGet(&dev, device_), "cuDeviceGet");
      nccl::CuContext context = nullptr;
      check_cu(api_->CuDevicePrimaryCtxRetain(&context, dev), "cuDevicePrimaryCtxRetain");
      context_ = UniqueHandle<nccl::CuContext>(
          context, [api = api_, dev](nccl::CuContext) { api->CuDevicePrimaryCtxRelease(dev); });
      set_context();
      nccl::CuStream stream = nullptr;
      check_cu(api_->CuStreamCreate(&stream, nccl::kCuStreamNonBlocking), "cuStreamCreate");
      stream_ =
          UniqueHandle<nccl::CuStream>(stream, [api = api_](nccl::CuStream st) { api->CuStreamDestroy(st); });
      check(api_->GetVersion(&version_), "ncclGetVersion");
    } catch (const std::exception& e) {
      try {
        rethrow_with_context(e, fmt::format("{} ({}): setting up NCCL", tag_, mpi_->host()),
                             ErrorKind::kComm);
      } catch (...) {
        failure = std::current_exception();
      }
    }
    agree_on_failure(*mpi_, failure, "setting up NCCL");
    at::Tensor id = at::zeros({nccl::kUniqueIdBytes}, at::kByte);
    nccl::UniqueId uid{};
    if (mpi_->rank() == 0) {
      check(api_->GetUniqueId(&uid), "ncclGetUniqueId");
      std::memcpy(id.data_ptr(), uid.internal, sizeof(uid.internal));
    }
    mpi_->broadcast(id, {0});
    std::memcpy(uid.internal, id.data_ptr(), sizeof(uid.internal));
    nccl::Comm comm = nullptr;
    check(api_->CommInitRank(&comm, mpi_->size(), uid, mpi_->rank()), "ncclCommInitRank");
    comm_ = UniqueHandle<nccl::Comm>(comm, [api = api_](nccl::Comm c) { api->CommDestroy(c); });
    spdlog::debug("{}: NCCL {} on device {} ({})", tag_, nccl::version_string(version_), device_,
                  api_->nccl_path);
  }

  // The handles go in reverse order of declaration: the NCCL communicator,
  // the stream, then the primary context's reference.
  ~NcclCommunicator() override {
    if (!context_.owns()) return;
    set_context();
    if (!broken_.empty()) {
      // A collective never finished: abort instead of waiting for it, and
      // leave the stream it may still use.
      if (comm_.owns()) api_->CommAbort(comm_.release());
      stream_.release();
    }
  }

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  int local_rank() const override { return mpi_->local_rank(); }
  int local_size() const override { return mpi_->local_size(); }
  std::string host() const override { return mpi_->host(); }
  std::string describe() const override {
    return fmt::format("nccl {} on device {} ({}); CPU tensors: {}", nccl::version_string(version_), device_,
                       api_->nccl_path, mpi_->describe());
  }

  void all_reduce(const at::Tensor& tensor, const AllReduceOptions& opts) override {
    all_reduce_async(tensor, opts)->wait();
  }

  std::shared_ptr<Work> all_reduce_async(const at::Tensor& tensor, const AllReduceOptions& opts) override {
    if (!routed(tensor)) return mpi_->all_reduce_async(tensor, opts);
    const int dtype = nccl_type(tensor.scalar_type());
    if (dtype < 0) {
      throw CommError(
          fmt::format("{}: NCCL all_reduce supports float32, float64, int32 and int64 tensors (and "
                      "bfloat16, float16), got {}",
                      tag_, c10::toString(tensor.scalar_type())));
    }
    Signature sig{static_cast<std::int64_t>(OpKind::kAllReduce),
                  static_cast<std::int64_t>(tensor.scalar_type()), static_cast<std::int64_t>(opts.op),
                  tensor.numel(), 0};
    std::lock_guard<std::mutex> lock(mutex_);
    const Issue is = begin(sig, opts.timeout);
    at::Tensor buf = tensor.is_contiguous() ? tensor : tensor.contiguous();
    const bool floating = buf.is_floating_point();
    const nccl::CuStream compute = compute_stream(buf);
    order_after(compute);
    if (buf.numel() > 0) {
      check(api_->AllReduce(buf.data_ptr(), buf.data_ptr(), static_cast<std::size_t>(buf.numel()), dtype,
                            nccl_op(opts.op, floating), comm_.get(), stream_.get()),
            "ncclAllReduce");
    }
    const bool int_avg = opts.op == ReduceOp::kAvg && !floating && buf.numel() > 0;
    const int world = size();
    return complete(is, compute, {buf, tensor}, [buf, tensor, int_avg, world]() mutable {
      if (int_avg) buf.div_(world, "trunc");
      if (!buf.is_same(tensor)) tensor.copy_(buf);
    });
  }

  void broadcast(const at::Tensor& tensor, const BroadcastOptions& opts) override {
    if (!routed(tensor)) return mpi_->broadcast(tensor, opts);
    check_broadcast_root(opts.root, size(), tag_);
    Signature sig{static_cast<std::int64_t>(OpKind::kBroadcast),
                  static_cast<std::int64_t>(tensor.scalar_type()), opts.root, tensor.numel(), 0};
    std::shared_ptr<Work> work;
    at::Tensor buf;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const Issue is = begin(sig, opts.timeout);
      buf = tensor.is_contiguous() ? tensor : tensor.contiguous();
      const nccl::CuStream compute = compute_stream(buf);
      order_after(compute);
      const auto bytes = static_cast<std::size_t>(buf.numel()) * buf.element_size();
      if (bytes > 0) {
        check(api_->Broadcast(buf.data_ptr(), buf.data_ptr(), bytes, nccl::kUint8, opts.root, comm_.get(),
                              stream_.get()),
              "ncclBroadcast");
      }
      work = complete(is, compute, {buf}, [buf, tensor]() mutable {
        if (!buf.is_same(tensor)) tensor.copy_(buf);
      });
    }
    work->wait();
  }

  at::Tensor all_gather(const at::Tensor& tensor, const CollectiveOptions& opts) override {
    if (!routed(tensor)) return mpi_->all_gather(tensor, opts);
    Signature sig{static_cast<std::int64_t>(OpKind::kAllGather),
                  static_cast<std::int64_t>(tensor.scalar_type()), 0, tensor.numel(),
                  shape_hash(tensor.sizes())};
    std::vector<std::int64_t> out_shape{size()};
    out_shape.insert(out_shape.end(), tensor.sizes().begin(), tensor.sizes().end());
    at::Tensor out = at::empty(out_shape, tensor.options());
    std::shared_ptr<Work> work;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const Issue is = begin(sig, opts.timeout);
      at::Tensor in = tensor.contiguous();
      const nccl::CuStream compute = compute_stream(in);
      order_after(compute);
      const auto bytes = static_cast<std::size_t>(in.numel()) * in.element_size();
      if (bytes > 0) {
        check(api_->AllGather(in.data_ptr(), out.data_ptr(), bytes, nccl::kUint8, comm_.get(), stream_.get()),
              "ncclAllGather");
      }
      work = complete(is, compute, {in, out});
    }
    work->wait();
    return out;
  }

  std::vector<at::Tensor> all_gather_v(const at::Tensor& tensor, const CollectiveOptions& opts) override {
    if (!routed(tensor)) return mpi_->all_gather_v(tensor, opts);
    check_gather_v_input(tensor, tag_);
    Signature sig{static_cast<std::int64_t>(OpKind::kAllGatherV),
                  static_cast<std::int64_t>(tensor.scalar_type()), 0, -1,
                  shape_hash(tensor.sizes().slice(1))};
    std::vector<at::Tensor> result;
    std::shared_ptr<Work> work;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const Issue is = begin(sig, opts.timeout);
      const at::Tensor rows_t =
          mpi_->all_gather(at::tensor({tensor.size(0)}, at::kLong), {opts.timeout}).flatten().contiguous();
      const std::vector<std::int64_t> rows_of(rows_t.data_ptr<std::int64_t>(),
                                              rows_t.data_ptr<std::int64_t>() + size());
      const std::int64_t row_bytes =
          static_cast<std::int64_t>(c10::multiply_integers(tensor.sizes().slice(1))) * tensor.element_size();
      std::int64_t total_rows = 0;
      for (auto rows : rows_of) total_rows += rows;
      std::vector<std::int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
      shape[0] = total_rows;
      at::Tensor in = tensor.contiguous();
      at::Tensor out = at::empty(shape, in.options());
      const nccl::CuStream compute = compute_stream(in);
      order_after(compute);
      // One broadcast per rank, as one group: rank r's rows land at its offset.
      check(api_->GroupStart(), "ncclGroupStart");
      std::int64_t start = 0;
      for (int r = 0; r < size(); ++r) {
        const std::int64_t rows = rows_of[static_cast<std::size_t>(r)];
        const auto bytes = static_cast<std::size_t>(rows * row_bytes);
        char* dst = static_cast<char*>(out.data_ptr()) + start * row_bytes;
        if (bytes > 0) {
          const void* src = r == rank() ? in.data_ptr() : dst;
          check(api_->Broadcast(src, dst, bytes, nccl::kUint8, r, comm_.get(), stream_.get()),
                "ncclBroadcast");
        }
        result.push_back(out.narrow(0, start, rows));
        start += rows;
      }
      check(api_->GroupEnd(), "ncclGroupEnd");
      work = complete(is, compute, {in, out});
    }
    work->wait();
    return result;
  }

  void barrier(const CollectiveOptions& opts) override { mpi_->barrier(opts); }

  [[noreturn]] void abort(int code) override {
    if (comm_.owns()) {
      set_context();
      api_->CommAbort(comm_.release());  // frees the GPU side before the processes go
    }
    mpi_->abort(code);
    std::_Exit(code);  // not reached
  }

 private:
  struct Issue {
    std::string what;
    Clock::time_point deadline;
    double timeout_s;
  };

  bool routed(const at::Tensor& t) const {
    if (!t.defined()) throw CommError(fmt::format("{}: a collective got an undefined tensor", tag_));
    return t.device().type() == options_.device_type;
  }

  void check(nccl::Result r, const char* call) const {
    if (r == nccl::kSuccess) return;
    throw CommError(fmt::format("{} ({}): {} failed: {} (NCCL error {})", tag_, mpi_->host(), call,
                                api_->GetErrorString(r), r));
  }
  void check_cu(nccl::CuResult r, const char* call) const {
    if (r != nccl::kCuSuccess) throw CommError(fmt::format("{} failed: {}", call, cu_error(*api_, r)));
  }
  void set_context() const { check_cu(api_->CuCtxSetCurrent(context_.get()), "cuCtxSetCurrent"); }

  /// Numbering, the signature check and the deadline of one collective.
  Issue begin(const Signature& sig, Seconds timeout) {
    if (!broken_.empty()) {
      throw CommError(fmt::format("{}: {} not run: the communicator failed earlier ({})", tag_,
                                  llmrec::describe(sig), broken_));
    }
    if (timeout.count() <= 0) timeout = Seconds(config_.timeout_s);
    ++issued_;
    Issue is{fmt::format("{} #{}", llmrec::describe(sig), issued_),
             Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout), timeout.count()};
    if (config_.verify && size() > 1) verify(sig, is, timeout);
    set_context();
    return is;
  }

  void verify(const Signature& sig, const Issue& is, Seconds timeout) {
    at::Tensor mine = at::empty({kSignatureLen}, at::kLong);
    std::memcpy(mine.data_ptr(), &sig, sizeof(sig));
    at::Tensor all = mpi_->all_gather(mine, {timeout});
    std::vector<Signature> each(static_cast<std::size_t>(size()));
    std::memcpy(each.data(), all.contiguous().data_ptr(), each.size() * sizeof(Signature));
    if (!signatures_agree(each)) throw CommError(signature_mismatch(tag_, is.what, each));
  }

  /// A new event (timing off), destroyed with its owner (CUDA frees it once
  /// the work recorded on it has completed).
  UniqueHandle<nccl::CuEvent> event() const {
    nccl::CuEvent e = nullptr;
    check_cu(api_->CuEventCreate(&e, nccl::kCuEventDisableTiming), "cuEventCreate");
    return UniqueHandle<nccl::CuEvent>(e, [api = api_](nccl::CuEvent ev) { api->CuEventDestroy(ev); });
  }

  /// The NCCL stream waits for what the compute stream queued so far.
  void order_after(nccl::CuStream compute) {
    const UniqueHandle<nccl::CuEvent> ready = event();
    check_cu(api_->CuEventRecord(ready.get(), compute), "cuEventRecord");
    check_cu(api_->CuStreamWaitEvent(stream_.get(), ready.get(), 0), "cuStreamWaitEvent");
  }

  /// The collective's completion event; the compute stream waits for it.
  std::shared_ptr<Work> complete(const Issue& is, nccl::CuStream compute, std::vector<at::Tensor> keep,
                                 std::function<void()> then = nullptr) {
    UniqueHandle<nccl::CuEvent> done = event();
    check_cu(api_->CuEventRecord(done.get(), stream_.get()), "cuEventRecord");
    check_cu(api_->CuStreamWaitEvent(compute, done.get(), 0), "cuStreamWaitEvent");
    return std::make_shared<NcclWork>(
        *api_, comm_.get(), std::move(done), is.what, fmt::format("{} ({})", tag_, mpi_->host()), is.deadline,
        is.timeout_s, std::move(keep),
        [this](const std::string& why) {
          std::lock_guard<std::mutex> lock(mutex_);
          broken_ = why;
        },
        std::move(then));
  }

  CommConfig config_;
  NcclOptions options_;
  std::unique_ptr<Communicator> mpi_;
  std::string tag_;
  const nccl::Api* api_ = nullptr;
  int device_ = -1;
  int version_ = 0;
  UniqueHandle<nccl::CuContext> context_;  // a reference to the device's primary context
  UniqueHandle<nccl::CuStream> stream_;
  UniqueHandle<nccl::Comm> comm_;
  std::mutex mutex_;  // NCCL calls of one communicator are issued one at a time, in order
  std::uint64_t issued_ = 0;
  std::string broken_;
};

}  // namespace

int device_for_local_rank(int local_rank, int devices) {
  LLMREC_CHECK(devices > 0 && local_rank >= 0, "device_for_local_rank({}, {})", local_rank, devices);
  return local_rank % devices;
}

std::unique_ptr<Communicator> create_nccl_communicator(const CommConfig& config, const NcclOptions& options) {
  return std::make_unique<NcclCommunicator>(config, options);
}

}  // namespace llmrec
