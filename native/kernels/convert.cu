// convert.cu — float32 ↔ bfloat16 (nt_bf16.h) for the bf16 matrix products: activations rounded once per product
// (or, with several, into one concatenated operand), and the reads of bf16-stored weights outside products.
// Launch: 1-D grid-stride loops, any block size.
//   f32_to_bf16        destination[i] = bf16(source[i])
//   f32_to_bf16_concat destination [rows, wa + wb + wc] = bf16 of the row-wise concatenation [a | b | c] (each
//                      [rows, w]; a width of 0 leaves that part out): the summed input-gradient product's operand
//   bf16_to_f32        destination[i] = source[i] widened (exact)
//   gather_bf16_rows   output[r, :] = table[ids[r], :] widened, table bf16 [vocab, dim]: the embedding lookup and
//                      the classifier-row gather of bf16-stored weights; an id outside [0, vocab) gives a NaN row
//                      (as embedding_forward), so a missed host check shows instead of reading out of bounds.
#include "nt_bf16.h"

extern "C" __global__ void f32_to_bf16(const float* __restrict__ source, unsigned short* __restrict__ destination, long long n) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) destination[i] = nt_bf16_from_float(source[i]);
}
NT_HOST_LAUNCHER(f32_to_bf16)

extern "C" __global__ void f32_to_bf16_concat(const float* __restrict__ a, int wa, const float* __restrict__ b, int wb,
                                              const float* __restrict__ c, int wc, unsigned short* __restrict__ destination,
                                              int rows) {
  const int width = wa + wb + wc;
  const long long n = (long long)rows * width;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const long long r = e / width;
    const int col = (int)(e - r * width);
    const float v = col < wa ? a[r * wa + col] : col < wa + wb ? b[r * wb + (col - wa)] : c[r * wc + (col - wa - wb)];
    destination[e] = nt_bf16_from_float(v);
  }
}
NT_HOST_LAUNCHER(f32_to_bf16_concat)

extern "C" __global__ void bf16_to_f32(const unsigned short* __restrict__ source, float* __restrict__ destination, long long n) {
  for (long long i = nt_global_index(); i < n; i += nt_grid_stride()) destination[i] = nt_bf16_to_float(source[i]);
}
NT_HOST_LAUNCHER(bf16_to_f32)

extern "C" __global__ void gather_bf16_rows(const int* __restrict__ ids, const unsigned short* __restrict__ table,
                                            float* __restrict__ output, int rows, int dim, int vocab) {
  const long long n = (long long)rows * dim;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const long long r = e / dim, c = e - r * dim;
    const int id = ids[r];
    output[e] = (id >= 0 && id < vocab) ? nt_bf16_to_float(table[(long long)id * dim + c]) : NT_NAN;
  }
}
NT_HOST_LAUNCHER(gather_bf16_rows)
