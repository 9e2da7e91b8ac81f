// sparse_mlp.cu — the keep-k products of a mean-ablation sweep (issue 18; CPU reference: SparseMlpOps, the
// same sums in another order, so equal to rounding). Rows share a kept set in groups (a mask at one position: the
// examples of a replica); group g keeps units kept[group_kept[g] .. group_kept[g+1]) for rows
// rows_of_groups[group_rows[g] .. group_rows[g+1]). A row is in at most one group.
//
// The keep-k MLP (mlp_act): for a row r of group g with mean row p
//   out[r] = C[p] + Σ_{i∈K_g} W_down[:, i] · (silu(x_r·W_gate[i]) · (x_r·W_up[i]) − mean[p, i]),
// in two launches so nothing adds into a row from two blocks (no atomics, deterministic):
//   keepk_coefficients: one warp per (group, kept unit, row) pair — the two dot products over dim and the coefficient
//     act − mean, written to coef[pair_base[g] + (j − group_kept[g])·rows_g + q];
//   keepk_down: one block per row — C[p] (zero for a padding row, mean_row −1), plus the group's coefficients times
//     the kept columns of W_down [dim, hidden] (read in place, no transposed copy), in kept order.
// kept_outputs (mlp_out/resid after W_down, attn after W_o): one warp per (kept column, row) pair writes
//   y[r, j] = x_r · W[j]; the caller clears y first (the ablation then writes the means into the other columns).
//
// Launch: keepk_coefficients and kept_outputs take 1-D grids of warps (any block size that is a multiple of 32,
// grid-stride over the pairs); keepk_down one block per row (grid.x = rows), any block size.
#include "nt_device.h"

// The group of pair index e among groups whose pair counts start at pair_base (pair_base[groups] = total): a binary
// search, as groups are few and their bases ascending.
static __device__ __forceinline__ int nt_group_of(const int* pair_base, int groups, long long e) {
  int lo = 0, hi = groups - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (pair_base[mid] <= e) lo = mid; else hi = mid - 1;
  }
  return lo;
}

static __device__ __forceinline__ float nt_warp_dot(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = (int)(threadIdx.x & 31u); i < n; i += 32) s = fmaf(a[i], b[i], s);
  return nt_warp_sum(s);
}

extern "C" __global__ void keepk_coefficients(const float* __restrict__ x, const float* __restrict__ gate,
                                              const float* __restrict__ up, const float* __restrict__ means,
                                              const int* __restrict__ mean_row, const int* __restrict__ group_kept,
                                              const int* __restrict__ kept, const int* __restrict__ group_rows,
                                              const int* __restrict__ rows_of_groups, const int* __restrict__ pair_base,
                                              float* __restrict__ coef, int groups, int dim, int hidden) {
  const long long pairs = pair_base[groups];
  const long long warp = nt_global_index() >> 5, warps = nt_grid_stride() >> 5;
  for (long long e = warp; e < pairs; e += warps) {
    const int g = nt_group_of(pair_base, groups, e);
    const int n_rows = group_rows[g + 1] - group_rows[g];
    const long long local = e - pair_base[g];
    const int j = group_kept[g] + (int)(local / n_rows), q = group_rows[g] + (int)(local % n_rows);
    const int i = kept[j], r = rows_of_groups[q];
    const float* xr = x + (long long)r * dim;
    const float a = nt_warp_dot(xr, gate + (long long)i * dim, dim);
    const float u = nt_warp_dot(xr, up + (long long)i * dim, dim);
    if ((threadIdx.x & 31u) == 0) coef[e] = a / (1.0f + __expf(-a)) * u - means[(long long)mean_row[r] * hidden + i];
  }
}
NT_HOST_LAUNCHER(keepk_coefficients)

extern "C" __global__ void keepk_down(const float* __restrict__ coef, const float* __restrict__ down,
                                      const float* __restrict__ constants, const int* __restrict__ mean_row,
                                      const int* __restrict__ row_group, const int* __restrict__ row_index,
                                      const int* __restrict__ group_kept, const int* __restrict__ kept,
                                      const int* __restrict__ group_rows, const int* __restrict__ pair_base,
                                      float* __restrict__ out, int rows, int dim, int hidden) {
  const int r = blockIdx.x;
  if (r >= rows) return;
  float* o = out + (long long)r * dim;
  const int p = mean_row[r], g = row_group[r];
  for (int c = threadIdx.x; c < dim; c += blockDim.x) {
    float v = p < 0 ? 0.0f : constants[(long long)p * dim + c];
    if (p >= 0 && g >= 0) {
      const int n_rows = group_rows[g + 1] - group_rows[g], q = row_index[r];
      for (int j = group_kept[g]; j < group_kept[g + 1]; ++j)
        v = fmaf(coef[pair_base[g] + (long long)(j - group_kept[g]) * n_rows + q], down[(long long)c * hidden + kept[j]], v);
    }
    o[c] = v;
  }
}
NT_HOST_LAUNCHER(keepk_down)

extern "C" __global__ void kept_outputs(const float* __restrict__ x, const float* __restrict__ weight,
                                        const int* __restrict__ group_kept, const int* __restrict__ kept,
                                        const int* __restrict__ group_rows, const int* __restrict__ rows_of_groups,
                                        const int* __restrict__ pair_base, float* __restrict__ y, int groups,
                                        int in_dim, int out_dim) {
  const long long pairs = pair_base[groups];
  const long long warp = nt_global_index() >> 5, warps = nt_grid_stride() >> 5;
  for (long long e = warp; e < pairs; e += warps) {
    const int g = nt_group_of(pair_base, groups, e);
    const int n_rows = group_rows[g + 1] - group_rows[g];
    const long long local = e - pair_base[g];
    const int j = kept[group_kept[g] + (int)(local / n_rows)], r = rows_of_groups[group_rows[g] + (int)(local % n_rows)];
    const float v = nt_warp_dot(x + (long long)r * in_dim, weight + (long long)j * in_dim, in_dim);
    if ((threadIdx.x & 31u) == 0) y[(long long)r * out_dim + j] = v;
  }
}
NT_HOST_LAUNCHER(kept_outputs)
