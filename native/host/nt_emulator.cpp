// nt_emulator.cpp — runs a CUDA grid on the CPU for the host build of the kernels (see nt_host.h).
//
// Blocks are spread over a few OS threads (workers). A worker runs one block at a time: each CUDA thread of the
// block is a ucontext fiber with its own small stack, and a round-robin scheduler resumes every runnable fiber
// until it finishes or waits at a barrier. When no fiber can run, the scheduler releases the barriers that are
// complete (a warp whose named lanes all wait at __syncwarp / a shuffle; the whole block at __syncthreads). If
// none is complete the kernel is wrong (a barrier reached by only some threads, a shuffle naming an exited lane)
// and the launch fails with a message, where a GPU would hang or silently compute garbage.
#include "../kernels/nt_host.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace nt_host {

thread_local ThreadState* tls_thread = nullptr;
thread_local BlockState tls_block = {};

namespace {

constexpr int kInvalidConfig = 1;    // the launch itself is malformed (what CUDA calls INVALID_VALUE)
constexpr int kKernelFault = 2;      // the kernel broke a rule of the execution model while running
constexpr int kOutOfResources = 3;   // the emulator could not get memory for stacks

constexpr std::size_t kStackBytes = 64 * 1024;  // per CUDA thread; kernels keep little on the stack
constexpr unsigned kMaxDynamicShared = 48 * 1024;  // more needs cuFuncSetAttribute on a GPU; we never ask for it

enum class State : unsigned char { Ready, AtBlockBarrier, AtWarpBarrier, Done };

// A cp.async of this thread, not yet performed: it lands when a cp.async.wait_group covers its group.
struct AsyncCopy {
  void* shared;
  const void* global;
  unsigned bytes;
  bool valid;      // false: zero-fill, read nothing
  unsigned group;  // the commit count when it was issued
};

struct Fiber {
  ucontext_t context;
  ThreadState thread;
  State state;
  unsigned warp_mask;  // the mask passed to the __syncwarp / shuffle it waits at
  std::vector<AsyncCopy> copies;
  unsigned commits;    // cp.async.commit_group calls so far
};

// One worker's machinery, reused for every block it runs.
struct BlockRunner {
  Invoker invoker = nullptr;
  void** args = nullptr;
  unsigned threads = 0, warps = 0;
  std::vector<Fiber> fibers;
  std::vector<std::uint64_t> slots;  // warp_exchange mailboxes, 32 per warp
  std::vector<unsigned char> dynamic_shared;
  unsigned char* stacks = nullptr;
  std::size_t stacks_bytes = 0;
  ucontext_t scheduler;
  Fiber* current = nullptr;
  std::string error;

  ~BlockRunner() {
    if (stacks) munmap(stacks, stacks_bytes);
  }

  // Stacks with a PROT_NONE guard page below each, so an overflow faults instead of corrupting a neighbour.
  bool allocate(unsigned n, unsigned shared_bytes) {
    threads = n;
    warps = (n + 31) / 32;
    fibers.resize(n);
    slots.assign(std::size_t(warps) * 32, 0);
    dynamic_shared.resize(std::max(1u, shared_bytes) + 64);
    const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
    const std::size_t stride = kStackBytes + page;
    stacks_bytes = stride * n;
    void* p = mmap(nullptr, stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      stacks = nullptr;
      return false;
    }
    stacks = static_cast<unsigned char*>(p);
    for (unsigned i = 0; i < n; ++i) mprotect(stacks + i * stride, page, PROT_NONE);
    return true;
  }

