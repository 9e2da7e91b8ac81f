// topk.cu — the k nodes of largest |mean score| of one site, selected where the score sums live, so only the k
// results cross to the host (a library caller's top-k without downloading the slab; ScoreSums.TopK).
//
// Node e (0 ≤ e < n = layers·positions·width) is (l, p, u) with e = (l·positions + p)·width + u, NodeGrid's flat
// index less first_flat (the device's first layer); its mean is sums[(l·rows_per_layer + p)·stride + first_column + u]
// · scales[p], the product rounded once (gather_scaled_rows, so the same float the downloaded means hold).
// Each node gets a distinct 64-bit key: high word |mean|'s bits + 1 (0 for NaN, which NodeRanking ranks below every
// number), low word ~(first_flat + e). A larger key is a larger magnitude, or an equal one at a lower flat index:
// NodeRanking's order exactly, ties included. The k-th largest key is found by radix selection, 8 bits a pass from
// the top, the running state in device memory (no host round trip between passes):
//   state[0..255] the pass's histogram, state[256] / [257] the key prefix chosen so far (low, high word),
//   state[258] how many of the top k still lie at or below that prefix, state[259] the output count.
// topk_init (one block): clears the state, remaining = k.
// topk_histogram (grid-stride, any block size; 256-bin shared histogram per block): counts, by the key's byte
//   `digit`, the nodes whose key agrees with the prefix above that byte.
// topk_select_digit (one thread): walks the bins from the top, fixes the byte, clears the histogram.
// After digits 7..0 the prefix is the k-th largest key; topk_collect writes every node whose key is at least that
// (exactly k: the keys are distinct) to out_index / out_value in any order; the host sorts the k by key.
#include "nt_device.h"

static __device__ __forceinline__ unsigned long long nt_topk_key(float mean, int flat) {
  union { float f; unsigned int u; } bits;
  bits.f = mean;
  const unsigned int magnitude = bits.u & 0x7fffffffu;
  const unsigned int high = magnitude > 0x7f800000u ? 0u : magnitude + 1u;   // NaN below every number
  return ((unsigned long long)high << 32) | (unsigned long long)(~(unsigned int)flat);
}

static __device__ __forceinline__ float nt_topk_mean(const float* __restrict__ sums, const float* __restrict__ scales,
                                                     long long e, int stride, int first_column, int width,
                                                     int positions, int rows_per_layer) {
  const long long per_layer = (long long)positions * width;
  const long long l = e / per_layer, rest = e - l * per_layer;
  const int p = (int)(rest / width), u = (int)(rest - (long long)p * width);
  return nt_mul_rn(sums[(l * rows_per_layer + p) * stride + first_column + u], scales[p]);
}

static __device__ __forceinline__ unsigned long long nt_topk_prefix(const int* state) {
  return ((unsigned long long)(unsigned int)state[257] << 32) | (unsigned long long)(unsigned int)state[256];
}

extern "C" __global__ void topk_init(int* state, int k) {
  for (int i = threadIdx.x; i < 260; i += blockDim.x) state[i] = i == 258 ? k : 0;
}
NT_HOST_LAUNCHER(topk_init)

extern "C" __global__ void topk_histogram(const float* __restrict__ sums, const float* __restrict__ scales, int n,
                                          int stride, int first_column, int width, int positions,
                                          int rows_per_layer, int first_flat, int digit, int* state) {
  __shared__ int local[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) local[i] = 0;
  __syncthreads();
  const int shift = 8 * digit;
  const unsigned long long above = digit == 7 ? 0ull : ~0ull << (shift + 8);
  const unsigned long long prefix = nt_topk_prefix(state) & above;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const float mean = nt_topk_mean(sums, scales, e, stride, first_column, width, positions, rows_per_layer);
    const unsigned long long key = nt_topk_key(mean, first_flat + (int)e);
    if ((key & above) == prefix) atomicAdd(&local[(key >> shift) & 255u], 1);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 256; i += blockDim.x)
    if (local[i] != 0) atomicAdd(&state[i], local[i]);
}
NT_HOST_LAUNCHER(topk_histogram)

extern "C" __global__ void topk_select_digit(int* state, int digit) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  int remaining = state[258], b = 255;
  while (b > 0 && state[b] < remaining) remaining -= state[b--];
  const unsigned long long prefix = nt_topk_prefix(state) | ((unsigned long long)b << (8 * digit));
  state[256] = (int)(unsigned int)prefix;
  state[257] = (int)(unsigned int)(prefix >> 32);
  state[258] = remaining;
  for (int i = 0; i < 256; ++i) state[i] = 0;
}
NT_HOST_LAUNCHER(topk_select_digit)

extern "C" __global__ void topk_collect(const float* __restrict__ sums, const float* __restrict__ scales, int n,
                                        int stride, int first_column, int width, int positions, int rows_per_layer,
                                        int first_flat, int k, int* state, int* __restrict__ out_index,
                                        float* __restrict__ out_value) {
  const unsigned long long threshold = nt_topk_prefix(state);
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const float mean = nt_topk_mean(sums, scales, e, stride, first_column, width, positions, rows_per_layer);
    if (nt_topk_key(mean, first_flat + (int)e) < threshold) continue;
    const int slot = atomicAdd(&state[259], 1);
    if (slot < k) {
      out_index[slot] = first_flat + (int)e;
      out_value[slot] = mean;
    }
  }
}
NT_HOST_LAUNCHER(topk_collect)
