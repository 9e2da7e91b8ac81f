// elementwise.cu — the small ops of the residual stream and of interventions: add (in place and into a third tensor), intervene (x·scale+offset),
// multiply, fill, row gather / scatter-add, and the column split of a stacked bf16 product's output.
//
// Launch: 1-D grid-stride loops, any block size. gather_rows runs over count·width elements (scatter_add_rows_bf16
// over the destination's); scatter_add_rows over the width only: one thread owns a column and walks the index list in order, so repeated indices add up
// without atomics and in the same order as the CPU op (the result is deterministic, bit for bit).
#include "nt_bf16.h"

extern "C" __global__ void add_inplace(float* __restrict__ destination, const float* __restrict__ source, long long n) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) destination[i] += source[i];
}
NT_HOST_LAUNCHER(add_inplace)

// sum = a + b, out of place: the forward's residual output (one launch and 12 bytes a value, where a copy then an
// in-place add are two and 20). The same one fp32 addition, so the same bits as copy + add_inplace.
extern "C" __global__ void add_into(float* __restrict__ sum, const float* __restrict__ a, const float* __restrict__ b, long long n) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) sum[i] = a[i] + b[i];
}
NT_HOST_LAUNCHER(add_into)

// One rounding (fused multiply-add), like TensorPrimitives.FusedMultiplyAdd in the CPU op.
extern "C" __global__ void intervene_inplace(float* __restrict__ x, const float* __restrict__ scale,
                                             const float* __restrict__ offset, long long n) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) x[i] = fmaf(x[i], scale[i], offset[i]);
}
NT_HOST_LAUNCHER(intervene_inplace)

extern "C" __global__ void multiply_inplace(float* __restrict__ x, const float* __restrict__ scale, long long n) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) x[i] *= scale[i];
}
NT_HOST_LAUNCHER(multiply_inplace)

extern "C" __global__ void fill_f32(float* __restrict__ x, float value, long long n) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) x[i] = value;
}
NT_HOST_LAUNCHER(fill_f32)

// destination[i, :] = source[rows[i], :]. Indices are checked on the host; one outside [0, source_rows) gives
// a NaN row rather than a read out of bounds.
extern "C" __global__ void gather_rows(const float* __restrict__ source, const int* __restrict__ rows,
                                       float* __restrict__ destination, int count, int width, int source_rows) {
  const long long n = (long long)count * width;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const long long i = e / width, c = e - i * width;
    const int r = rows[i];
    destination[e] = (r >= 0 && r < source_rows) ? source[(long long)r * width + c] : NT_NAN;
  }
}
NT_HOST_LAUNCHER(gather_rows)

// destination[rows[i], :] += source[i, :], i in order. Indices outside [0, destination_rows) are skipped
// (the host has already refused them).
extern "C" __global__ void scatter_add_rows(const float* __restrict__ source, const int* __restrict__ rows,
                                            float* __restrict__ destination, int count, int width,
                                            int destination_rows) {
  for (long long c = nt_global_index(); c < width; c += nt_grid_stride()) {
    for (int i = 0; i < count; ++i) {
      const int r = rows[i];
      if (r >= 0 && r < destination_rows) destination[(long long)r * width + c] += source[(long long)i * width + c];
    }
  }
}
NT_HOST_LAUNCHER(scatter_add_rows)

// scatter_add_rows over every element of destination (grid-stride over destination_rows·width), which also stores the
// whole result rounded to bf16 into destination16 (same layout): the bf16 operand of the product that reads it next
// (the backward head's residual gradient, read by the top layer's W2 input-gradient product). Each element adds its
// sources in index order, as scatter_add_rows does, so the fp32 result is the same bit for bit; every element walks
// the whole index list, so the launcher uses this only for short lists (CudaBackend.ScatterBf16MaxRows).
extern "C" __global__ void scatter_add_rows_bf16(const float* __restrict__ source, const int* __restrict__ rows,
                                                 float* __restrict__ destination, unsigned short* __restrict__ destination16,
                                                 int count, int width, int destination_rows) {
  const long long n = (long long)destination_rows * width;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const long long r = e / width, c = e - r * width;
    float v = destination[e];
    for (int i = 0; i < count; ++i)
      if (rows[i] == r) v += source[(long long)i * width + c];
    destination[e] = v;
    destination16[e] = nt_bf16_from_float(v);
  }
}
NT_HOST_LAUNCHER(scatter_add_rows_bf16)

// split_columns_bf16: source [rows, wa + wb + wc] → a [rows, wa], b [rows, wb], c [rows, wc] (a width of 0 leaves
// that part out; its pointers are not read), each part also rounded to bf16 into a16 / b16 / c16 (same layout; a
// null one is skipped). The outputs of one bf16 product against row-stacked weights ([Wq; Wk; Wv]) with their bf16
// shadows, handed to the ops that take them one by one. Grid-stride over rows·(wa + wb + wc).
extern "C" __global__ void split_columns_bf16(const float* __restrict__ source, int rows, float* __restrict__ a,
                                              unsigned short* __restrict__ a16, int wa, float* __restrict__ b,
                                              unsigned short* __restrict__ b16, int wb, float* __restrict__ c,
                                              unsigned short* __restrict__ c16, int wc) {
  const int width = wa + wb + wc;
  const long long n = (long long)rows * width;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const long long r = e / width;
    const int col = (int)(e - r * width);
    const float v = source[e];
    float* to;
    unsigned short* to16;
    long long at;
    if (col < wa) { to = a; to16 = a16; at = r * wa + col; }
    else if (col < wa + wb) { to = b; to16 = b16; at = r * wb + (col - wa); }
    else { to = c; to16 = c16; at = r * wc + (col - wa - wb); }
    to[at] = v;
    if (to16) to16[at] = nt_bf16_from_float(v);
  }
}
NT_HOST_LAUNCHER(split_columns_bf16)