  unsigned char* stack_of(unsigned i) const {
    const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
    return stacks + i * (kStackBytes + page) + page;
  }
};

thread_local BlockRunner* tls_runner = nullptr;

void fiber_main() {
  BlockRunner* r = tls_runner;
  r->invoker(r->args);
  r->current->state = State::Done;
  // returning resumes uc_link: the scheduler
}

// Park the running fiber and go back to the scheduler.
void park(State state, unsigned mask) {
  BlockRunner* r = tls_runner;
  Fiber* f = r->current;
  f->state = state;
  f->warp_mask = mask;
  swapcontext(&f->context, &r->scheduler);
  // resumed: the scheduler has set tls_thread and current back to this fiber
}

std::string block_name(const BlockState& b) {
  return "block (" + std::to_string(b.block_idx.x) + "," + std::to_string(b.block_idx.y) + "," +
         std::to_string(b.block_idx.z) + ")";
}

// Releases the warps whose named lanes all wait at a warp barrier. Returns false and sets r.error when a waiting
// warp can never be released.
bool release_warps(BlockRunner& r, bool& released) {
  for (unsigned w = 0; w < r.warps; ++w) {
    const unsigned first = w * 32, count = std::min(32u, r.threads - first);
    const unsigned exists = count == 32 ? 0xffffffffu : ((1u << count) - 1);
    unsigned waiting = 0, mask = 0;
    bool mixed = false;
    for (unsigned l = 0; l < count; ++l) {
      const Fiber& f = r.fibers[first + l];
      if (f.state != State::AtWarpBarrier) continue;
      if (waiting && f.warp_mask != mask) mixed = true;
      mask = f.warp_mask;
      waiting |= 1u << l;
    }
    if (!waiting) continue;
    const std::string where = block_name(tls_block) + " warp " + std::to_string(w);
    if (mixed) {
      r.error = where + ": lanes wait at __syncwarp/shuffles with different masks";
      return false;
    }
    const unsigned named = mask & exists;
    if ((waiting & ~named) != 0) {
      r.error = where + ": a lane waits at __syncwarp/shuffle with a mask that leaves itself out";
      return false;
    }
    if ((waiting & named) == named) {
      for (unsigned l = 0; l < count; ++l)
        if (waiting & (1u << l)) r.fibers[first + l].state = State::Ready;
      released = true;
      continue;
    }
    // Some named lane is elsewhere: exited, or at __syncthreads. Nothing can move it any more.
    for (unsigned l = 0; l < count; ++l) {
      if (!(named & (1u << l)) || (waiting & (1u << l))) continue;
      const State s = r.fibers[first + l].state;
      r.error = where + ": lane " + std::to_string(l) +
                (s == State::Done ? " has exited but is named in the mask of a __syncwarp/shuffle"
                                  : " waits at __syncthreads while other lanes wait at a __syncwarp/shuffle naming it");
      return false;
    }
  }
  return true;
}

void run_block(BlockRunner& r, uint3 block_idx) {
  tls_block.block_idx = block_idx;
  tls_block.dynamic_shared = r.dynamic_shared.data();
  // Uninitialised shared memory is garbage on a GPU; NaN bytes here make a kernel that reads it fail its test.
  std::memset(r.dynamic_shared.data(), 0xff, r.dynamic_shared.size());
  const uint3 dim = tls_block.block_dim;
  for (unsigned i = 0; i < r.threads; ++i) {
    Fiber& f = r.fibers[i];
    f.thread.linear = i;
    f.thread.thread_idx = uint3{i % dim.x, (i / dim.x) % dim.y, i / (dim.x * dim.y)};
    f.state = State::Ready;
    f.copies.clear();
    f.commits = 0;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = r.stack_of(i);
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &r.scheduler;
    makecontext(&f.context, fiber_main, 0);
  }
  unsigned alive = r.threads;
  for (;;) {
    for (unsigned i = 0; i < r.threads; ++i) {
      Fiber& f = r.fibers[i];
      if (f.state != State::Ready) continue;
      r.current = &f;
      tls_thread = &f.thread;
      swapcontext(&r.scheduler, &f.context);
      if (f.state == State::Done) {
        --alive;
        if (!f.copies.empty()) {
          r.error = block_name(tls_block) + ": thread " + std::to_string(i) + " exited with " +
                    std::to_string(f.copies.size()) + " cp.async copies no cp.async.wait_group covered";
          return;
        }
      }
    }
    if (alive == 0) return;
    // Nobody can run: release whatever barrier is complete.
    bool released = false;
    if (!release_warps(r, released)) return;
    if (released) continue;
    unsigned at_block = 0;
    for (const Fiber& f : r.fibers) at_block += f.state == State::AtBlockBarrier;
    if (at_block == alive && alive == r.threads) {
      for (Fiber& f : r.fibers) f.state = State::Ready;
      continue;
    }
    r.error = block_name(tls_block) + ": __syncthreads() reached by " + std::to_string(at_block) + " of " +
              std::to_string(r.threads) + " threads (" + std::to_string(r.threads - alive) +
              " exited first); on a GPU this hangs or is undefined";
    return;
  }
}

thread_local std::string tls_last_error;

unsigned worker_count(unsigned long long blocks) {
  unsigned n = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
  if (const char* env = std::getenv("NT_HOST_THREADS")) n = std::max(1, std::atoi(env));
  return unsigned(std::min<unsigned long long>(n, blocks));
}

}  // namespace

void syncthreads() { park(State::AtBlockBarrier, 0); }

void syncwarp(unsigned mask) { park(State::AtWarpBarrier, mask); }

std::uint64_t warp_exchange(unsigned mask, std::uint64_t bits, unsigned src_lane) {
  BlockRunner* r = tls_runner;
  const unsigned linear = tls_thread->linear, warp = linear / 32, lane = linear % 32;
  std::uint64_t* slots = &r->slots[std::size_t(warp) * 32];
  slots[lane] = bits;
  park(State::AtWarpBarrier, mask);  // every named lane has published
  const unsigned source = warp * 32 + src_lane;
  const bool valid = src_lane < 32 && source < r->threads && (mask >> src_lane & 1u);
  const std::uint64_t result = valid ? slots[src_lane] : ~std::uint64_t(0);
  park(State::AtWarpBarrier, mask);  // every named lane has read before anyone publishes again
  return result;
}

