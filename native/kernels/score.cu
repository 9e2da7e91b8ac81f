// score.cu — the attribution pass's own kernels: node-score accumulation where the backward produces a site
// gradient, the per-position means of the score sums, and the output layer's backward for a metric whose logit
// gradient has a few non-zeros per row (the classifier rows of the answers instead of a full-vocabulary product).
//
// accumulate_scores: 1-D grid-stride over groups·width elements, any block size. Element (p, c) owns
//   sums[first_row + p, first_column + c] and walks the rows of group p in ascending order, so rows that share a
//   position add without atomics, in the same order as the CPU op (bit for bit). `groups` holds CSR offsets
//   starts[group_count + 1] followed by the row list. Baseline kind (ScoreBaselineKind): 0 zero, 1 per row
//   [rows, width], 2 per position [*, width] read at first_row + p.
// gather_scaled_rows: grid-stride over count·width; destination[i, :] = source[rows[i], :] · scales[i]; `index`
//   holds rows[count] followed by the scales' bits.
// sparse_matmul_input_grad: grid-stride over rows·width; dx[r, :] = Σ_j v[r, j] · w[col[r, j], :] in entry
//   order (fused multiply-add, as a product's accumulator), entries with column −1 skipped; `entries` holds
//   columns[rows·per_row] followed by the values' bits.
//
// Products and sums are rounded one at a time, as the CPU op does (ScoreOps): nt_mul_rn / nt_add_rn (nt_device.h).
#include "nt_device.h"


extern "C" __global__ void accumulate_scores(const float* __restrict__ clean, const float* __restrict__ baseline,
                                             const float* __restrict__ gradient, float scale,
                                             const int* __restrict__ groups, int group_count, int width,
                                             int baseline_kind, float* __restrict__ sums, int sums_stride,
                                             int first_row, int first_column) {
  const long long n = (long long)group_count * width;
  const int* rows = groups + group_count + 1;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const int p = (int)(e / width), c = (int)(e - (long long)p * width);
    float* out = sums + (long long)(first_row + p) * sums_stride + first_column + c;
    const float position_baseline = baseline_kind == 2 ? baseline[(long long)(first_row + p) * width + c] : 0.0f;
    float acc = *out;
    for (int j = groups[p]; j < groups[p + 1]; ++j) {
      const long long i = (long long)rows[j] * width + c;
      const float b = baseline_kind == 1 ? baseline[i] : position_baseline;
      const float delta = nt_add_rn(b, -clean[i]);
      acc = nt_add_rn(acc, nt_mul_rn(nt_mul_rn(delta, gradient[i]), scale));
    }
    *out = acc;
  }
}
NT_HOST_LAUNCHER(accumulate_scores)

extern "C" __global__ void gather_scaled_rows(const float* __restrict__ source, const int* __restrict__ index,
                                              float* __restrict__ destination, int count, int width,
                                              int source_rows) {
  const long long n = (long long)count * width;
  const float* scales = reinterpret_cast<const float*>(index + count);
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const long long i = e / width, c = e - i * width;
    const int r = index[i];
    destination[e] = (r >= 0 && r < source_rows) ? nt_mul_rn(source[(long long)r * width + c], scales[i]) : NT_NAN;
  }
}
NT_HOST_LAUNCHER(gather_scaled_rows)

extern "C" __global__ void sparse_matmul_input_grad(const int* __restrict__ entries, int rows, int per_row,
                                                    const float* __restrict__ w, int w_rows, int width,
                                                    float* __restrict__ dx) {
  const long long n = (long long)rows * width;
  const float* values = reinterpret_cast<const float*>(entries + (long long)rows * per_row);
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const long long r = e / width, c = e - r * width;
    float acc = 0.0f;
    for (int j = 0; j < per_row; ++j) {
      const int col = entries[r * per_row + j];
      if (col >= 0 && col < w_rows) acc = fmaf(values[r * per_row + j], w[(long long)col * width + c], acc);
    }
    dx[e] = acc;
  }
}
NT_HOST_LAUNCHER(sparse_matmul_input_grad)
