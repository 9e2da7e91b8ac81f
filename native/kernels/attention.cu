// attention.cu — causal grouped-query attention: forward (z and the probabilities) and backward under an
// AttentionRule. Rows of q/k/v/z are b·T + t; query head h reads kv head h / (heads / kv_heads).
//
// Version 1, written for clarity over speed: a block owns NT_ATTN_ROWS query rows of one (batch, head); each warp
// owns some of those rows. Keys (or values) are staged through shared memory 32 at a time, one per lane, so a
// lane computes one whole dot product per tile from shared memory. The probabilities go to their output
// [B, H, T, T] directly — the op returns them anyway (RelP and the FreezePattern rule read them back) — so no
// online softmax is needed. A fused flash-style kernel can come later and must match this one.
//
// Launch (all three kernels): blockDim.x a multiple of 32 (128 in CudaBackend), grid = (ceil(T/NT_ATTN_ROWS),
// heads or kv_heads, batch). attention_forward and attention_backward_dq take
// NT_ATTN_KEY_TILE·(head_dim + 1)·4 bytes of dynamic shared memory (the +1 pads rows onto distinct banks).
#include "nt_device.h"

#define NT_ATTN_ROWS 16
#define NT_ATTN_KEY_TILE 32

// out[t·T + u] = (a_t · tile_u) · scale for every row t of this block and key u ≤ t, where a rows are
// a_base + t·a_stride and the tiled rows are tiled_base + u·tiled_stride. The loop over key tiles stops at the
// block's last row, and every thread of the block runs it the same number of times (barriers inside).
static __device__ __forceinline__ void nt_attn_scores(const float* a_base, long long a_stride,
                                                      const float* tiled_base, long long tiled_stride, float* tile,
                                                      float* out, int t0, int t_end, int T, int hd, float scale) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5, ld = hd + 1;
  for (int u0 = 0; u0 < t_end; u0 += NT_ATTN_KEY_TILE) {
    for (int e = threadIdx.x; e < NT_ATTN_KEY_TILE * hd; e += blockDim.x) {
      const int j = e / hd, i = e - j * hd, u = u0 + j;
      tile[j * ld + i] = u < T ? tiled_base[u * tiled_stride + i] : 0.0f;
    }
    __syncthreads();
    for (int t = t0 + warp; t < t_end; t += warps) {
      const int u = u0 + lane;
      if (u <= t) {
        const float* at = a_base + t * a_stride;
        const float* bu = tile + lane * ld;
        float dot = 0.0f;
        for (int i = 0; i < hd; ++i) dot += at[i] * bu[i];
        out[(long long)t * T + u] = dot * scale;
      }
    }
    __syncthreads();  // the next tile overwrites this one
  }
}

extern "C" __global__ void attention_forward(const float* __restrict__ q, const float* __restrict__ k,
                                             const float* __restrict__ v, float* __restrict__ z,
                                             float* __restrict__ probs, int seq_len, int heads, int kv_heads,
                                             int head_dim, float scale) {
  NT_DYNAMIC_SHARED(float, tile);
  const int T = seq_len, hd = head_dim;
  const int b = blockIdx.z, h = blockIdx.y, kvh = h / (heads / kv_heads);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const int t0 = blockIdx.x * NT_ATTN_ROWS, t_end = nt_min(t0 + NT_ATTN_ROWS, T);
  const long long qs = (long long)heads * hd, kvs = (long long)kv_heads * hd;
  const float* qb = q + (long long)b * T * qs + (long long)h * hd;
  const float* kb = k + (long long)b * T * kvs + (long long)kvh * hd;
  const float* vb = v + (long long)b * T * kvs + (long long)kvh * hd;
  float* zb = z + (long long)b * T * qs + (long long)h * hd;
  float* P = probs + ((long long)b * heads + h) * T * T;

  // 1. scaled scores into the probability rows. Lane l writes keys u ≡ l (mod 32), and reads only those in 2.
  nt_attn_scores(qb, qs, kb, kvs, tile, P, t0, t_end, T, hd, scale);

  // 2. per row (one warp): softmax in place, zeros above the diagonal, then z_t = Σ_u p_tu v_u.
  for (int t = t0 + warp; t < t_end; t += warps) {
    float* pt = P + (long long)t * T;
    float m = -NT_INFINITY;
    for (int u = lane; u <= t; u += 32) m = fmaxf(m, pt[u]);
    m = nt_warp_max(m);
    float sum = 0.0f;
    for (int u = lane; u <= t; u += 32) {
      const float e = __expf(pt[u] - m);
      pt[u] = e;
      sum += e;
    }
    sum = nt_warp_sum(sum);
    const float inv = 1.0f / sum;
    for (int u = lane; u < T; u += 32) pt[u] = u <= t ? pt[u] * inv : 0.0f;
    __syncwarp();  // every lane now reads the whole row
    for (int i = lane; i < hd; i += 32) {
      float acc = 0.0f;
      for (int u = 0; u <= t; ++u) acc += pt[u] * vb[u * kvs + i];
      zb[t * qs + i] = acc;
    }
  }
}
NT_HOST_LAUNCHER(attention_forward)

