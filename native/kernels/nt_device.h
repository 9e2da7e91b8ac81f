// nt_device.h — the one header every kernel includes. Picks the GPU definitions (nt_cuda.h) or the CPU
// emulation (nt_host.h), then adds the helpers all kernel families share, written once for both.
#pragma once
#ifndef NT_DEVICE_H
#define NT_DEVICE_H

#if defined(__CUDA_ARCH__) || defined(__CUDACC__)
#include "nt_cuda.h"
#else
#include "nt_host.h"
#endif

#define NT_FULL_MASK 0xffffffffu

// Butterfly sum over the 32 lanes of a warp. Every lane ends with the same bits: each step adds the same two
// partial sums, only in swapped order, and IEEE addition is commutative.
static __device__ __forceinline__ float nt_warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(NT_FULL_MASK, v, offset);
  return v;
}

static __device__ __forceinline__ float nt_warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(NT_FULL_MASK, v, offset));
  return v;
}

// Sum over a 1-D block whose size is a multiple of 32 (at most 1024); every thread gets the total.
// `partials` is a __shared__ float[32] of the caller. Each warp reduces the per-warp partials itself, which
// saves a broadcast; the trailing barrier lets the caller reuse `partials` at once.
static __device__ __forceinline__ float nt_block_sum(float v, float* partials) {
  const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = nt_warp_sum(v);
  if (lane == 0) partials[warp] = v;
  __syncthreads();
  v = lane < warps ? partials[lane] : 0.0f;
  v = nt_warp_sum(v);
  __syncthreads();
  return v;
}

// One IEEE product or sum, rounded on its own (the CPU ops' arithmetic: score.cu, topk.cu). On the GPU that takes the
// PTX mul.rn / add.rn instructions written out: clang's NVPTX back end fuses a plain a·b + c into fma even under
// `#pragma clang fp contract(off)`, and lowers __nvvm_mul_rn_f to a plain multiply it then fuses.
#if defined(__CUDA_ARCH__)
static __device__ __forceinline__ float nt_mul_rn(float a, float b) {
  float r;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
static __device__ __forceinline__ float nt_add_rn(float a, float b) {
  float r;
  asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
#else
static inline float nt_mul_rn(float a, float b) { return a * b; }   // the host build targets x86-64 without FMA
static inline float nt_add_rn(float a, float b) { return a + b; }
#endif

static __device__ __forceinline__ int nt_min(int a, int b) { return a < b ? a : b; }

// Index arithmetic of grid-stride loops, in 64 bits: B·T·d_ff and B·H·T·T overflow int quickly.
static __device__ __forceinline__ long long nt_global_index() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
static __device__ __forceinline__ long long nt_grid_stride() { return (long long)gridDim.x * blockDim.x; }

#endif