unsigned warp_ballot(unsigned mask, bool predicate) {
  BlockRunner* r = tls_runner;
  const unsigned linear = tls_thread->linear, warp = linear / 32, lane = linear % 32;
  std::uint64_t* slots = &r->slots[std::size_t(warp) * 32];
  slots[lane] = predicate;
  park(State::AtWarpBarrier, mask);
  unsigned ballot = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && warp * 32 + l < r->threads && slots[l]) ballot |= 1u << l;
  park(State::AtWarpBarrier, mask);
  return ballot;
}

void warp_gather(unsigned mask, const void* mine, unsigned bytes, void* all) {
  BlockRunner* r = tls_runner;
  const unsigned linear = tls_thread->linear, warp = linear / 32, lane = linear % 32;
  std::uint64_t* slots = &r->slots[std::size_t(warp) * 32];
  slots[lane] = reinterpret_cast<std::uintptr_t>(mine);
  park(State::AtWarpBarrier, mask);  // every named lane has published where its bytes are
  unsigned char* out = static_cast<unsigned char*>(all);
  for (unsigned l = 0; l < 32; ++l) {
    const bool valid = (mask >> l & 1u) && warp * 32 + l < r->threads;
    if (valid) std::memcpy(out + std::size_t(l) * bytes, reinterpret_cast<const void*>(slots[l]), bytes);
    else std::memset(out + std::size_t(l) * bytes, 0xff, bytes);
  }
  park(State::AtWarpBarrier, mask);  // every lane has copied before any changes its bytes again
}

void cp_async_enqueue(void* shared, const void* global, unsigned bytes, bool valid) {
  Fiber* f = tls_runner->current;
  f->copies.push_back(AsyncCopy{shared, global, bytes, valid, f->commits});
}

void cp_async_commit() { ++tls_runner->current->commits; }

void cp_async_wait(int pending) {
  Fiber* f = tls_runner->current;
  // Groups older than the `pending` most recent committed ones complete; uncommitted copies stay queued.
  const long long done_below = (long long)f->commits - pending;
  std::size_t kept = 0;
  for (const AsyncCopy& c : f->copies) {
    if ((long long)c.group < done_below) {
      if (c.valid) std::memcpy(c.shared, c.global, c.bytes);
      else std::memset(c.shared, 0, c.bytes);
    } else {
      f->copies[kept++] = c;
    }
  }
  f->copies.resize(kept);
}

int launch(const char* kernel, Invoker invoker, uint3 grid, uint3 block, unsigned shared_bytes, void** args) {
  tls_last_error.clear();
  const auto fail = [&](int code, const std::string& why) {
    tls_last_error = std::string(kernel) + ": " + why;
    return code;
  };
  const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0)
    return fail(kInvalidConfig, "grid and block dimensions must be positive (a GPU rejects empty launches)");
  if (block.x > 1024 || block.y > 1024 || block.z > 64 || threads > 1024)
    return fail(kInvalidConfig, "block of " + std::to_string(threads) + " threads exceeds the CUDA limits");
  if (grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    return fail(kInvalidConfig, "grid exceeds the CUDA limits");
  if (shared_bytes > kMaxDynamicShared)
    return fail(kInvalidConfig, std::to_string(shared_bytes) + " bytes of dynamic shared memory exceed 48 KiB");

  const unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
  std::atomic<unsigned long long> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_lock;
  std::string error;
  int code = 0;

  auto work = [&] {
    BlockRunner runner;
    runner.invoker = invoker;
    runner.args = args;
    tls_runner = &runner;
    tls_block.block_dim = block;
    tls_block.grid_dim = grid;
    if (!runner.allocate(unsigned(threads), shared_bytes)) {
      std::lock_guard<std::mutex> g(error_lock);
      failed = true;
      code = kOutOfResources;
      error = "cannot map fiber stacks";
      return;
    }
    for (;;) {
      const unsigned long long b = next.fetch_add(1);
      if (b >= blocks || failed.load()) break;
      const uint3 idx{unsigned(b % grid.x), unsigned(b / grid.x % grid.y), unsigned(b / grid.x / grid.y)};
      run_block(runner, idx);
      if (!runner.error.empty()) {
        std::lock_guard<std::mutex> g(error_lock);
        if (!failed.exchange(true)) {
          code = kKernelFault;
          error = runner.error;
        }
        break;
      }
    }
    tls_runner = nullptr;
    tls_thread = nullptr;
  };

  // Always on fresh OS threads, never on the caller's: the caller may be a managed (.NET) thread, and its
  // runtime should never find that thread running on a fiber stack.
  std::vector<std::thread> workers;
  const unsigned n = worker_count(blocks);
  workers.reserve(n);
  for (unsigned i = 0; i < n; ++i) workers.emplace_back(work);
  for (auto& w : workers) w.join();
  if (code != 0) return fail(code, error);
  return 0;
}

}  // namespace nt_host

extern "C" __attribute__((visibility("default"))) const char* nt_host_last_error() {
  return nt_host::tls_last_error.c_str();
}
