// nt_host.h — the same kernel sources, compiled as plain C++ and run on the CPU (the CI has no GPU).
//
// Included first into every .cu of the host build (-x c++ -include nt_host.h). The emulator behind it lives
// in native/host/nt_emulator.cpp: a launcher spreads the grid's blocks over a few OS threads; inside a block
// each CUDA thread is a ucontext fiber, so __syncthreads() is a real barrier over the block's fibers and a warp
// shuffle really waits for its 32 lanes. A kernel that would race, deadlock or diverge at a barrier on the GPU
// fails here too (the launcher returns an error naming it), instead of passing by luck.
#pragma once
#ifndef NT_HOST_H
#define NT_HOST_H

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <math.h>
#include <type_traits>
#include <utility>

struct uint3 { unsigned x, y, z; };
using dim3 = uint3;

namespace nt_host {

// What threadIdx/blockIdx/... read. The emulator points tls_thread at the running fiber's state before
// every switch into it; a block never leaves its OS thread, so a thread_local is per-block state.
struct ThreadState { uint3 thread_idx; unsigned linear; };
struct BlockState { uint3 block_idx, block_dim, grid_dim; unsigned char* dynamic_shared; };
extern thread_local ThreadState* tls_thread;
extern thread_local BlockState tls_block;

void syncthreads();
void syncwarp(unsigned mask);
// Every lane named in `mask` publishes `bits`; each gets back what lane `src_lane` published. A source lane
// that does not exist or is not in the mask gives all-ones bits (NaN, -1): undefined on the GPU, loud here.
std::uint64_t warp_exchange(unsigned mask, std::uint64_t bits, unsigned src_lane);
unsigned warp_ballot(unsigned mask, bool predicate);

using Invoker = void (*)(void** args);
int launch(const char* kernel, Invoker invoker, uint3 grid, uint3 block, unsigned shared_bytes, void** args);

// Calls kernel(*(A0*)args[0], *(A1*)args[1], ...): the argument convention of cuLaunchKernel's kernelParams.
template <typename... A, std::size_t... I>
inline void invoke_unpacked(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
  kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}
template <typename... A>
inline void invoke(void (*kernel)(A...), void** args) { invoke_unpacked(kernel, args, std::index_sequence_for<A...>{}); }

template <typename T> inline std::uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T> inline T from_bits(std::uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
inline unsigned lane_id() { return tls_thread->linear & 31u; }

}  // namespace nt_host

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
// One copy per OS thread = one per running block (blocks on the same OS thread run one after another).
#define __shared__ static thread_local

#define threadIdx (::nt_host::tls_thread->thread_idx)
#define blockIdx (::nt_host::tls_block.block_idx)
#define blockDim (::nt_host::tls_block.block_dim)
#define gridDim (::nt_host::tls_block.grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { ::nt_host::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::nt_host::syncwarp(mask); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// Shuffles with CUDA's lane rules: lanes form segments of `width`; a source outside the caller's segment
// (xor, down, up) returns the caller's own value; idx wraps within the segment.
template <typename T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  unsigned lane = ::nt_host::lane_id(), base = lane & ~unsigned(width - 1);
  return ::nt_host::from_bits<T>(::nt_host::warp_exchange(mask, ::nt_host::to_bits(v), base + (unsigned(src) & unsigned(width - 1))));
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  unsigned lane = ::nt_host::lane_id(), base = lane & ~unsigned(width - 1), src = lane ^ unsigned(lane_mask);
  if (src < base || src >= base + unsigned(width)) src = lane;
  return ::nt_host::from_bits<T>(::nt_host::warp_exchange(mask, ::nt_host::to_bits(v), src));
}
template <typename T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  unsigned lane = ::nt_host::lane_id(), base = lane & ~unsigned(width - 1), src = lane + delta;
  if (src >= base + unsigned(width)) src = lane;
  return ::nt_host::from_bits<T>(::nt_host::warp_exchange(mask, ::nt_host::to_bits(v), src));
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  unsigned lane = ::nt_host::lane_id(), base = lane & ~unsigned(width - 1);
  unsigned src = lane >= base + delta ? lane - delta : lane;
  return ::nt_host::from_bits<T>(::nt_host::warp_exchange(mask, ::nt_host::to_bits(v), src));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) { return ::nt_host::warp_ballot(mask, predicate != 0); }

// Fibers of one block never run at the same time, but blocks on other OS threads do: real atomics.
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v, std::memory_order_relaxed); }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v, std::memory_order_relaxed); }

// The device __expf is ex2.approx(x·log2 e); the same formula here keeps the rounding of x·log2 e in the test.
inline float __expf(float x) { return std::exp2f(x * 1.4426950408889634f); }
// sqrtf, fmaf, fmaxf, fminf, fabsf: the C library's, from <math.h> (exactly rounded where CUDA's are).

#define NT_INFINITY std::numeric_limits<float>::infinity()
#define NT_NAN std::numeric_limits<float>::quiet_NaN()
#define NT_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::nt_host::tls_block.dynamic_shared)

// nt_launch_<kernel>(grid xyz, block xyz, shared bytes, kernelParams): runs the whole grid and returns when it
// is done; 0 on success, otherwise an error code with nt_host_last_error() saying what went wrong.
#define NT_HOST_LAUNCHER(kernel)                                                                              \
  extern "C" __attribute__((visibility("default"))) int nt_launch_##kernel(                                   \
      unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shared_bytes,    \
      void** args) {                                                                                          \
    return ::nt_host::launch(#kernel, [](void** a) { ::nt_host::invoke(kernel, a); }, uint3{gx, gy, gz},     \
                             uint3{bx, by, bz}, shared_bytes, args);                                         \
  }

#endif
