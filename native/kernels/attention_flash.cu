// attention_flash.cu — streaming (flash-style) causal GQA attention, fp32: the forward keeps L = m + log ℓ per row
// and head instead of the [B, H, T, T] pattern, and the backward recomputes the pattern from L
// (docs/streaming-attention.md). Rows of q/k/v/z are b·T + t; query head h reads kv head h / (heads / kv_heads);
// lse and D are [B, H, T].
//
// Version 1, fp32 and correct first: one thread owns one query row (forward, dq) or one key row (dk/dv) and
// accumulates straight into its own output row, so no element has two writers — deterministic, no atomics.
// Key/value (or query/dz) tiles of NT_FLASH_TILE rows are staged in shared memory and shared by the block's
// NT_FLASH_ROWS threads; tiles wholly above the causal diagonal are never loaded. Not yet: bf16 tensor-core MMA
// (mma.sync / ldmatrix / cp.async), which needs emulator support for those instructions first.
//
// Launch: block = NT_FLASH_ROWS threads (CudaBackend.FlashRows); grid = (ceil(T/NT_FLASH_ROWS), heads (forward,
// dq) or kv_heads (dkdv), batch); dynamic shared memory NT_FLASH_TILE·(2·head_dim + 2)·4 bytes.
// attention_flash_rowdot (and its _bf16 form, which also rounds dz to bf16) is grid-stride over batch·heads·T.
#include "nt_bf16.h"

// log of ℓ for L = m + log ℓ: lg2.approx on the GPU (as __expf is ex2.approx), the same formula on the host.
#if defined(__CUDA_ARCH__) || defined(__CUDACC__)
static __device__ __forceinline__ float nt_flash_log(float x) { return __nvvm_lg2_approx_f(x) * 0.6931471805599453f; }
#else
inline float nt_flash_log(float x) { return std::log2f(x) * 0.6931471805599453f; }
#endif

#define NT_FLASH_ROWS 64
#define NT_FLASH_TILE 32

// Stages rows u0..u0+NT_FLASH_TILE of a and b ([T, stride] at the given bases) into shared memory, zeros past T.
static __device__ __forceinline__ void nt_flash_stage(const float* a, const float* b, long long stride, int u0, int T,
                                                      int hd, float* sa, float* sb) {
  for (int e = threadIdx.x; e < NT_FLASH_TILE * hd; e += blockDim.x) {
    const int j = e / hd, i = e - j * hd, u = u0 + j;
    sa[e] = u < T ? a[u * stride + i] : 0.0f;
    sb[e] = u < T ? b[u * stride + i] : 0.0f;
  }
}

static __device__ __forceinline__ float nt_flash_dot(const float* x, const float* y, int hd) {
  float acc = 0.0f;
  for (int i = 0; i < hd; ++i) acc = fmaf(x[i], y[i], acc);
  return acc;
}

extern "C" __global__ void attention_flash_forward(const float* __restrict__ q, const float* __restrict__ k,
                                                   const float* __restrict__ v, float* __restrict__ z,
                                                   float* __restrict__ lse, int seq_len, int heads, int kv_heads,
                                                   int head_dim, float scale) {
  NT_DYNAMIC_SHARED(float, smem);
  const int T = seq_len, hd = head_dim;
  const int b = blockIdx.z, h = blockIdx.y, kvh = h / (heads / kv_heads);
  const int t0 = blockIdx.x * NT_FLASH_ROWS, t_end = nt_min(t0 + NT_FLASH_ROWS, T), t = t0 + threadIdx.x;
  const long long qs = (long long)heads * hd, kvs = (long long)kv_heads * hd;
  float* ks = smem;
  float* vs = smem + NT_FLASH_TILE * hd;
  const float* qt = q + ((long long)b * T + t) * qs + (long long)h * hd;
  float* zt = z + ((long long)b * T + t) * qs + (long long)h * hd;
  const bool live = t < T;
  if (live)
    for (int i = 0; i < hd; ++i) zt[i] = 0.0f;
  float m = -NT_INFINITY, l = 0.0f;
  float sc[NT_FLASH_TILE];
  for (int u0 = 0; u0 < t_end; u0 += NT_FLASH_TILE) {
    nt_flash_stage(k + (long long)b * T * kvs + (long long)kvh * hd, v + (long long)b * T * kvs + (long long)kvh * hd,
                   kvs, u0, T, hd, ks, vs);
    __syncthreads();
    if (live && u0 <= t) {
      const int n = nt_min(NT_FLASH_TILE, t - u0 + 1);
      float mt = -NT_INFINITY;
      for (int j = 0; j < n; ++j) {
        sc[j] = nt_flash_dot(qt, ks + j * hd, hd) * scale;
        mt = fmaxf(mt, sc[j]);
      }
      const float m_new = fmaxf(m, mt);
      const float alpha = m == -NT_INFINITY ? 0.0f : __expf(m - m_new);
      float sum = 0.0f;
      for (int j = 0; j < n; ++j) {
        sc[j] = __expf(sc[j] - m_new);
        sum += sc[j];
      }
      l = alpha * l + sum;
      for (int i = 0; i < hd; ++i) {
        float acc = alpha * zt[i];
        for (int j = 0; j < n; ++j) acc = fmaf(sc[j], vs[j * hd + i], acc);
        zt[i] = acc;
      }
      m = m_new;
    }
    __syncthreads();  // the next tile overwrites this one
  }
  if (live) {
    const float inv = 1.0f / l;
    for (int i = 0; i < hd; ++i) zt[i] *= inv;
    lse[((long long)b * heads + h) * T + t] = m + nt_flash_log(l);
  }
}
NT_HOST_LAUNCHER(attention_flash_forward)

