#include "distributed/gradient_reducer.h"

#include <ATen/ATen.h>

#include <chrono>
#include <functional>
#include <map>
#include <sstream>

#include "common/error.h"

namespace llmrec {

std::vector<Bucket> compute_bucket_assignment(const std::vector<at::Tensor>& params,
                                              std::int64_t bucket_bytes) {
  std::vector<Bucket> buckets;
  std::map<at::ScalarType, std::size_t> open;  // dtype -> index of its bucket being filled
  for (std::size_t k = params.size(); k-- > 0;) {
    const at::Tensor& p = params[k];
    const at::ScalarType dtype = p.scalar_type();
    const std::int64_t bytes = p.numel() * static_cast<std::int64_t>(p.element_size());
    auto it = open.find(dtype);
    if (it != open.end()) {
      Bucket& b = buckets[it->second];
      if (b.numel * static_cast<std::int64_t>(p.element_size()) + bytes > bucket_bytes) open.erase(it);
    }
    it = open.find(dtype);
    if (it == open.end()) {
      buckets.push_back(Bucket{{}, {}, 0, dtype});
      it = open.emplace(dtype, buckets.size() - 1).first;
    }
    Bucket& b = buckets[it->second];
    b.params.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += p.numel();
  }
  return buckets;
}

GradientReducer::GradientReducer(Communicator& comm,
                                 const std::vector<std::pair<std::string, at::Tensor>>& params,
                                 const ReducerOptions& options)
    : comm_(comm), options_(options) {
  for (auto& [name, p] : params) {
    LLMREC_CHECK(p.defined() && p.requires_grad(), "GradientReducer: parameter '{}' does not require grad",
                 name);
    names_.push_back(name);
    params_.push_back(p);
  }
  verify_same_parameters();
  const auto cap = static_cast<std::int64_t>(options.bucket_mb * 1024 * 1024);
  buckets_ = compute_bucket_assignment(params_, std::max<std::int64_t>(cap, 1));
  where_.resize(params_.size());
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    for (std::size_t i = 0; i < buckets_[b].params.size(); ++i) where_[buckets_[b].params[i]] = {b, i};
    const at::Device device =
        params_[buckets_[b].params.front()].device();  // the gradients' device (a GPU: NCCL)
    flat_.push_back(
        comm_.size() == 1  // one rank reduces nothing: no buffers
            ? at::Tensor()
            : at::zeros({buckets_[b].numel}, at::TensorOptions().dtype(buckets_[b].dtype).device(device)));
    pending_.push_back(buckets_[b].params.size());
  }
  work_.resize(buckets_.size());
  ready_.assign(params_.size(), 0);
  for (std::size_t k = 0; k < params_.size(); ++k) {
    hooks_.push_back(params_[k].register_hook([this, k](const at::Tensor& grad) {
      mark_ready(k, grad);
      return at::Tensor();  // leave the gradient as it is
    }));
  }
}

GradientReducer::~GradientReducer() {
  for (std::size_t k = 0; k < params_.size(); ++k) params_[k].remove_hook(hooks_[k]);
}

std::int64_t GradientReducer::bytes_per_step() const {
  std::int64_t bytes = 0;
  for (const auto& b : buckets_) bytes += b.numel * static_cast<std::int64_t>(c10::elementSize(b.dtype));
  return bytes;
}

void GradientReducer::verify_same_parameters() const {
  std::ostringstream desc;
  for (std::size_t k = 0; k < params_.size(); ++k) {
    desc << names_[k] << ' ' << params_[k].sizes() << ' ' << c10::toString(params_[k].scalar_type()) << '\n';
  }
  const std::string mine = desc.str();
  const auto hash = static_cast<std::int64_t>(std::hash<std::string>()(mine) >> 1);
  at::Tensor hashes = comm_.all_gather(at::tensor({hash}, at::kLong)).flatten();
  if (at::equal(hashes, at::full_like(hashes, hash))) return;
  // Someone differs: gather every rank's list to say what.
  at::Tensor bytes =
      at::from_blob(const_cast<char*>(mine.data()), {static_cast<std::int64_t>(mine.size())}, at::kByte)
          .clone();
  auto lists = comm_.all_gather_v(bytes);
  auto parse = [](const at::Tensor& t) {
    std::map<std::string, std::string> m;
    std::istringstream in(
        std::string(reinterpret_cast<const char*>(t.data_ptr()), static_cast<std::size_t>(t.numel())));
    std::string line;
    while (std::getline(in, line)) {
      auto sp = line.find(' ');
      m[line.substr(0, sp)] = line.substr(sp + 1);
    }
    return m;
  };
  auto ref = parse(lists[0]);
  std::string diff;
  for (std::size_t r = 1; r < lists.size(); ++r) {
    auto other = parse(lists[r]);
    int shown = 0;
    for (const auto& [name, what] : ref) {
      auto it = other.find(name);
      if (it == other.end()) {
        diff += fmt::format("\n  rank {} lacks '{}' ({} on rank 0)", r, name, what);
      } else if (it->second != what) {
        diff += fmt::format("\n  '{}' is {} on rank {} but {} on rank 0", name, it->second, r, what);
      } else {
        continue;
      }
      if (++shown == 10) break;
    }
    for (const auto& [name, what] : other) {
      if (!ref.count(name) && shown++ < 10)
        diff += fmt::format("\n  rank {} has '{}' ({}), rank 0 does not", r, name, what);
    }
  }
  throw CommError(
      fmt::format("rank {}/{}: the ranks do not hold the same trainable parameters (same model config "
                  "and LoRA settings on every rank?):{}",
                  comm_.rank(), comm_.size(), diff));
}

