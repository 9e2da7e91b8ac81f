// nt_cuda.h — what a kernel needs on the GPU, for the two device compilers we use.
//
// nvcc brings the CUDA runtime headers itself (threadIdx, __syncthreads, the shuffles, the math functions),
// so for nvcc this file only adds our two macros. clang's NVPTX back end is run with -nocudainc -nocudalib
// (no SDK, no libdevice), so for clang we define the small part of CUDA our kernels use, directly on the
// NVVM builtins. Everything here must have a twin of the same meaning in nt_host.h.
#pragma once
#ifndef NT_CUDA_H
#define NT_CUDA_H

#if !defined(__NVCC__)

#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __host__ __attribute__((host))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))

// The special registers. A temporary struct per use: the reads are pure, unused ones are removed.
struct nt_uint3 { unsigned x, y, z; };
#define threadIdx (nt_uint3{(unsigned)__nvvm_read_ptx_sreg_tid_x(), (unsigned)__nvvm_read_ptx_sreg_tid_y(), (unsigned)__nvvm_read_ptx_sreg_tid_z()})
#define blockIdx (nt_uint3{(unsigned)__nvvm_read_ptx_sreg_ctaid_x(), (unsigned)__nvvm_read_ptx_sreg_ctaid_y(), (unsigned)__nvvm_read_ptx_sreg_ctaid_z()})
#define blockDim (nt_uint3{(unsigned)__nvvm_read_ptx_sreg_ntid_x(), (unsigned)__nvvm_read_ptx_sreg_ntid_y(), (unsigned)__nvvm_read_ptx_sreg_ntid_z()})
#define gridDim (nt_uint3{(unsigned)__nvvm_read_ptx_sreg_nctaid_x(), (unsigned)__nvvm_read_ptx_sreg_nctaid_y(), (unsigned)__nvvm_read_ptx_sreg_nctaid_z()})
#define warpSize 32

// __syncthreads is a clang builtin for NVPTX (bar.sync 0); __syncwarp is not.
static __device__ __forceinline__ void __syncwarp(unsigned mask = 0xffffffffu) { __nvvm_bar_warp_sync(mask); }
static __device__ __forceinline__ void __threadfence() { __nvvm_membar_gl(); }

// Shuffles. The last operand packs the segment mask (bits 8-12) and the clamp lane (bits 0-4), as CUDA's own
// headers do: up clamps at the segment start (0), the others at its end (0x1f).
static __device__ __forceinline__ float __shfl_sync(unsigned m, float v, int src, int width = 32) { return __nvvm_shfl_sync_idx_f32(m, v, src, ((32 - width) << 8) | 0x1f); }
static __device__ __forceinline__ int __shfl_sync(unsigned m, int v, int src, int width = 32) { return __nvvm_shfl_sync_idx_i32(m, v, src, ((32 - width) << 8) | 0x1f); }
static __device__ __forceinline__ float __shfl_xor_sync(unsigned m, float v, int lane_mask, int width = 32) { return __nvvm_shfl_sync_bfly_f32(m, v, lane_mask, ((32 - width) << 8) | 0x1f); }
static __device__ __forceinline__ int __shfl_xor_sync(unsigned m, int v, int lane_mask, int width = 32) { return __nvvm_shfl_sync_bfly_i32(m, v, lane_mask, ((32 - width) << 8) | 0x1f); }
static __device__ __forceinline__ float __shfl_down_sync(unsigned m, float v, unsigned delta, int width = 32) { return __nvvm_shfl_sync_down_f32(m, v, delta, ((32 - width) << 8) | 0x1f); }
static __device__ __forceinline__ int __shfl_down_sync(unsigned m, int v, unsigned delta, int width = 32) { return __nvvm_shfl_sync_down_i32(m, v, delta, ((32 - width) << 8) | 0x1f); }
static __device__ __forceinline__ float __shfl_up_sync(unsigned m, float v, unsigned delta, int width = 32) { return __nvvm_shfl_sync_up_f32(m, v, delta, (32 - width) << 8); }
static __device__ __forceinline__ int __shfl_up_sync(unsigned m, int v, unsigned delta, int width = 32) { return __nvvm_shfl_sync_up_i32(m, v, delta, (32 - width) << 8); }
static __device__ __forceinline__ unsigned __ballot_sync(unsigned m, int predicate) { return __nvvm_vote_ballot_sync(m, predicate != 0); }

static __device__ __forceinline__ float atomicAdd(float* p, float v) { return __nvvm_atom_add_gen_f(p, v); }
static __device__ __forceinline__ int atomicAdd(int* p, int v) { return __nvvm_atom_add_gen_i(p, v); }

// Math: the builtins that NVPTX lowers to single instructions (sqrt.rn, fma.rn, max, abs). expf would need
// libdevice, so __expf is built on ex2.approx (about 2 ulp), which is also what nvcc's __expf is.
static __device__ __forceinline__ float sqrtf(float x) { return __builtin_sqrtf(x); }
static __device__ __forceinline__ float fmaf(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
static __device__ __forceinline__ float fmaxf(float a, float b) { return __builtin_fmaxf(a, b); }
static __device__ __forceinline__ float fminf(float a, float b) { return __builtin_fminf(a, b); }
static __device__ __forceinline__ float fabsf(float a) { return __builtin_fabsf(a); }
static __device__ __forceinline__ float __expf(float x) { return __nvvm_ex2_approx_f(x * 1.4426950408889634f); }

#define NT_INFINITY __builtin_huge_valf()
#define NT_NAN __builtin_nanf("")

#else  // nvcc

#define NT_INFINITY __int_as_float(0x7f800000)
#define NT_NAN __int_as_float(0x7fffffff)

#endif

// Dynamic shared memory (the launch's sharedBytes), as a typed pointer named `name`.
#define NT_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
// The host build exports a launcher per kernel; on the device the kernel itself is the entry point.
#define NT_HOST_LAUNCHER(kernel)

#endif
