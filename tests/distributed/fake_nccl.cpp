/// A stand-in for libnccl and libcuda, used only by the tests: it lets the
/// NCCL communicator backend (which resolves the functions of
/// distributed/nccl_api.h with dlopen/dlsym) run on CPU-only machines, one
/// process per rank under mpirun. Point $LLMREC_NCCL_LIBRARY and
/// $LLMREC_CUDA_DRIVER_LIBRARY at this library.
///
/// How it works: "device memory" is host memory. A communicator is a POSIX
/// shared memory segment (named after the unique id, unlinked once every rank
/// has attached) holding a cross-process barrier and one 4 MiB slot per rank.
/// Collectives are only enqueued by the calling thread, like real NCCL; one
/// process-wide worker thread (the "device") runs them in FIFO order, in
/// chunks of the slot size: copy in, barrier, read every slot, barrier.
/// Events complete when every operation enqueued before cuEventRecord has run.
///
/// Fault injection: LLMREC_FAKE_NCCL_STALL=R:K (read when a communicator is
/// created) makes the process whose communicator rank is R hang forever in
/// its K-th (zero-based) collective on that communicator, so its events
/// never complete and its peers wait in the barrier. LLMREC_FAKE_CUDA_DEVICES
/// sets the device count (default 1).

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <type_traits>

#include "distributed/nccl_api.h"

namespace llmrec::nccl {

// The opaque handle types of nccl_api.h, defined here.
struct ncclComm;
struct CUctx_st {
  char unused;
};
struct CUstream_st {
  unsigned flags = 0;
};
struct CUevent_st {
  std::uint64_t ticket = 0;  // complete once `completed` reaches it
};

}  // namespace llmrec::nccl

namespace {

using namespace llmrec::nccl;
using Counter = std::atomic<std::uint64_t>;
static_assert(Counter::is_always_lock_free, "the cross-process barrier needs lock-free 64-bit atomics");

// ncclResult_t / CUresult codes used here.
constexpr Result kInternalError = 3;
constexpr Result kSystemError = 2;
constexpr Result kInvalidArgument = 4;
constexpr Result kInvalidUsage = 5;
constexpr CuResult kCuInvalidValue = 1;
constexpr CuResult kCuInvalidDevice = 101;
constexpr CuResult kCuInvalidHandle = 400;
constexpr CuResult kCuInvalidContext = 201;

constexpr std::size_t kSlotBytes = std::size_t{4} << 20;
constexpr std::size_t kPageBytes = 4096;
constexpr int kMaxRanks = 1024;

// ---------------------------------------------------------------------------
// Shared memory segment: Header, then nranks attach flags, then (page
// aligned) nranks slots of kSlotBytes. A new segment is all zeros, which is
// the initial state of every counter.

struct Header {
  Counter nranks;      // set by the first rank to attach
  Counter arrived;     // barrier: ranks arrived in the current generation
  Counter generation;  // barrier: bumped by the last rank to arrive
};

/// The nranks attach flags after the Header: 1 once that rank attached.
Counter& attached(Header* h, int rank) {
  return reinterpret_cast<Counter*>(h + 1)[rank];
}

std::size_t header_bytes(int nranks) {
  const std::size_t bytes = sizeof(Header) + sizeof(Counter) * static_cast<std::size_t>(nranks);
  return (bytes + kPageBytes - 1) / kPageBytes * kPageBytes;
}

/// One communicator's state. Kept alive by the handle and by every queued
/// operation, so ncclCommAbort can let go of it while the device still runs.
struct State {
  int rank = 0;
  int nranks = 0;
  void* base = nullptr;
  std::size_t bytes = 0;
  long long stall_at = -1;     // LLMREC_FAKE_NCCL_STALL for this rank, else -1
  std::uint64_t executed = 0;  // collectives this communicator ran (for the stall)
  std::atomic<bool> aborted{false};

