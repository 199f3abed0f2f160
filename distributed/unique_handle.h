#pragma once
/// Sole owner of a C library handle (an MPI communicator, a CUDA stream,
/// event or primary context, an NCCL communicator): frees it when the owner
/// goes, also when a constructor throws half-way. Movable, not copyable.
/// release() gives the handle up without freeing it (a handle a stuck
/// collective may still use is leaked on purpose, never freed under it).
///
///   UniqueHandle<MPI_Comm> comm(dup, [](MPI_Comm c) { MPI_Comm_free(&c); });
///   UniqueHandle<CuEvent> ready(make_event(), [&api](CuEvent e) { api.CuEventDestroy(e); });

#include <functional>
#include <utility>

namespace llmrec {

template <class H>
class UniqueHandle {
 public:
  UniqueHandle() = default;
  UniqueHandle(H handle, std::function<void(H)> free)
      : handle_(handle), free_(std::move(free)), owned_(true) {}
  ~UniqueHandle() { reset(); }
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  UniqueHandle(UniqueHandle&& o) noexcept { *this = std::move(o); }
  UniqueHandle& operator=(UniqueHandle&& o) noexcept {
    if (this != &o) {
      reset();
      handle_ = o.handle_;
      free_ = std::move(o.free_);
      owned_ = std::exchange(o.owned_, false);
    }
    return *this;
  }

  H get() const { return handle_; }
  bool owns() const { return owned_; }
  /// Frees the handle now (once).
  void reset() {
    if (owned_) {
      owned_ = false;
      free_(handle_);
    }
  }
  /// Stops owning the handle and returns it, unfreed.
  H release() {
    owned_ = false;
    return handle_;
  }

 private:
  H handle_{};
  std::function<void(H)> free_;
  bool owned_ = false;
};

}  // namespace llmrec