void GradientReducer::mark_ready(std::size_t param, const at::Tensor& grad) {
  if (!sync_) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (ready_[param]) {
    throw Error(
        fmt::format("GradientReducer: '{}' got a second gradient before finish(); call finish() after each "
                    "synchronised backward, or run extra backward passes inside no_sync()",
                    names_[param]));
  }
  if (comm_.size() == 1) {  // nothing to reduce: the gradient stays where backward puts it
    ready_[param] = 1;
    return;
  }
  auto [b, pos] = where_[param];
  const at::Tensor& p = params_[param];
  at::Tensor view = flat_[b].narrow(0, buckets_[b].offsets[pos], p.numel()).view(p.sizes());
  const at::Tensor& acc = p.grad();
  if (acc.defined()) {
    at::add_out(view, acc, grad);
  } else {
    view.copy_(grad);
  }
  ready_[param] = 1;
  if (--pending_[b] == 0) launch_ready_buckets();
}

void GradientReducer::launch_ready_buckets() {
  while (next_launch_ < buckets_.size() && pending_[next_launch_] == 0) {
    launch(next_launch_++);
    ++current_.launched_in_backward;
  }
}

void GradientReducer::launch(std::size_t b) {
  work_[b] = comm_.all_reduce_async(flat_[b], {options_.op});
  current_.bytes += flat_[b].numel() * static_cast<std::int64_t>(flat_[b].element_size());
  ++current_.buckets;
}

std::string GradientReducer::bucket_name(std::size_t b) const {
  const auto& ps = buckets_[b].params;
  return fmt::format("gradient bucket {} of {} ({} parameters, '{}' .. '{}')", b, buckets_.size(), ps.size(),
                     names_[ps.front()], names_[ps.back()]);
}

void GradientReducer::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (comm_.size() == 1) {  // the reduction of one rank is its gradient; none is zeros, as below
    for (auto& p : params_) {
      if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    }
    std::fill(ready_.begin(), ready_.end(), 0);
    stats_ = ReducerStats{};
    current_ = ReducerStats{};
    return;
  }
  // Parameters without a gradient this step: their accumulated gradient, or
  // zeros. Every rank fills and launches the rest in bucket order.
  for (std::size_t b = next_launch_; b < buckets_.size(); ++b) {
    for (std::size_t i = 0; i < buckets_[b].params.size(); ++i) {
      const std::size_t k = buckets_[b].params[i];
      if (ready_[k]) continue;
      at::Tensor view = flat_[b].narrow(0, buckets_[b].offsets[i], params_[k].numel());
      const at::Tensor& acc = params_[k].grad();
      if (acc.defined()) {
        view.copy_(acc.reshape({-1}));
      } else {
        view.zero_();
      }
      ready_[k] = 1;
    }
    pending_[b] = 0;
  }
  const std::int64_t in_backward = current_.launched_in_backward;
  launch_ready_buckets();
  current_.launched_in_backward = in_backward;
  auto t0 = std::chrono::steady_clock::now();
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    try {
      work_[b]->wait();
    } catch (const CommTimeout& e) {
      throw CommTimeout(fmt::format("{} [while reducing {}]", e.what(), bucket_name(b)));
    } catch (const CommError& e) {
      throw CommError(fmt::format("{} [while reducing {}]", e.what(), bucket_name(b)));
    }
  }
  current_.wait_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (std::size_t k = 0; k < params_.size(); ++k) {
    auto [b, pos] = where_[k];
    at::Tensor reduced =
        flat_[b].narrow(0, buckets_[b].offsets[pos], params_[k].numel()).view(params_[k].sizes());
    at::Tensor& g = params_[k].mutable_grad();
    if (g.defined()) {
      g.copy_(reduced);
    } else {
      g = reduced.clone();
    }
  }
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    pending_[b] = buckets_[b].params.size();
    work_[b].reset();
  }
  std::fill(ready_.begin(), ready_.end(), 0);
  next_launch_ = 0;
  stats_ = current_;
  current_ = ReducerStats{};
}

}  // namespace llmrec