  Header* header() const { return static_cast<Header*>(base); }
  std::byte* slot(int r) const {
    return static_cast<std::byte*>(base) + header_bytes(nranks) + kSlotBytes * static_cast<std::size_t>(r);
  }
  ~State() {
    if (base != nullptr) munmap(base, bytes);
  }
};

/// Waits until every rank of the communicator arrived. Spins briefly, then
/// sleeps, so a rank whose peer hangs does not burn a core. Returns false
/// (leaving the barrier broken) when `abort_flag` is set meanwhile.
bool barrier(Header* h, std::uint64_t nranks, const std::atomic<bool>* abort_flag) {
  const std::uint64_t gen = h->generation.load(std::memory_order_acquire);
  if (h->arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == nranks) {
    h->arrived.store(0, std::memory_order_relaxed);
    h->generation.fetch_add(1, std::memory_order_release);
    return true;
  }
  for (int spin = 0; h->generation.load(std::memory_order_acquire) == gen; ++spin) {
    if (abort_flag != nullptr && abort_flag->load(std::memory_order_relaxed)) return false;
    if (spin < 200) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(spin < 2000 ? 50 : 200));
    }
  }
  return true;
}

// ---------------------------------------------------------------------------
// Element types and reductions.

std::size_t element_bytes(int datatype) {
  switch (datatype) {
    case kInt8:
    case kUint8: return 1;
    case kFloat16:
    case kBfloat16: return 2;
    case kInt32:
    case kUint32:
    case kFloat32: return 4;
    case kInt64:
    case kUint64:
    case kFloat64: return 8;
    default: return 0;
  }
}

bool valid_op(int op) {
  return op >= kSum && op <= kAvg;
}

