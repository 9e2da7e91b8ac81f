// rmsnorm.cu — y = w ⊙ x · s, s = 1/sqrt(mean(x²) + eps) per row, and its backward under a NormRule.
//
// rmsnorm_forward_bf16 also writes the output rounded to bf16 (the products' operand); add_rmsnorm_forward first
// adds a residual branch (sum = x + delta, stored) and norms the sum.
//
// Launch: one block per row (grid.x = rows); blockDim.x any multiple of 32 up to 1024. The row's threads
// stride over the columns and meet in one block reduction (warp shuffles, then the per-warp partials through
// shared memory). Rows of Llama models are 288..8192 wide, so a row is plenty of work for a block.
#include "nt_bf16.h"

// One row of the forward, of x or (delta not null) of x + delta, which is also stored in sum; y16 (when not null)
// also receives y rounded to bf16, the operand of the bf16 products that read the normed row, so they need no
// conversion kernel of their own. The sum is one rounded add, as Copy + Add give it, and the squares are summed in
// the same order as from a stored sum: the fused op is bit-identical to the three separate ones.
static __device__ __forceinline__ void nt_rmsnorm_row(const float* __restrict__ x, const float* __restrict__ delta,
                                                      float* __restrict__ sum, const float* __restrict__ weight, float eps,
                                                      float* __restrict__ y, unsigned short* __restrict__ y16,
                                                      float* __restrict__ rstd, int rows, int dim) {
  __shared__ float partials[32];
  const int row = blockIdx.x;
  if (row >= rows) return;  // the whole block leaves together: no barrier is left half-reached
  const long long base = (long long)row * dim;
  const float* xr = x + base;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = xr[i];
    if (delta) {
      v = v + delta[base + i];
      sum[base + i] = v;
    }
    ss += v * v;
  }
  ss = nt_block_sum(ss, partials);
  const float s = 1.0f / sqrtf(ss / (float)dim + eps);
  if (threadIdx.x == 0) rstd[row] = s;
  float* yr = y + base;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float xi = delta ? xr[i] + delta[base + i] : xr[i];
    const float v = weight[i] * (xi * s);
    yr[i] = v;
    if (y16) y16[base + i] = nt_bf16_from_float(v);
  }
}

extern "C" __global__ void rmsnorm_forward(const float* __restrict__ x, const float* __restrict__ weight, float eps,
                                           float* __restrict__ y, float* __restrict__ rstd, int rows, int dim) {
  nt_rmsnorm_row(x, nullptr, nullptr, weight, eps, y, nullptr, rstd, rows, dim);
}
NT_HOST_LAUNCHER(rmsnorm_forward)

// As rmsnorm_forward, and y16 [rows, dim] = bf16(y) (GemmPrecision.Bf16).
extern "C" __global__ void rmsnorm_forward_bf16(const float* __restrict__ x, const float* __restrict__ weight, float eps,
                                                float* __restrict__ y, float* __restrict__ rstd, unsigned short* __restrict__ y16,
                                                int rows, int dim) {
  nt_rmsnorm_row(x, nullptr, nullptr, weight, eps, y, y16, rstd, rows, dim);
}
NT_HOST_LAUNCHER(rmsnorm_forward_bf16)

// The residual add fused with the next norm: sum = x + delta, y = rmsnorm(sum) (and y16 = bf16(y) unless y16 is
// null). Replaces Copy(x, sum), Add(sum, delta), RmsNorm(sum): 18 bytes per element instead of 30 with y16.
extern "C" __global__ void add_rmsnorm_forward(const float* __restrict__ x, const float* __restrict__ delta,
                                               const float* __restrict__ weight, float eps, float* __restrict__ sum,
                                               float* __restrict__ y, float* __restrict__ rstd, unsigned short* __restrict__ y16,
                                               int rows, int dim) {
  nt_rmsnorm_row(x, delta, sum, weight, eps, y, y16, rstd, rows, dim);
}
NT_HOST_LAUNCHER(add_rmsnorm_forward)

// dx += ∂y/∂xᵀ dy, accumulating like the CPU op. exact != 0: the true gradient
//   dx = s·w⊙dy − (s³/d)·(Σ w·dy·x)·x ;
// exact == 0 (RelP LN-rule, the scale frozen): dx = s·w⊙dy, and the reduction is skipped.
// dx16 (when not null) receives the updated dx rounded to bf16: the operand of the input-gradient product that
// reads this residual gradient next (GemmPrecision.Bf16).
static __device__ __forceinline__ void nt_rmsnorm_backward_row(const float* __restrict__ dy, const float* __restrict__ x,
                                                               const float* __restrict__ weight, const float* __restrict__ rstd,
                                                               float* __restrict__ dx, unsigned short* __restrict__ dx16,
                                                               int rows, int dim, int exact) {
  __shared__ float partials[32];
  const int row = blockIdx.x;
  if (row >= rows) return;
  const long long base = (long long)row * dim;
  const float s = rstd[row];
  float c = 0.0f;
  if (exact) {  // uniform over the block, so the barriers inside are reached by all or none
    float dot = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dot += weight[i] * dy[base + i] * x[base + i];
    dot = nt_block_sum(dot, partials);
    c = dot * s * s * s / (float)dim;
  }
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = dx[base + i] + (s * weight[i] * dy[base + i] - c * x[base + i]);
    dx[base + i] = v;
    if (dx16) dx16[base + i] = nt_bf16_from_float(v);
  }
}

extern "C" __global__ void rmsnorm_backward(const float* __restrict__ dy, const float* __restrict__ x,
                                            const float* __restrict__ weight, const float* __restrict__ rstd,
                                            float* __restrict__ dx, int rows, int dim, int exact) {
  nt_rmsnorm_backward_row(dy, x, weight, rstd, dx, nullptr, rows, dim, exact);
}
NT_HOST_LAUNCHER(rmsnorm_backward)

// As rmsnorm_backward, and dx16 [rows, dim] = bf16 of the updated dx.
extern "C" __global__ void rmsnorm_backward_bf16(const float* __restrict__ dy, const float* __restrict__ x,
                                                 const float* __restrict__ weight, const float* __restrict__ rstd,
                                                 float* __restrict__ dx, unsigned short* __restrict__ dx16,
                                                 int rows, int dim, int exact) {
  nt_rmsnorm_backward_row(dy, x, weight, rstd, dx, dx16, rows, dim, exact);
}
NT_HOST_LAUNCHER(rmsnorm_backward_bf16)
