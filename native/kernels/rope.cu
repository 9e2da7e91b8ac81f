// rope.cu — rotary position embedding in place on x [rows, heads·head_dim]; row r is position r mod seq_len.
//
// Pair i of a head is (2i, 2i+1) when interleaved (llama2.c / GGUF / Meta layout) or (i, i + head_dim/2)
// (Hugging Face layout); cos/sin are [seq_len, head_dim/2]. inverse rotates by −θ, which is the backward.
// Launch: 1-D grid-stride over rows·heads·head_dim/2 pairs, any block size; each thread owns whole pairs, so
// the in-place update never races. rope_apply_bf16 also stores the result rounded to bf16 into x16, whose rows are
// x16_stride values apart (heads·head_dim: x's own layout; wider: x's columns of a row-wise concatenation, such as the
// [dq | dk | dv] operand of the backward's stacked Q/K/V input-gradient product).
#include "nt_bf16.h"

// The rotation of one pair (a, b) by the angle whose cosine and sine are c and s: the one expression every RoPE kernel
// here uses, so the fused split below rounds exactly as rope_apply does.
static __device__ __forceinline__ void nt_rope_rotate(float a, float b, float c, float s, float& y0, float& y1) {
  y0 = a * c - b * s;
  y1 = a * s + b * c;
}

// One rotated pair e; when x16 is not null its bf16 copy is stored too (nt_bf16.h), x16_stride values a row.
static __device__ __forceinline__ void nt_rope_pair(float* x, unsigned short* x16, long long x16_stride, const float* cos_table,
                                                    const float* sin_table, long long e, int heads, int head_dim,
                                                    int seq_len, int interleaved, float sign) {
  const int half = head_dim / 2;
  const int i = (int)(e % half);
  const long long rh = e / half;  // row·heads + head
  const int r = (int)(rh / heads), pos = r % seq_len;
  const float c = cos_table[(long long)pos * half + i], s = sign * sin_table[(long long)pos * half + i];
  const long long base = rh * head_dim;
  const int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
  const float a = x[base + i0], b = x[base + i1];
  float y0, y1;
  nt_rope_rotate(a, b, c, s, y0, y1);
  x[base + i0] = y0;
  x[base + i1] = y1;
  if (x16) {
    const long long base16 = (long long)r * x16_stride + (rh - (long long)r * heads) * head_dim;
    x16[base16 + i0] = nt_bf16_from_float(y0);
    x16[base16 + i1] = nt_bf16_from_float(y1);
  }
}

extern "C" __global__ void rope_apply(float* __restrict__ x, const float* __restrict__ cos_table,
                                      const float* __restrict__ sin_table, int rows, int heads, int head_dim,
                                      int seq_len, int interleaved, int inverse) {
  const long long pairs = (long long)rows * heads * (head_dim / 2);
  for (long long e = nt_global_index(); e < pairs; e += nt_grid_stride())
    nt_rope_pair(x, nullptr, 0, cos_table, sin_table, e, heads, head_dim, seq_len, interleaved, inverse ? -1.0f : 1.0f);
}
NT_HOST_LAUNCHER(rope_apply)

// As rope_apply, and x16 = bf16(x) of the rotated values: the bf16 attention's q / k operand under GemmPrecision.Bf16
// (forward), or dq / dk's columns of the concatenated [dq | dk | dv] operand (inverse).
extern "C" __global__ void rope_apply_bf16(float* __restrict__ x, const float* __restrict__ cos_table,
                                           const float* __restrict__ sin_table, unsigned short* __restrict__ x16,
                                           int x16_stride, int rows, int heads, int head_dim, int seq_len, int interleaved,
                                           int inverse) {
  const long long pairs = (long long)rows * heads * (head_dim / 2);
  for (long long e = nt_global_index(); e < pairs; e += nt_grid_stride())
    nt_rope_pair(x, x16, x16_stride, cos_table, sin_table, e, heads, head_dim, seq_len, interleaved, inverse ? -1.0f : 1.0f);
}
NT_HOST_LAUNCHER(rope_apply_bf16)

// The forward's Q/K/V split with RoPE fused: source [rows, wq + wk + wv] (one product against [Wq; Wk; Wv]) into
// q [rows, wq] and k [rows, wk], each rotated (head_dim channels a head, row r at position r mod seq_len), and v
// [rows, wv] as it is, each part also rounded to bf16 into q16 / k16 / v16 (same layouts): what split_columns_bf16
// and then rope_apply_bf16 on q and k give, bit for bit, in one pass over the product. Grid-stride over
// rows·(wq/2 + wk/2 + wv) items: a rotated pair of q or k, or one value of v.
extern "C" __global__ void split_qkv_rope_bf16(const float* __restrict__ source, int rows, float* __restrict__ q,
                                               unsigned short* __restrict__ q16, int wq, float* __restrict__ k,
                                               unsigned short* __restrict__ k16, int wk, float* __restrict__ v,
                                               unsigned short* __restrict__ v16, int wv, const float* __restrict__ cos_table,
                                               const float* __restrict__ sin_table, int head_dim, int seq_len, int interleaved) {
  const int half = head_dim / 2, pq = wq / 2, pk = wk / 2, per_row = pq + pk + wv, width = wq + wk + wv;
  const long long n = (long long)rows * per_row;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const long long r = e / per_row;
    int j = (int)(e - r * per_row);
    const float* src = source + r * width;
    if (j >= pq + pk) {
      j -= pq + pk;
      const float value = src[wq + wk + j];
      v[r * wv + j] = value;
      v16[r * wv + j] = nt_bf16_from_float(value);
      continue;
    }
    const bool is_q = j < pq;
    if (!is_q) j -= pq;
    const int w = is_q ? wq : wk, head = j / half, i = j - head * half, pos = (int)(r % seq_len);
    const int i0 = head * head_dim + (interleaved ? 2 * i : i), i1 = head * head_dim + (interleaved ? 2 * i + 1 : i + half);
    const float* in = src + (is_q ? 0 : wq);
    float y0, y1;
    nt_rope_rotate(in[i0], in[i1], cos_table[(long long)pos * half + i], sin_table[(long long)pos * half + i], y0, y1);
    float* out = (is_q ? q : k) + r * w;
    unsigned short* out16 = (is_q ? q16 : k16) + r * w;
    out[i0] = y0;
    out[i1] = y1;
    out16[i0] = nt_bf16_from_float(y0);
    out16[i1] = nt_bf16_from_float(y1);
  }
}
NT_HOST_LAUNCHER(split_qkv_rope_bf16)