std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu;
  const std::uint32_t mant = h & 0x3FFu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_float(sign | 0x7F800000u | (mant << 13));
  return bits_float(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

std::uint16_t float_to_half(float f) {  // round to nearest even
  const std::uint32_t x = float_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t absx = x & 0x7FFFFFFFu;
  if (absx >= 0x7F800000u)
    return static_cast<std::uint16_t>(sign | 0x7C00u | (absx > 0x7F800000u ? 0x200u : 0u));
  if (absx >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520: infinity
  if (absx < 0x38800000u) {  // below 2^-14: subnormal (exact scaling, then rint)
    const auto m = static_cast<std::uint32_t>(std::nearbyint(bits_float(absx) * 16777216.0f));
    return static_cast<std::uint16_t>(sign | m);
  }
  std::uint32_t h = (((absx >> 23) - 127 + 15) << 10) | ((absx & 0x7FFFFFu) >> 13);
  const std::uint32_t rest = absx & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<std::uint16_t>(sign | h);
}

float bf16_to_float(std::uint16_t b) {
  return bits_float(static_cast<std::uint32_t>(b) << 16);
}
std::uint16_t float_to_bf16(float f) {  // round to nearest even
  std::uint32_t u = float_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

// Storage type S, compute type C; round() stores and reloads so 16-bit
// floats round after every step, like the real reduction kernels.
template <class T>
struct Native {
  using S = T;
  using C = T;
  static C load(S v) { return v; }
  static S store(C v) { return v; }
};
struct Half {
  using S = std::uint16_t;
  using C = float;
  static C load(S v) { return half_to_float(v); }
  static S store(C v) { return float_to_half(v); }
};
struct Bf16 {
  using S = std::uint16_t;
  using C = float;
  static C load(S v) { return bf16_to_float(v); }
  static S store(C v) { return float_to_bf16(v); }
};

template <class C>
C combine(int op, C a, C b) {
  if constexpr (std::is_integral_v<C>) {
    using U = std::make_unsigned_t<C>;  // wrap around instead of signed overflow
    switch (op) {
      case kProd: return static_cast<C>(static_cast<U>(static_cast<U>(a) * static_cast<U>(b)));
      case kMax: return std::max(a, b);
      case kMin: return std::min(a, b);
      default: return static_cast<C>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));  // sum, avg
    }
  } else {
    switch (op) {
      case kProd: return a * b;
      case kMax: return std::max(a, b);
      case kMin: return std::min(a, b);
      default: return a + b;
    }
  }
}

/// out[i] = slot0[i] op slot1[i] op ... (rank order); avg divides at the end.
template <class K>
void reduce(void* out, const State& st, std::size_t first, std::size_t count, int op) {
  using S = typename K::S;
  using C = typename K::C;
  for (std::size_t i = 0; i < count; ++i) {
    S v;
    std::memcpy(&v, st.slot(0) + (first + i) * sizeof(S), sizeof(S));
    C acc = K::load(v);
    for (int r = 1; r < st.nranks; ++r) {
      std::memcpy(&v, st.slot(r) + (first + i) * sizeof(S), sizeof(S));
      acc = K::load(K::store(combine<C>(op, acc, K::load(v))));
    }
    if (op == kAvg) acc = static_cast<C>(acc / static_cast<C>(st.nranks));
    const S result = K::store(acc);
    std::memcpy(static_cast<std::byte*>(out) + i * sizeof(S), &result, sizeof(S));
  }
}

using ReduceFn = void (*)(void*, const State&, std::size_t, std::size_t, int);
ReduceFn reducer(int datatype) {
  switch (datatype) {
    case kInt8: return reduce<Native<std::int8_t>>;
    case kUint8: return reduce<Native<std::uint8_t>>;
    case kInt32: return reduce<Native<std::int32_t>>;
    case kUint32: return reduce<Native<std::uint32_t>>;
    case kInt64: return reduce<Native<std::int64_t>>;
    case kUint64: return reduce<Native<std::uint64_t>>;
    case kFloat16: return reduce<Half>;
    case kFloat32: return reduce<Native<float>>;
    case kFloat64: return reduce<Native<double>>;
    case kBfloat16: return reduce<Bf16>;
    default: return nullptr;
  }
}

// ---------------------------------------------------------------------------
// The device queue.

enum class Kind { kAllReduce, kBroadcast, kAllGather };

struct Op {
  Kind kind;
  std::shared_ptr<State> st;
  const void* send;
  void* recv;
  std::size_t count;  // elements (AllGather: per rank)
  int datatype;
  int op;    // AllReduce
  int root;  // Broadcast
};

/// Process-wide state. Allocated once and never freed, so the detached worker
/// can outlive static destruction at exit.
struct Global {
  std::mutex mu;
  std::condition_variable work;  // queue got an item
  std::condition_variable done;  // `completed`/`running` moved or the device stalled
  std::deque<Op> queue;
  Counter enqueued{0};
  Counter completed{0};
  std::atomic<bool> stalled{false};
  std::uint64_t executed = 0;      // collectives run, for the stall
  const State* running = nullptr;  // communicator of the collective running now
  bool worker_started = false;
  std::set<const ncclComm*> comms;  // live handles
  std::set<const CUstream_st*> streams;
  std::set<const CUevent_st*> events;
  std::map<CuDevice, int> context_refs;  // primary context retains minus releases
};

Global& g() {
  static Global* global = new Global;
  return *global;
}

/// Runs one collective; returns early when its communicator is aborted.
void execute(const Op& o) {
  State& st = *o.st;
  Header* h = st.header();
  const auto n = static_cast<std::uint64_t>(st.nranks);
  const std::atomic<bool>* abort_flag = &st.aborted;
  const std::size_t es = element_bytes(o.datatype);
  const std::size_t per_chunk = kSlotBytes / es;
  const auto* send = static_cast<const std::byte*>(o.send);
  auto* recv = static_cast<std::byte*>(o.recv);

  for (std::size_t first = 0; first < o.count; first += per_chunk) {
    const std::size_t len = std::min(per_chunk, o.count - first);
    const std::size_t bytes = len * es;
    switch (o.kind) {
      case Kind::kAllReduce:
        std::memcpy(st.slot(st.rank), send + first * es, bytes);
        if (!barrier(h, n, abort_flag)) return;
        reducer(o.datatype)(recv + first * es, st, 0, len, o.op);
        break;
      case Kind::kBroadcast:
        if (st.rank == o.root) std::memcpy(st.slot(o.root), send + first * es, bytes);
        if (!barrier(h, n, abort_flag)) return;
        std::memcpy(recv + first * es, st.slot(o.root), bytes);
        break;
      case Kind::kAllGather:
        std::memcpy(st.slot(st.rank), send + first * es, bytes);
        if (!barrier(h, n, abort_flag)) return;
        for (int r = 0; r < st.nranks; ++r) {
          std::memcpy(recv + (static_cast<std::size_t>(r) * o.count + first) * es, st.slot(r), bytes);
        }
        break;
    }
    if (!barrier(h, n, abort_flag)) return;  // nobody overwrites a slot still being read
  }
}

[[noreturn]] void worker() {
  Global& gl = g();
  for (;;) {
    Op o;
    bool run = false;
    {
      std::unique_lock<std::mutex> lock(gl.mu);
      gl.work.wait(lock, [&] { return !gl.queue.empty(); });
      o = std::move(gl.queue.front());
      gl.queue.pop_front();
      // Decided under the lock, so ncclCommAbort either sees this operation
      // as running (and waits for it to let go) or it is skipped.
      run = !o.st->aborted.load();
      if (run) {
        const std::uint64_t index = o.st->executed++;
        if (o.st->stall_at >= 0 && index == static_cast<std::uint64_t>(o.st->stall_at)) {
          std::fprintf(stderr, "fake NCCL: rank %d hangs in collective %llu (LLMREC_FAKE_NCCL_STALL)\n",
                       o.st->rank, static_cast<unsigned long long>(index));
          gl.stalled = true;
          lock.unlock();
          gl.done.notify_all();
          for (;;) std::this_thread::sleep_for(std::chrono::milliseconds(100));  // touches no buffer
        }
        gl.running = o.st.get();
      }
    }
    if (run) execute(o);
    o.st.reset();
    {
      std::lock_guard<std::mutex> lock(gl.mu);
      gl.running = nullptr;
      gl.completed.fetch_add(1);
    }
    gl.done.notify_all();
  }
}

Result enqueue(Op o, ncclComm* comm);

long long stall_for_rank(int rank) {
  const char* spec = std::getenv("LLMREC_FAKE_NCCL_STALL");
  if (spec == nullptr || *spec == '\0') return -1;
  char* end = nullptr;
  errno = 0;
  const long r = std::strtol(spec, &end, 10);
  if (errno != 0 || end == spec || *end != ':' || r < 0) return -1;
  const char* k_begin = end + 1;
  const long long k = std::strtoll(k_begin, &end, 10);
  if (errno != 0 || end == k_begin || *end != '\0' || k < 0) {
    std::fprintf(stderr, "fake NCCL: ignoring LLMREC_FAKE_NCCL_STALL=%s (expected R:K)\n", spec);
    return -1;
  }
  return r == rank ? k : -1;
}

const char* shm_name_error(const UniqueId& id) {
  const void* nul = std::memchr(id.internal, '\0', sizeof id.internal);
  if (nul == nullptr || id.internal[0] == '\0') return "not a NUL-terminated name";
  if (std::strchr(id.internal, '/') != nullptr) return "contains '/'";
  return nullptr;
}

}  // namespace

