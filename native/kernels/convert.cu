// convert.cu — float32 → bfloat16, round to nearest even (NaN stays a quiet NaN), for the bf16 matrix products:
// the activations are rounded once per product, as cuBLAS's bf16 inputs need, while everything else stays float32.
// Launch: 1-D grid-stride loop, any block size.
#include "nt_device.h"

static __device__ __forceinline__ unsigned short nt_bf16_from_float(float v) {
  union { float f; unsigned int u; } bits;
  bits.f = v;
  const unsigned int u = bits.u;
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x0040u);  // NaN: keep sign, make quiet
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

extern "C" __global__ void f32_to_bf16(const float* __restrict__ source, unsigned short* __restrict__ destination, long long n) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) destination[i] = nt_bf16_from_float(source[i]);
}
NT_HOST_LAUNCHER(f32_to_bf16)
