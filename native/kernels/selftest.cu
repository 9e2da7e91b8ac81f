// selftest.cu — kernels that pin down the execution model the other kernels rely on: barriers, shuffles,
// ballots, block reductions, dynamic shared memory and atomics. The host tests check the CPU emulation
// against CUDA's documented semantics with them; on a GPU the same tests check the hardware agrees.
// CudaBackend never launches these.
#include "nt_device.h"

// out[tid·6 + j] for each thread of a 1-D block (a multiple of 32): xor 5, down 3, idx 7, up 2, idx 3 in
// segments of 8 (width 8), and the ballot of "lane is odd".
extern "C" __global__ void selftest_shuffles(int* __restrict__ out) {
  const int tid = threadIdx.x, lane = tid & 31;
  int* o = out + tid * 6;
  o[0] = __shfl_xor_sync(NT_FULL_MASK, tid, 5);
  o[1] = __shfl_down_sync(NT_FULL_MASK, tid, 3);
  o[2] = __shfl_sync(NT_FULL_MASK, tid, 7);
  o[3] = __shfl_up_sync(NT_FULL_MASK, tid, 2);
  o[4] = __shfl_sync(NT_FULL_MASK, tid, 3, 8);
  o[5] = (int)__ballot_sync(NT_FULL_MASK, lane & 1);
}
NT_HOST_LAUNCHER(selftest_shuffles)

// Rotates values through shared memory `rounds` times; each round needs both barriers, so a barrier that
// does not really wait for the whole block leaves stale values. out[tid] = (tid + rounds) mod blockDim.
extern "C" __global__ void selftest_barrier_rotate(int* __restrict__ out, int rounds) {
  __shared__ int ring[1024];
  const int tid = threadIdx.x, n = blockDim.x;
  int mine = tid;
  for (int r = 0; r < rounds; ++r) {
    ring[tid] = mine;
    __syncthreads();
    mine = ring[(tid + 1) % n];
    __syncthreads();
  }
  out[blockIdx.x * n + tid] = mine;
}
NT_HOST_LAUNCHER(selftest_barrier_rotate)

// out[block] = Σ of in[block·n .. block·n + n), n = per_block, through nt_block_sum.
extern "C" __global__ void selftest_block_sum(const float* __restrict__ in, float* __restrict__ out, int per_block) {
  __shared__ float partials[32];
  float s = 0.0f;
  for (int i = threadIdx.x; i < per_block; i += blockDim.x) s += in[(long long)blockIdx.x * per_block + i];
  s = nt_block_sum(s, partials);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}
NT_HOST_LAUNCHER(selftest_block_sum)

// Reverses each block's slice of `in` through dynamic shared memory (blockDim floats).
extern "C" __global__ void selftest_dynamic_shared(const float* __restrict__ in, float* __restrict__ out) {
  NT_DYNAMIC_SHARED(float, buffer);
  const int tid = threadIdx.x, n = blockDim.x;
  buffer[tid] = in[blockIdx.x * n + tid];
  __syncthreads();
  out[blockIdx.x * n + tid] = buffer[n - 1 - tid];
}
NT_HOST_LAUNCHER(selftest_dynamic_shared)

// *total += Σ in, one atomicAdd per element, from every block at once.
extern "C" __global__ void selftest_atomic_sum(const float* __restrict__ in, float* __restrict__ total, long long n) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) atomicAdd(total, in[i]);
}
NT_HOST_LAUNCHER(selftest_atomic_sum)

// A broken kernel: threads ≥ 16 leave before a __syncthreads the others wait at. On a GPU this is undefined
// (it may hang); the emulator must report it. Only the host tests launch it.
extern "C" __global__ void selftest_divergent_barrier(int* __restrict__ out) {
  if (threadIdx.x >= 16) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}
NT_HOST_LAUNCHER(selftest_divergent_barrier)