namespace llmrec::nccl {
struct ncclComm {
  std::shared_ptr<State> st;
};
}  // namespace llmrec::nccl

namespace {

Result enqueue(Op o, ncclComm* comm) {
  Global& gl = g();
  {
    std::lock_guard<std::mutex> lock(gl.mu);
    if (comm == nullptr || gl.comms.count(comm) == 0) return kInvalidArgument;
    o.st = comm->st;
    if (!gl.worker_started) {
      try {
        std::thread(worker).detach();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "fake NCCL: cannot start the device thread: %s\n", e.what());
        return kSystemError;
      }
      gl.worker_started = true;
    }
    gl.queue.push_back(std::move(o));
    gl.enqueued.fetch_add(1);
  }
  gl.work.notify_one();
  return kSuccess;
}

bool live_stream(CuStream stream) {  // the null (legacy default) stream is fine
  return stream == nullptr || g().streams.count(stream) != 0;
}

int device_count() {
  const char* env = std::getenv("LLMREC_FAKE_CUDA_DEVICES");
  if (env == nullptr || *env == '\0') return 1;
  char* end = nullptr;
  const long n = std::strtol(env, &end, 10);
  if (end == env || *end != '\0' || n < 0) return 1;
  return static_cast<int>(std::min(n, 1024L));
}

}  // namespace

#define LLMREC_FAKE_EXPORT extern "C" __attribute__((visibility("default")))