// D[(b·heads + h)·T + t] = dz_t · o_t for head h: the softmax-gradient row term of the exact backward.
extern "C" __global__ void attention_flash_rowdot(const float* __restrict__ dz, const float* __restrict__ o,
                                                  float* __restrict__ d_out, int batch, int seq_len, int heads,
                                                  int head_dim) {
  const long long n = (long long)batch * heads * seq_len;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const int t = (int)(e % seq_len), h = (int)(e / seq_len % heads), b = (int)(e / seq_len / heads);
    const long long off = ((long long)b * seq_len + t) * heads * head_dim + (long long)h * head_dim;
    d_out[e] = nt_flash_dot(dz + off, o + off, head_dim);
  }
}
NT_HOST_LAUNCHER(attention_flash_rowdot)

// As attention_flash_rowdot, and dz16 = bf16(dz) (same layout; each thread rounds the head-dim slice it reads):
// the bf16 backward kernels' dz operand, made by the one pass that reads dz anyway.
extern "C" __global__ void attention_flash_rowdot_bf16(const float* __restrict__ dz, const float* __restrict__ o,
                                                       float* __restrict__ d_out, unsigned short* __restrict__ dz16,
                                                       int batch, int seq_len, int heads, int head_dim) {
  const long long n = (long long)batch * heads * seq_len;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const int t = (int)(e % seq_len), h = (int)(e / seq_len % heads), b = (int)(e / seq_len / heads);
    const long long off = ((long long)b * seq_len + t) * heads * head_dim + (long long)h * head_dim;
    d_out[e] = nt_flash_dot(dz + off, o + off, head_dim);
    for (int i = 0; i < head_dim; i++) dz16[off + i] = nt_bf16_from_float(dz[off + i]);
  }
}
NT_HOST_LAUNCHER(attention_flash_rowdot_bf16)

// dq_t = c·Σ_{u ≤ t} P_tu (dP_tu − D_t) k_u with P_tu = e^(c·q_t·k_u − L_t), dP_tu = dz_t·v_u. Query-row-major.
extern "C" __global__ void attention_flash_backward_dq(const float* __restrict__ dz, const float* __restrict__ q,
                                                       const float* __restrict__ k, const float* __restrict__ v,
                                                       const float* __restrict__ lse, const float* __restrict__ dsum,
                                                       float* __restrict__ dq, int seq_len, int heads, int kv_heads,
                                                       int head_dim, float scale) {
  NT_DYNAMIC_SHARED(float, smem);
  const int T = seq_len, hd = head_dim;
  const int b = blockIdx.z, h = blockIdx.y, kvh = h / (heads / kv_heads);
  const int t0 = blockIdx.x * NT_FLASH_ROWS, t_end = nt_min(t0 + NT_FLASH_ROWS, T), t = t0 + threadIdx.x;
  const long long qs = (long long)heads * hd, kvs = (long long)kv_heads * hd;
  float* ks = smem;
  float* vs = smem + NT_FLASH_TILE * hd;
  const long long row = ((long long)b * T + t) * qs + (long long)h * hd;
  const bool live = t < T;
  const float L = live ? lse[((long long)b * heads + h) * T + t] : 0.0f;
  const float D = live ? dsum[((long long)b * heads + h) * T + t] : 0.0f;
  if (live)
    for (int i = 0; i < hd; ++i) dq[row + i] = 0.0f;
  for (int u0 = 0; u0 < t_end; u0 += NT_FLASH_TILE) {
    nt_flash_stage(k + (long long)b * T * kvs + (long long)kvh * hd, v + (long long)b * T * kvs + (long long)kvh * hd,
                   kvs, u0, T, hd, ks, vs);
    __syncthreads();
    if (live && u0 <= t) {
      const int n = nt_min(NT_FLASH_TILE, t - u0 + 1);
      for (int j = 0; j < n; ++j) {
        const float p = __expf(nt_flash_dot(q + row, ks + j * hd, hd) * scale - L);
        const float ds = p * (nt_flash_dot(dz + row, vs + j * hd, hd) - D) * scale;
        for (int i = 0; i < hd; ++i) dq[row + i] = fmaf(ds, ks[j * hd + i], dq[row + i]);
      }
    }
    __syncthreads();
  }
}
NT_HOST_LAUNCHER(attention_flash_backward_dq)

