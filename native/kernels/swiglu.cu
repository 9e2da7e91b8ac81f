// swiglu.cu — h = silu(g) ⊙ u and its backward under a GateRule.
//
// Launch: 1-D grid-stride over n elements, any block size. Rule encoding (GateRule in BackwardRules.cs):
//   0 Exact         dg = silu'(g)·u·dh,  du = silu(g)·dh,   silu'(g) = σ(g)(1 + g(1 − σ(g)))
//   1 IdentityHalf  dg = ½·σ(g)·u·dh,    du = ½·silu(g)·dh  (RelP: σ(g) held constant, half rule on the product)
//   2 Identity      dg = σ(g)·u·dh,      du = silu(g)·dh
#include "nt_bf16.h"

static __device__ __forceinline__ float nt_sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }

extern "C" __global__ void swiglu_forward(const float* __restrict__ gate, const float* __restrict__ up,
                                          float* __restrict__ h, long long n) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) {
    const float g = gate[i];
    h[i] = g * nt_sigmoid(g) * up[i];
  }
}
NT_HOST_LAUNCHER(swiglu_forward)

// As swiglu_forward, and h16[i] = bf16(h[i]): the down product's operand under GemmPrecision.Bf16.
extern "C" __global__ void swiglu_forward_bf16(const float* __restrict__ gate, const float* __restrict__ up,
                                               float* __restrict__ h, unsigned short* __restrict__ h16, long long n) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) {
    const float g = gate[i];
    const float v = g * nt_sigmoid(g) * up[i];
    h[i] = v;
    h16[i] = nt_bf16_from_float(v);
  }
}
NT_HOST_LAUNCHER(swiglu_forward_bf16)

extern "C" __global__ void swiglu_backward(const float* __restrict__ dh, const float* __restrict__ gate,
                                           const float* __restrict__ up, float* __restrict__ dgate,
                                           float* __restrict__ dup, long long n, int rule) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) {
    const float g = gate[i], sg = nt_sigmoid(g), silu = g * sg;
    if (rule == 0) {
      dgate[i] = dh[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
      dup[i] = dh[i] * silu;
    } else if (rule == 1) {
      dgate[i] = 0.5f * dh[i] * up[i] * sg;
      dup[i] = 0.5f * dh[i] * silu;
    } else {
      dgate[i] = dh[i] * up[i] * sg;
      dup[i] = dh[i] * silu;
    }
  }
}
NT_HOST_LAUNCHER(swiglu_backward)