// The stand-ins carry the real libraries' symbol names.
// NOLINTBEGIN(readability-identifier-naming)

// ---- NCCL ----

LLMREC_FAKE_EXPORT Result ncclGetVersion(int* version) {
  if (version == nullptr) return kInvalidArgument;
  *version = 21803;  // 2.18.3
  return kSuccess;
}

LLMREC_FAKE_EXPORT Result ncclGetUniqueId(UniqueId* id) {
  if (id == nullptr) return kInvalidArgument;
  static std::atomic<unsigned> calls{0};
  std::random_device device;
  std::mt19937_64 rng(
      (static_cast<std::uint64_t>(device()) << 32) ^ device() ^
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
      calls.fetch_add(1));
  std::memset(id->internal, 0, sizeof id->internal);
  std::snprintf(id->internal, sizeof id->internal, "llmrec-fake-%ld-%016llx", static_cast<long>(getpid()),
                static_cast<unsigned long long>(rng()));
  return kSuccess;
}

LLMREC_FAKE_EXPORT Result ncclCommInitRank(Comm* comm, int nranks, UniqueId id, int rank) {
  if (comm == nullptr || nranks < 1 || nranks > kMaxRanks || rank < 0 || rank >= nranks)
    return kInvalidArgument;
  *comm = nullptr;
  if (const char* why = shm_name_error(id)) {
    std::fprintf(stderr, "fake NCCL: bad unique id (%s)\n", why);
    return kInvalidArgument;
  }
  const std::string name = std::string("/") + id.internal;
  auto st = std::make_shared<State>();
  st->rank = rank;
  st->nranks = nranks;
  st->bytes = header_bytes(nranks) + kSlotBytes * static_cast<std::size_t>(nranks);
  st->stall_at = stall_for_rank(rank);

  const int fd = shm_open(name.c_str(), O_RDWR | O_CREAT, 0600);
  if (fd < 0) {
    std::fprintf(stderr, "fake NCCL: shm_open(%s): %s\n", name.c_str(), std::strerror(errno));
    return kSystemError;
  }
  struct stat info {};
  bool ok = fstat(fd, &info) == 0;
  if (ok && static_cast<std::size_t>(info.st_size) < st->bytes) {  // only ever grow it
    ok = ftruncate(fd, static_cast<off_t>(st->bytes)) == 0;
  }
  if (ok) {
    void* base = mmap(nullptr, st->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base != MAP_FAILED) st->base = base;
    ok = base != MAP_FAILED;
  }
  if (!ok) std::fprintf(stderr, "fake NCCL: mapping %s: %s\n", name.c_str(), std::strerror(errno));
  close(fd);
  if (!ok) {
    shm_unlink(name.c_str());
    return kSystemError;
  }

  Header* h = st->header();
  std::uint64_t expected = 0;
  if (!h->nranks.compare_exchange_strong(expected, static_cast<std::uint64_t>(nranks)) &&
      expected != static_cast<std::uint64_t>(nranks)) {
    std::fprintf(stderr, "fake NCCL: rank %d says %d ranks, another rank said %llu\n", rank, nranks,
                 static_cast<unsigned long long>(expected));
    shm_unlink(name.c_str());
    return kInvalidUsage;
  }
  if (attached(h, rank).exchange(1) != 0) {
    std::fprintf(stderr, "fake NCCL: rank %d joined communicator %s twice\n", rank, id.internal);
    shm_unlink(name.c_str());
    return kInvalidUsage;
  }
  // Everyone has mapped the segment after the first barrier; the second one
  // makes sure the name is gone from /dev/shm on every rank's return.
  barrier(h, static_cast<std::uint64_t>(nranks), nullptr);
  if (rank == 0) shm_unlink(name.c_str());
  barrier(h, static_cast<std::uint64_t>(nranks), nullptr);

  auto* handle = new ncclComm{std::move(st)};
  {
    std::lock_guard<std::mutex> lock(g().mu);
    g().comms.insert(handle);
  }
  *comm = handle;
  return kSuccess;
}