// Key-row-major: dv_u = Σ_h Σ_{t ≥ u} P_tu dz_t and (exact) dk_u = c·Σ_h Σ_{t ≥ u} P_tu (dP_tu − D_t) q_t over the
// query heads h of kv head u's group. exact = 0 (FreezePattern) writes dk = 0.
extern "C" __global__ void attention_flash_backward_dkdv(const float* __restrict__ dz, const float* __restrict__ q,
                                                         const float* __restrict__ k, const float* __restrict__ v,
                                                         const float* __restrict__ lse, const float* __restrict__ dsum,
                                                         float* __restrict__ dk, float* __restrict__ dv, int seq_len,
                                                         int heads, int kv_heads, int head_dim, float scale,
                                                         int exact) {
  NT_DYNAMIC_SHARED(float, smem);
  const int T = seq_len, hd = head_dim, group = heads / kv_heads;
  const int b = blockIdx.z, kvh = blockIdx.y;
  const int u0 = blockIdx.x * NT_FLASH_ROWS, u = u0 + threadIdx.x;
  const long long qs = (long long)heads * hd, kvs = (long long)kv_heads * hd;
  float* qsh = smem;
  float* zsh = smem + NT_FLASH_TILE * hd;
  float* lsh = smem + 2 * NT_FLASH_TILE * hd;
  float* dsh = lsh + NT_FLASH_TILE;
  const long long row = ((long long)b * T + u) * kvs + (long long)kvh * hd;
  const bool live = u < T;
  if (live)
    for (int i = 0; i < hd; ++i) dk[row + i] = dv[row + i] = 0.0f;
  for (int g = 0; g < group; ++g) {
    const int h = kvh * group + g;
    const float* lh = lse + ((long long)b * heads + h) * T;
    const float* dh = dsum + ((long long)b * heads + h) * T;
    // Query tiles that hold a row t ≥ u0: those wholly above the block's first key see none of its keys.
    for (int t0 = u0 / NT_FLASH_TILE * NT_FLASH_TILE; t0 < T; t0 += NT_FLASH_TILE) {
      nt_flash_stage(q + (long long)b * T * qs + (long long)h * hd, dz + (long long)b * T * qs + (long long)h * hd, qs,
                     t0, T, hd, qsh, zsh);
      for (int j = threadIdx.x; j < NT_FLASH_TILE; j += blockDim.x) {
        lsh[j] = t0 + j < T ? lh[t0 + j] : 0.0f;
        dsh[j] = t0 + j < T && exact ? dh[t0 + j] : 0.0f;
      }
      __syncthreads();
      if (live) {
        const int jt = nt_min(NT_FLASH_TILE, T - t0);
        for (int j = u > t0 ? u - t0 : 0; j < jt; ++j) {
          const float p = __expf(nt_flash_dot(qsh + j * hd, k + row, hd) * scale - lsh[j]);
          for (int i = 0; i < hd; ++i) dv[row + i] = fmaf(p, zsh[j * hd + i], dv[row + i]);
          if (exact) {
            const float ds = p * (nt_flash_dot(zsh + j * hd, v + row, hd) - dsh[j]) * scale;
            for (int i = 0; i < hd; ++i) dk[row + i] = fmaf(ds, qsh[j * hd + i], dk[row + i]);
          }
        }
      }
      __syncthreads();
    }
  }
}
NT_HOST_LAUNCHER(attention_flash_backward_dkdv)