// Backward, part 1 (only under the Gradient rule; FreezePattern gives dq = 0 and skips it):
//   dp_tu = dz_t · v_u,   ds_tu = p_tu (dp_tu − Σ_u' p_tu' dp_tu') · scale,   dq_t = Σ_u ds_tu k_u.
// ds [B, H, T, T] is scratch (upper triangle left unwritten) that part 2 reads for dk.
extern "C" __global__ void attention_backward_dq(const float* __restrict__ dz, const float* __restrict__ k,
                                                 const float* __restrict__ v, const float* __restrict__ probs,
                                                 float* __restrict__ ds, float* __restrict__ dq, int seq_len,
                                                 int heads, int kv_heads, int head_dim, float scale) {
  NT_DYNAMIC_SHARED(float, tile);
  const int T = seq_len, hd = head_dim;
  const int b = blockIdx.z, h = blockIdx.y, kvh = h / (heads / kv_heads);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const int t0 = blockIdx.x * NT_ATTN_ROWS, t_end = nt_min(t0 + NT_ATTN_ROWS, T);
  const long long qs = (long long)heads * hd, kvs = (long long)kv_heads * hd;
  const float* dzb = dz + (long long)b * T * qs + (long long)h * hd;
  const float* kb = k + (long long)b * T * kvs + (long long)kvh * hd;
  const float* vb = v + (long long)b * T * kvs + (long long)kvh * hd;
  float* dqb = dq + (long long)b * T * qs + (long long)h * hd;
  const float* P = probs + ((long long)b * heads + h) * T * T;
  float* DS = ds + ((long long)b * heads + h) * T * T;

  nt_attn_scores(dzb, qs, vb, kvs, tile, DS, t0, t_end, T, hd, 1.0f);  // dp, unscaled

  for (int t = t0 + warp; t < t_end; t += warps) {
    const float* pt = P + (long long)t * T;
    float* dst = DS + (long long)t * T;
    float pdp = 0.0f;
    for (int u = lane; u <= t; u += 32) pdp += pt[u] * dst[u];
    pdp = nt_warp_sum(pdp);
    for (int u = lane; u <= t; u += 32) dst[u] = pt[u] * (dst[u] - pdp) * scale;
    __syncwarp();
    for (int i = lane; i < hd; i += 32) {
      float acc = 0.0f;
      for (int u = 0; u <= t; ++u) acc += dst[u] * kb[u * kvs + i];
      dqb[t * qs + i] = acc;
    }
  }
}
NT_HOST_LAUNCHER(attention_backward_dq)

// Backward, part 2: a block owns NT_ATTN_ROWS key rows u of one (batch, kv head) and sums over the query heads
// of its group and the rows t ≥ u — so dk/dv need no atomics, and the order (head, then t) is the CPU op's.
//   dv_u = Σ_h Σ_t p_tu dz_t,   dk_u = Σ_h Σ_t ds_tu q_t (exact != 0), or 0 under FreezePattern (ds unused).
extern "C" __global__ void attention_backward_dkdv(const float* __restrict__ dz, const float* __restrict__ q,
                                                   const float* __restrict__ probs, const float* __restrict__ ds,
                                                   float* __restrict__ dk, float* __restrict__ dv, int seq_len,
                                                   int heads, int kv_heads, int head_dim, int exact) {
  const int T = seq_len, hd = head_dim, group = heads / kv_heads;
  const int b = blockIdx.z, kvh = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const int u0 = blockIdx.x * NT_ATTN_ROWS, u_end = nt_min(u0 + NT_ATTN_ROWS, T);
  const long long qs = (long long)heads * hd, kvs = (long long)kv_heads * hd;
  for (int u = u0 + warp; u < u_end; u += warps) {
    for (int i = lane; i < hd; i += 32) {
      float acc_v = 0.0f, acc_k = 0.0f;
      for (int g = 0; g < group; ++g) {
        const int h = kvh * group + g;
        const float* P = probs + ((long long)b * heads + h) * T * T;
        const float* DS = ds + ((long long)b * heads + h) * T * T;
        const float* dzc = dz + (long long)b * T * qs + (long long)h * hd + i;
        const float* qc = q + (long long)b * T * qs + (long long)h * hd + i;
        for (int t = u; t < T; ++t) {
          acc_v += P[(long long)t * T + u] * dzc[t * qs];
          if (exact) acc_k += DS[(long long)t * T + u] * qc[t * qs];
        }
      }
      const long long o = ((long long)b * T + u) * kvs + (long long)kvh * hd + i;
      dv[o] = acc_v;
      dk[o] = acc_k;
    }
  }
}
NT_HOST_LAUNCHER(attention_backward_dkdv)