/// Unregisters and frees a live handle (lock held), keeping its state alive
/// for the caller; null for a null or unknown handle.
std::shared_ptr<State> take_comm(Global& gl, Comm comm) {
  if (comm == nullptr || gl.comms.count(comm) == 0) return nullptr;
  gl.comms.erase(comm);
  std::shared_ptr<State> st = std::move(comm->st);
  delete comm;
  return st;
}

LLMREC_FAKE_EXPORT Result ncclCommDestroy(Comm comm) {
  Global& gl = g();
  std::shared_ptr<State> st;
  {
    std::unique_lock<std::mutex> lock(gl.mu);
    st = take_comm(gl, comm);
    if (!st) return kInvalidArgument;
    const std::uint64_t target = gl.enqueued.load();  // like a stream sync first
    gl.done.wait(lock, [&] { return gl.completed.load() >= target || gl.stalled.load(); });
  }
  return kSuccess;  // `st` unmaps the segment unless a stalled operation holds it
}

LLMREC_FAKE_EXPORT Result ncclCommAbort(Comm comm) {
  Global& gl = g();
  std::shared_ptr<State> st;
  {
    std::unique_lock<std::mutex> lock(gl.mu);
    st = take_comm(gl, comm);
    if (!st) return kInvalidArgument;
    // Queued operations are skipped; a running one gives up at its next
    // barrier (within a chunk and a sleep). As with NCCL, the buffers are
    // the caller's again once this returns; a stalled device touches none.
    st->aborted = true;
    gl.done.wait(lock, [&] { return gl.running != st.get(); });
  }
  return kSuccess;
}

LLMREC_FAKE_EXPORT Result ncclCommGetAsyncError(Comm comm, Result* async_error) {
  if (async_error == nullptr) return kInvalidArgument;
  std::lock_guard<std::mutex> lock(g().mu);
  if (comm == nullptr || g().comms.count(comm) == 0) return kInvalidArgument;
  *async_error = kSuccess;
  return kSuccess;
}

