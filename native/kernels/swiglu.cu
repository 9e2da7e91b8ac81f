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

// Element i of the bf16 forward: h = silu(g)·u, its rounding h16 (the down product's operand under GemmPrecision.Bf16)
// and the rounded gate and up the forward stores for the backward (IBackend.StoreForBackward adopts them), written
// while they are read here rather than by a conversion.
static __device__ __forceinline__ void nt_swiglu_store(float g, float u, long long i, float* __restrict__ h, unsigned short* __restrict__ h16,
                                                       unsigned short* __restrict__ g16, unsigned short* __restrict__ u16) {
  const float v = g * nt_sigmoid(g) * u;
  h[i] = v;
  h16[i] = nt_bf16_from_float(v);
  g16[i] = nt_bf16_from_float(g);
  u16[i] = nt_bf16_from_float(u);
}

// swiglu_forward with the bf16 copies of nt_swiglu_store.
extern "C" __global__ void swiglu_forward_bf16_store(const float* __restrict__ gate, const float* __restrict__ up,
                                                     float* __restrict__ h, unsigned short* __restrict__ h16,
                                                     unsigned short* __restrict__ g16, unsigned short* __restrict__ u16,
                                                     long long n) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) nt_swiglu_store(gate[i], up[i], i, h, h16, g16, u16);
}
NT_HOST_LAUNCHER(swiglu_forward_bf16_store)

// As swiglu_forward_bf16_store with gate and up read in place from the [rows, 2·width] output of one product against
// the stacked [W1; W3] (row r: gate in columns [0, width), up in [width, 2·width)): no split pass, and no fp32 gate or
// up is written, since the forward keeps only their bf16 copies (g16, u16, each [rows, width]) for the backward.
extern "C" __global__ void swiglu_forward_bf16_stacked(const float* __restrict__ stacked, long long rows, int width,
                                                       float* __restrict__ h, unsigned short* __restrict__ h16,
                                                       unsigned short* __restrict__ g16, unsigned short* __restrict__ u16) {
  const long long n = rows * width;
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) {
    const long long r = i / width, c = i - r * width;
    nt_swiglu_store(stacked[r * 2 * width + c], stacked[r * 2 * width + width + c], i, h, h16, g16, u16);
  }
}
NT_HOST_LAUNCHER(swiglu_forward_bf16_stacked)

// dg, du of element i under rule (the encoding above).
static __device__ __forceinline__ void nt_swiglu_grads(float dh, float g, float u, int rule, float* dg, float* du) {
  const float sg = nt_sigmoid(g), silu = g * sg;
  if (rule == 0) {
    *dg = dh * u * sg * (1.0f + g * (1.0f - sg));
    *du = dh * silu;
  } else if (rule == 1) {
    *dg = 0.5f * dh * u * sg;
    *du = 0.5f * dh * silu;
  } else {
    *dg = dh * u * sg;
    *du = dh * silu;
  }
}

extern "C" __global__ void swiglu_backward(const float* __restrict__ dh, const float* __restrict__ gate,
                                           const float* __restrict__ up, float* __restrict__ dgate,
                                           float* __restrict__ dup, long long n, int rule) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) nt_swiglu_grads(dh[i], gate[i], up[i], rule, &dgate[i], &dup[i]);
}
NT_HOST_LAUNCHER(swiglu_backward)

// As swiglu_backward over [rows, width], and d16 [rows, 2·width] = bf16 of the row-wise concatenation [dgate | dup]:
// the operand of the one summed input-gradient product against the stacked [W1; W3] under GemmPrecision.Bf16.
extern "C" __global__ void swiglu_backward_bf16(const float* __restrict__ dh, const float* __restrict__ gate,
                                                const float* __restrict__ up, float* __restrict__ dgate,
                                                float* __restrict__ dup, unsigned short* __restrict__ d16, int rows,
                                                int width, int rule) {
  const long long n = (long long)rows * width;
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) {
    float dg, du;
    nt_swiglu_grads(dh[i], gate[i], up[i], rule, &dg, &du);
    dgate[i] = dg;
    dup[i] = du;
    const long long r = i / width, at = i + r * width;  // row r of d16 starts at 2·width·r
    d16[at] = nt_bf16_from_float(dg);
    d16[at + width] = nt_bf16_from_float(du);
  }
}
NT_HOST_LAUNCHER(swiglu_backward_bf16)

// As swiglu_backward_bf16 with gate and up read as bf16: the state a forward stores for the backward under
// GemmPrecision.Bf16 (IBackend.StoreForBackward: half the bytes of fp32 copies, which nothing else reads). The
// arithmetic is swiglu_backward's on the widened values, so the result is the fp32 op's on bf16-rounded inputs.
extern "C" __global__ void swiglu_backward_bf16_stored(const float* __restrict__ dh, const unsigned short* __restrict__ gate,
                                                       const unsigned short* __restrict__ up, float* __restrict__ dgate,
                                                       float* __restrict__ dup, unsigned short* __restrict__ d16, int rows,
                                                       int width, int rule) {
  const long long n = (long long)rows * width;
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) {
    float dg, du;
    nt_swiglu_grads(dh[i], nt_bf16_to_float(gate[i]), nt_bf16_to_float(up[i]), rule, &dg, &du);
    dgate[i] = dg;
    dup[i] = du;
    const long long r = i / width, at = i + r * width;
    d16[at] = nt_bf16_from_float(dg);
    d16[at + width] = nt_bf16_from_float(du);
  }
}
NT_HOST_LAUNCHER(swiglu_backward_bf16_stored)
