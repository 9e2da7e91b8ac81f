// rope.cu — rotary position embedding in place on x [rows, heads·head_dim]; row r is position r mod seq_len.
//
// Pair i of a head is (2i, 2i+1) when interleaved (llama2.c / GGUF / Meta layout) or (i, i + head_dim/2)
// (Hugging Face layout); cos/sin are [seq_len, head_dim/2]. inverse rotates by −θ, which is the backward.
// Launch: 1-D grid-stride over rows·heads·head_dim/2 pairs, any block size; each thread owns whole pairs, so
// the in-place update never races.
#include "nt_device.h"

extern "C" __global__ void rope_apply(float* __restrict__ x, const float* __restrict__ cos_table,
                                      const float* __restrict__ sin_table, int rows, int heads, int head_dim,
                                      int seq_len, int interleaved, int inverse) {
  const int half = head_dim / 2;
  const long long pairs = (long long)rows * heads * half;
  const float sign = inverse ? -1.0f : 1.0f;
  for (long long e = nt_global_index(); e < pairs; e += nt_grid_stride()) {
    const int i = (int)(e % half);
    const long long rh = e / half;  // row·heads + head
    const int r = (int)(rh / heads), pos = r % seq_len;
    const float c = cos_table[(long long)pos * half + i], s = sign * sin_table[(long long)pos * half + i];
    float* head = x + rh * head_dim;
    const int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
    const float a = head[i0], b = head[i1];
    head[i0] = a * c - b * s;
    head[i1] = a * s + b * c;
  }
}
NT_HOST_LAUNCHER(rope_apply)