LLMREC_FAKE_EXPORT const char* ncclGetErrorString(Result result) {
  switch (result) {
    case 0: return "no error";
    case 1: return "unhandled cuda error (fake NCCL)";
    case kSystemError: return "unhandled system error (fake NCCL: shared memory)";
    case kInternalError: return "internal error (fake NCCL)";
    case kInvalidArgument: return "invalid argument";
    case kInvalidUsage: return "invalid usage";
    case 6: return "remote process exited or there was a network error";
    case kInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

LLMREC_FAKE_EXPORT Result ncclAllReduce(const void* send, void* recv, std::size_t count, int datatype, int op,
                                        Comm comm, CuStream stream) {
  if (element_bytes(datatype) == 0 || !valid_op(op)) return kInvalidArgument;
  if (count > 0 && (send == nullptr || recv == nullptr)) return kInvalidArgument;
  return enqueue(Op{Kind::kAllReduce, nullptr, send, recv, count, datatype, op, 0}, comm);
}

LLMREC_FAKE_EXPORT Result ncclBroadcast(const void* send, void* recv, std::size_t count, int datatype,
                                        int root, Comm comm, CuStream stream) {
  if (element_bytes(datatype) == 0 || comm == nullptr) return kInvalidArgument;
  {
    std::lock_guard<std::mutex> lock(g().mu);
    if (g().comms.count(comm) == 0) return kInvalidArgument;
    if (root < 0 || root >= comm->st->nranks) return kInvalidArgument;
    if (count > 0 && (recv == nullptr || (comm->st->rank == root && send == nullptr)))
      return kInvalidArgument;
  }
  return enqueue(Op{Kind::kBroadcast, nullptr, send, recv, count, datatype, 0, root}, comm);
}

LLMREC_FAKE_EXPORT Result ncclAllGather(const void* send, void* recv, std::size_t send_count, int datatype,
                                        Comm comm, CuStream stream) {
  if (element_bytes(datatype) == 0) return kInvalidArgument;
  if (send_count > 0 && (send == nullptr || recv == nullptr)) return kInvalidArgument;
  return enqueue(Op{Kind::kAllGather, nullptr, send, recv, send_count, datatype, 0, 0}, comm);
}

namespace {
thread_local int group_depth = 0;
}

LLMREC_FAKE_EXPORT Result ncclGroupStart() {
  ++group_depth;
  return kSuccess;
}

LLMREC_FAKE_EXPORT Result ncclGroupEnd() {
  if (group_depth == 0) return kInvalidUsage;  // as NCCL: not in a group call
  --group_depth;
  return kSuccess;
}

// ---- CUDA driver ----

LLMREC_FAKE_EXPORT CuResult cuInit(unsigned flags) {
  return flags == 0 ? kCuSuccess : kCuInvalidValue;
}

LLMREC_FAKE_EXPORT CuResult cuDeviceGetCount(int* count) {
  if (count == nullptr) return kCuInvalidValue;
  *count = device_count();
  return kCuSuccess;
}

LLMREC_FAKE_EXPORT CuResult cuDeviceGet(CuDevice* device, int ordinal) {
  if (device == nullptr) return kCuInvalidValue;
  if (ordinal < 0 || ordinal >= device_count()) return kCuInvalidDevice;
  *device = ordinal;
  return kCuSuccess;
}

LLMREC_FAKE_EXPORT CuResult cuDevicePrimaryCtxRetain(CuContext* ctx, CuDevice device) {
  static CUctx_st contexts[1024];
  if (ctx == nullptr) return kCuInvalidValue;
  if (device < 0 || device >= device_count()) return kCuInvalidDevice;
  std::lock_guard<std::mutex> lock(g().mu);
  ++g().context_refs[device];
  *ctx = &contexts[device];
  return kCuSuccess;
}

LLMREC_FAKE_EXPORT CuResult cuDevicePrimaryCtxRelease_v2(CuDevice device) {
  std::lock_guard<std::mutex> lock(g().mu);
  auto it = g().context_refs.find(device);
  if (it == g().context_refs.end() || it->second == 0) return kCuInvalidContext;
  --it->second;
  return kCuSuccess;
}

/// Test hook: handles created and not yet freed (NCCL communicators,
/// streams, events, primary-context references).
LLMREC_FAKE_EXPORT int llmrec_fake_live_handles() {
  std::lock_guard<std::mutex> lock(g().mu);
  int refs = 0;
  for (const auto& [device, n] : g().context_refs) refs += n;
  return static_cast<int>(g().comms.size() + g().streams.size() + g().events.size()) + refs;
}

// Streams and events: heap objects registered as live, so that a stale or
// foreign handle is an error code rather than a crash.
template <class T, class Make>
CuResult create_handle(T** out, std::set<const T*>& live, Make make) {
  if (out == nullptr) return kCuInvalidValue;
  T* h = make();
  std::lock_guard<std::mutex> lock(g().mu);
  live.insert(h);
  *out = h;
  return kCuSuccess;
}

template <class T>
CuResult destroy_handle(T* h, std::set<const T*>& live) {
  std::lock_guard<std::mutex> lock(g().mu);
  if (h == nullptr || live.erase(h) == 0) return kCuInvalidHandle;
  delete h;
  return kCuSuccess;
}

LLMREC_FAKE_EXPORT CuResult cuCtxSetCurrent(CuContext ctx) {
  return kCuSuccess;
}

LLMREC_FAKE_EXPORT CuResult cuStreamCreate(CuStream* stream, unsigned flags) {
  return create_handle(stream, g().streams, [flags] { return new CUstream_st{flags}; });
}

LLMREC_FAKE_EXPORT CuResult cuStreamDestroy_v2(CuStream stream) {
  return destroy_handle(stream, g().streams);
}

LLMREC_FAKE_EXPORT CuResult cuEventCreate(CuEvent* event, unsigned /*flags*/) {
  return create_handle(event, g().events, [] { return new CUevent_st{}; });  // never recorded: complete
}

LLMREC_FAKE_EXPORT CuResult cuEventDestroy_v2(CuEvent event) {
  return destroy_handle(event, g().events);
}

LLMREC_FAKE_EXPORT CuResult cuEventRecord(CuEvent event, CuStream stream) {
  std::lock_guard<std::mutex> lock(g().mu);
  if (event == nullptr || g().events.count(event) == 0 || !live_stream(stream)) return kCuInvalidHandle;
  event->ticket = g().enqueued.load();  // everything enqueued so far, whatever the stream
  return kCuSuccess;
}

LLMREC_FAKE_EXPORT CuResult cuEventQuery(CuEvent event) {
  std::lock_guard<std::mutex> lock(g().mu);
  if (event == nullptr || g().events.count(event) == 0) return kCuInvalidHandle;
  return g().completed.load() >= event->ticket ? kCuSuccess : kCuNotReady;
}

LLMREC_FAKE_EXPORT CuResult cuStreamWaitEvent(CuStream stream, CuEvent event, unsigned flags) {
  std::lock_guard<std::mutex> lock(g().mu);
  if (event == nullptr || g().events.count(event) == 0 || !live_stream(stream)) return kCuInvalidHandle;
  return kCuSuccess;  // one FIFO device queue orders everything already
}

LLMREC_FAKE_EXPORT CuResult cuGetErrorString(CuResult result, const char** text) {
  if (text == nullptr) return kCuInvalidValue;
  switch (result) {
    case kCuSuccess: *text = "no error"; break;
    case kCuInvalidValue: *text = "invalid argument"; break;
    case 2: *text = "out of memory"; break;
    case 3: *text = "initialization error"; break;
    case 100: *text = "no CUDA-capable device is detected"; break;
    case kCuInvalidDevice: *text = "invalid device ordinal"; break;
    case 201: *text = "invalid device context"; break;
    case kCuInvalidHandle: *text = "invalid resource handle"; break;
    case kCuNotReady: *text = "device not ready"; break;
    case 999: *text = "unknown error"; break;
    default: *text = nullptr; return kCuInvalidValue;  // as the real driver does
  }
  return kCuSuccess;
}

// NOLINTEND(readability-identifier-naming)

// The exported signatures are exactly the ones nccl_api.h resolves.
// `field` names a member, `fn` a function: neither can be parenthesised.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define LLMREC_FAKE_SAME(field, fn) \
  static_assert(std::is_same_v<decltype(Api::field), decltype(&fn)>, #fn " does not match Api::" #field)
// NOLINTEND(bugprone-macro-parentheses)
LLMREC_FAKE_SAME(GetVersion, ncclGetVersion);
LLMREC_FAKE_SAME(GetUniqueId, ncclGetUniqueId);
LLMREC_FAKE_SAME(CommInitRank, ncclCommInitRank);
LLMREC_FAKE_SAME(CommDestroy, ncclCommDestroy);
LLMREC_FAKE_SAME(CommAbort, ncclCommAbort);
LLMREC_FAKE_SAME(CommGetAsyncError, ncclCommGetAsyncError);
LLMREC_FAKE_SAME(GetErrorString, ncclGetErrorString);
LLMREC_FAKE_SAME(AllReduce, ncclAllReduce);
LLMREC_FAKE_SAME(Broadcast, ncclBroadcast);
LLMREC_FAKE_SAME(AllGather, ncclAllGather);
LLMREC_FAKE_SAME(GroupStart, ncclGroupStart);
LLMREC_FAKE_SAME(GroupEnd, ncclGroupEnd);
LLMREC_FAKE_SAME(CuInit, cuInit);
LLMREC_FAKE_SAME(CuDeviceGetCount, cuDeviceGetCount);
LLMREC_FAKE_SAME(CuDeviceGet, cuDeviceGet);
LLMREC_FAKE_SAME(CuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain);
LLMREC_FAKE_SAME(CuDevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease_v2);
LLMREC_FAKE_SAME(CuCtxSetCurrent, cuCtxSetCurrent);
LLMREC_FAKE_SAME(CuStreamCreate, cuStreamCreate);
LLMREC_FAKE_SAME(CuStreamDestroy, cuStreamDestroy_v2);
LLMREC_FAKE_SAME(CuEventCreate, cuEventCreate);
LLMREC_FAKE_SAME(CuEventDestroy, cuEventDestroy_v2);
LLMREC_FAKE_SAME(CuEventRecord, cuEventRecord);
LLMREC_FAKE_SAME(CuEventQuery, cuEventQuery);
LLMREC_FAKE_SAME(CuStreamWaitEvent, cuStreamWaitEvent);
LLMREC_FAKE_SAME(CuGetErrorString, cuGetErrorString);
