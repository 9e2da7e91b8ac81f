// rmsnorm.cu — y = w ⊙ x · s, s = 1/sqrt(mean(x²) + eps) per row, and its backward under a NormRule.
//
// Launch: one block per row (grid.x = rows); blockDim.x any multiple of 32 up to 1024. The row's threads
// stride over the columns and meet in one block reduction (warp shuffles, then the per-warp partials through
// shared memory). Rows of Llama models are 288..8192 wide, so a row is plenty of work for a block.
#include "nt_device.h"

extern "C" __global__ void rmsnorm_forward(const float* __restrict__ x, const float* __restrict__ weight, float eps,
                                           float* __restrict__ y, float* __restrict__ rstd, int rows, int dim) {
  __shared__ float partials[32];
  const int row = blockIdx.x;
  if (row >= rows) return;  // the whole block leaves together: no barrier is left half-reached
  const float* xr = x + (long long)row * dim;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  ss = nt_block_sum(ss, partials);
  const float s = 1.0f / sqrtf(ss / (float)dim + eps);
  if (threadIdx.x == 0) rstd[row] = s;
  float* yr = y + (long long)row * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = weight[i] * (xr[i] * s);
}
NT_HOST_LAUNCHER(rmsnorm_forward)

// dx += ∂y/∂xᵀ dy, accumulating like the CPU op. exact != 0: the true gradient
//   dx = s·w⊙dy − (s³/d)·(Σ w·dy·x)·x ;
// exact == 0 (RelP LN-rule, the scale frozen): dx = s·w⊙dy, and the reduction is skipped.
extern "C" __global__ void rmsnorm_backward(const float* __restrict__ dy, const float* __restrict__ x,
                                            const float* __restrict__ weight, const float* __restrict__ rstd,
                                            float* __restrict__ dx, int rows, int dim, int exact) {
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
  for (int i = threadIdx.x; i < dim; i += blockDim.x) dx[base + i] += s * weight[i] * dy[base + i] - c * x[base + i];
}
NT_HOST_LAUNCHER(rmsnorm_backward)
