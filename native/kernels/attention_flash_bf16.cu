// attention_flash_bf16.cu — streaming causal GQA attention on bf16 tensor cores (sm_80: mma.sync m16n8k16,
// ldmatrix, cp.async; nt_mma.h), the same algebra as attention_flash.cu (docs/streaming-attention.md): the
// forward keeps L = m + log ℓ per row and head, the backward recomputes P from L, dq query-major and dk/dv
// key-major (no floating-point atomics). q, k, v and dz are bf16 (the shadows CudaBackend's producers write); z, L, D
// and every gradient are fp32, and so are all sums (the MMA accumulates in fp32); the forward can also store z
// rounded to bf16 (z16, the output product's operand). P is rounded to bf16 for its
// products with V and dz, as in FlashAttention-2.
//
// GQA: the query rows of a block are the (position, head) pairs of one kv head's group, packed as
// r = t·group + g (head kvh·group + g), so one K/V tile in shared memory serves every query head of the group.
// Each warp owns 16 packed rows (forward, dq) or 16 keys (dk/dv); a block is 4 warps. The inner loop walks
// tiles of 32 keys (or packed query rows), double-buffered: cp.async fills the next tile while the MMAs read the
// current one. Tiles wholly above the causal diagonal are never loaded (block) or computed (warp).
//
// head_dim: a multiple of 16, at most 128 (CudaBackend uses the fp32 kernels otherwise). The register arrays
// are sized for 128 and indexed by unrolled loops with uniform guards, so they stay in registers.
// Launch: block 128 threads; grid (ceil(T·group / 64), kv_heads, batch) for forward and dq, (ceil(T / 64),
// kv_heads, batch) for dkdv; dynamic shared memory 2·64·(head_dim + 8)·2 + 2·64·4 bytes (CudaBackend.FlashBf16Shared).
#include "nt_mma.h"
#include "nt_bf16.h"

#define NT_FB_ROWS 64       // packed query rows (or keys) per block: 4 warps × 16
#define NT_FB_TILE 32       // keys (or packed query rows) per inner tile
#define NT_FB_KSTEPS 8      // head_dim / 16 at most
#define NT_FB_DTILES 16     // head_dim / 8 at most

#if defined(__CUDA_ARCH__) || defined(__CUDACC__)
static __device__ __forceinline__ float nt_fb_log(float x) { return __nvvm_lg2_approx_f(x) * 0.6931471805599453f; }
#else
inline float nt_fb_log(float x) { return std::log2f(x) * 0.6931471805599453f; }
#endif

// Queues the copies of packed rows r0 .. r0 + rows into dst (sd elements per row): row r is position t = r / group,
// slot r % group, at base + t·row_stride + (r % group)·hd. Rows with t ≥ T are zero-filled.
static __device__ __forceinline__ void nt_fb_stage(nt_bf16* dst, int sd, const nt_bf16* base, long long row_stride,
                                                   int group, int r0, int rows, int T, int hd) {
  const int chunks = hd / 8;
  for (int e = threadIdx.x; e < rows * chunks; e += blockDim.x) {
    const int i = e / chunks, c = e - i * chunks, r = r0 + i, t = r / group;
    const bool valid = t < T;
    const nt_bf16* src = valid ? base + t * row_stride + (long long)(r - t * group) * hd + c * 8 : base;
    nt_cp_async16(dst + i * sd + c * 8, src, valid);
  }
}

// This warp's 16 rows of a tile (from row0) as A fragments, one per 16 columns of head dim.
static __device__ __forceinline__ void nt_fb_a_fragments(unsigned (&a)[NT_FB_KSTEPS][4], const nt_bf16* tile, int sd, int row0, int hd) {
#pragma unroll
  for (int kk = 0; kk < NT_FB_KSTEPS; ++kk)
    if (kk * 16 < hd) nt_load_a16x16(a[kk], tile, sd, row0, kk * 16);
}

// s = a · tileᵀ: the warp's 16 rows against the tile's 32 rows, as 4 n-tiles of 8 in C layout.
static __device__ __forceinline__ void nt_fb_scores(const unsigned (&a)[NT_FB_KSTEPS][4], const nt_bf16* tile, int sd, int hd,
                                                    float (&s)[4][4]) {
#pragma unroll
  for (int n = 0; n < 4; ++n)
    for (int i = 0; i < 4; ++i) s[n][i] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < NT_FB_KSTEPS; ++kk) {
    if (kk * 16 >= hd) continue;
#pragma unroll
    for (int n = 0; n < 4; n += 2) {
      unsigned b0[2], b1[2];
      nt_load_b_nmajor(b0, b1, tile, sd, n * 8, kk * 16);
      nt_mma_bf16_16816(s[n], a[kk], b0);
      nt_mma_bf16_16816(s[n + 1], a[kk], b1);
    }
  }
}

// acc += p · tile: p the warp's 16 × 32 in C layout (rounded to bf16 here), tile 32 rows × hd.
static __device__ __forceinline__ void nt_fb_accumulate(const float (&p)[4][4], const nt_bf16* tile, int sd, int hd,
                                                        float (&acc)[NT_FB_DTILES][4]) {
#pragma unroll
  for (int ks = 0; ks < 2; ++ks) {
    unsigned a[4];
    nt_a_from_c(a, p[2 * ks], p[2 * ks + 1]);
#pragma unroll
    for (int dn = 0; dn < NT_FB_DTILES; dn += 2) {
      if (dn * 8 >= hd) continue;
      unsigned b0[2], b1[2];
      nt_load_b_kmajor(b0, b1, tile, sd, ks * 16, dn * 8);
      nt_mma_bf16_16816(acc[dn], a, b0);
      nt_mma_bf16_16816(acc[dn + 1], a, b1);
    }
  }
}

static __device__ __forceinline__ float nt_fb_quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(NT_FULL_MASK, v, 1));
  return fmaxf(v, __shfl_xor_sync(NT_FULL_MASK, v, 2));
}
static __device__ __forceinline__ float nt_fb_quad_sum(float v) {
  v += __shfl_xor_sync(NT_FULL_MASK, v, 1);
  return v + __shfl_xor_sync(NT_FULL_MASK, v, 2);
}

// Writes this lane's part of a 16-row accumulator (rows row[0], row[1] of the lane, already scaled) to out rows.
static __device__ __forceinline__ void nt_fb_store(float* out0, float* out1, const float (&acc)[NT_FB_DTILES][4], int hd, float s0, float s1) {
  const int t = threadIdx.x & 3;
#pragma unroll
  for (int dn = 0; dn < NT_FB_DTILES; ++dn) {
    if (dn * 8 >= hd) continue;
    if (out0) { out0[dn * 8 + 2 * t] = acc[dn][0] * s0; out0[dn * 8 + 2 * t + 1] = acc[dn][1] * s0; }
    if (out1) { out1[dn * 8 + 2 * t] = acc[dn][2] * s1; out1[dn * 8 + 2 * t + 1] = acc[dn][3] * s1; }
  }
}

// Queues key tile `tile` (keys tile·NT_FB_TILE ..) of K and V into double buffer tile & 1 (buffer b is buf0 +
// b·NT_FB_ROWS·sd): K's rows first, V's NT_FB_TILE rows after. The forward's and dq's inner loops stage each tile so.
static __device__ __forceinline__ void nt_fb_stage_kv(nt_bf16* buf0, int sd, const nt_bf16* kb, const nt_bf16* vb,
                                                      long long kvs, int tile, int T, int hd) {
  nt_bf16* dst = buf0 + (tile & 1) * NT_FB_ROWS * sd;
  nt_fb_stage(dst, sd, kb, kvs, 1, tile * NT_FB_TILE, NT_FB_TILE, T, hd);
  nt_fb_stage(dst + NT_FB_TILE * sd, sd, vb, kvs, 1, tile * NT_FB_TILE, NT_FB_TILE, T, hd);
}

// The same values as nt_fb_store, rounded to bf16 (out16 rows at the same offsets in a bf16 tensor; null: skipped).
static __device__ __forceinline__ void nt_fb_store16(nt_bf16* out0, nt_bf16* out1, const float (&acc)[NT_FB_DTILES][4], int hd, float s0, float s1) {
  const int t = threadIdx.x & 3;
#pragma unroll
  for (int dn = 0; dn < NT_FB_DTILES; ++dn) {
    if (dn * 8 >= hd) continue;
    if (out0) { out0[dn * 8 + 2 * t] = nt_bf16_from_float(acc[dn][0] * s0); out0[dn * 8 + 2 * t + 1] = nt_bf16_from_float(acc[dn][1] * s0); }
    if (out1) { out1[dn * 8 + 2 * t] = nt_bf16_from_float(acc[dn][2] * s1); out1[dn * 8 + 2 * t + 1] = nt_bf16_from_float(acc[dn][3] * s1); }
  }
}

extern "C" __global__ void attention_flash_bf16_forward(const nt_bf16* __restrict__ q, const nt_bf16* __restrict__ k,
                                                        const nt_bf16* __restrict__ v, float* __restrict__ z,
                                                        float* __restrict__ lse, nt_bf16* __restrict__ z16, int seq_len,
                                                        int heads, int kv_heads, int head_dim, float scale) {
  NT_DYNAMIC_SHARED(nt_bf16, smem);  // dynamic shared memory starts 16-byte aligned, as cp.async needs
  const int T = seq_len, hd = head_dim, G = heads / kv_heads, sd = hd + 8, R = T * G;
  const int b = blockIdx.z, kvh = blockIdx.y, r0 = blockIdx.x * NT_FB_ROWS;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2;
  const long long qs = (long long)heads * hd, kvs = (long long)kv_heads * hd;
  nt_bf16* const buf0 = smem;  // buffer j & 1 is buf0 + (j & 1)·NT_FB_ROWS·sd (arithmetic, not an array: no local memory)
  const nt_bf16* kb = k + (long long)b * T * kvs + (long long)kvh * hd;
  const nt_bf16* vb = v + (long long)b * T * kvs + (long long)kvh * hd;

  nt_fb_stage((buf0 + NT_FB_ROWS * sd), sd, q + (long long)b * T * qs + (long long)kvh * G * hd, qs, G, r0, NT_FB_ROWS, T, hd);
  nt_cp_async_commit();
  nt_cp_async_wait<0>();
  __syncthreads();
  unsigned qf[NT_FB_KSTEPS][4];
  nt_fb_a_fragments(qf, (buf0 + NT_FB_ROWS * sd), sd, warp * 16, hd);
  __syncthreads();  // (buf0 + NT_FB_ROWS * sd) is the second K/V buffer from here on

  const int tiles = (nt_min(r0 + NT_FB_ROWS, R) - 1) / G / NT_FB_TILE + 1;  // up to the block's last query
  const int warp_t_last = (nt_min(r0 + warp * 16 + 16, R) - 1) / G;
  int row[2], t_of[2];
  float m[2] = {-NT_INFINITY, -NT_INFINITY}, l[2] = {0.0f, 0.0f};
  for (int j = 0; j < 2; ++j) { row[j] = r0 + warp * 16 + gq + 8 * j; t_of[j] = row[j] / G; }
  float o[NT_FB_DTILES][4];
#pragma unroll
  for (int dn = 0; dn < NT_FB_DTILES; ++dn)
    for (int i = 0; i < 4; ++i) o[dn][i] = 0.0f;

  nt_fb_stage_kv(buf0, sd, kb, vb, kvs, 0, T, hd);
  nt_cp_async_commit();
  for (int j = 0; j < tiles; ++j) {
    const nt_bf16* cur = (buf0 + (j & 1) * NT_FB_ROWS * sd);
    if (j + 1 < tiles) nt_fb_stage_kv(buf0, sd, kb, vb, kvs, j + 1, T, hd);
    nt_cp_async_commit();  // possibly empty: keeps "all but the newest group" meaning tile j
    nt_cp_async_wait<1>();
    __syncthreads();
    const int u0 = j * NT_FB_TILE;
    if (u0 <= warp_t_last) {
      float s[4][4];
      nt_fb_scores(qf, cur, sd, hd, s);
      float mx[2] = {-NT_INFINITY, -NT_INFINITY};
#pragma unroll
      for (int n = 0; n < 4; ++n)
        for (int i = 0; i < 4; ++i) {
          const int u = u0 + n * 8 + 2 * (lane & 3) + (i & 1), jr = i >> 1;
          s[n][i] = u <= t_of[jr] && u < T ? s[n][i] * scale : -NT_INFINITY;
          mx[jr] = fmaxf(mx[jr], s[n][i]);
        }
      float alpha[2];
      for (int jr = 0; jr < 2; ++jr) {
        const float m_new = fmaxf(m[jr], nt_fb_quad_max(mx[jr]));  // finite: key 0 is in every row's first tile
        alpha[jr] = m[jr] == -NT_INFINITY ? 0.0f : __expf(m[jr] - m_new);
        m[jr] = m_new;
        l[jr] *= alpha[jr];
      }
#pragma unroll
      for (int n = 0; n < 4; ++n)
        for (int i = 0; i < 4; ++i) {
          s[n][i] = __expf(s[n][i] - m[i >> 1]);
          l[i >> 1] += s[n][i];
        }
#pragma unroll
      for (int dn = 0; dn < NT_FB_DTILES; ++dn)
        for (int i = 0; i < 4; ++i) o[dn][i] *= alpha[i >> 1];
      nt_fb_accumulate(s, cur + NT_FB_TILE * sd, sd, hd, o);
    }
    __syncthreads();  // the next iteration's copies overwrite this buffer
  }
  float* out[2];
  nt_bf16* out16[2];
  for (int jr = 0; jr < 2; ++jr) {
    l[jr] = nt_fb_quad_sum(l[jr]);
    out[jr] = nullptr;
    out16[jr] = nullptr;
    if (row[jr] < R) {
      const int h = kvh * G + (row[jr] - t_of[jr] * G);
      const long long at = ((long long)b * T + t_of[jr]) * qs + (long long)h * hd;
      out[jr] = z + at;
      if (z16) out16[jr] = z16 + at;
      if ((lane & 3) == 0) lse[((long long)b * heads + h) * T + t_of[jr]] = m[jr] + nt_fb_log(l[jr]);
    }
  }
  nt_fb_store(out[0], out[1], o, hd, 1.0f / l[0], 1.0f / l[1]);
  nt_fb_store16(out16[0], out16[1], o, hd, 1.0f / l[0], 1.0f / l[1]);  // z16 (may be null): the o product's operand
}
NT_HOST_LAUNCHER(attention_flash_bf16_forward)

// dq_t = c·Σ_{u ≤ t} P_tu (dP_tu − D_t) k_u, packed query rows as in the forward; D from attention_flash_rowdot.
extern "C" __global__ void attention_flash_bf16_backward_dq(const nt_bf16* __restrict__ dz, const nt_bf16* __restrict__ q,
                                                            const nt_bf16* __restrict__ k, const nt_bf16* __restrict__ v,
                                                            const float* __restrict__ lse, const float* __restrict__ dsum,
                                                            float* __restrict__ dq, int seq_len, int heads, int kv_heads,
                                                            int head_dim, float scale) {
  NT_DYNAMIC_SHARED(nt_bf16, smem);
  const int T = seq_len, hd = head_dim, G = heads / kv_heads, sd = hd + 8, R = T * G;
  const int b = blockIdx.z, kvh = blockIdx.y, r0 = blockIdx.x * NT_FB_ROWS;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2;
  const long long qs = (long long)heads * hd, kvs = (long long)kv_heads * hd;
  nt_bf16* const buf0 = smem;  // buffer j & 1 is buf0 + (j & 1)·NT_FB_ROWS·sd (arithmetic, not an array: no local memory)
  const nt_bf16* kb = k + (long long)b * T * kvs + (long long)kvh * hd;
  const nt_bf16* vb = v + (long long)b * T * kvs + (long long)kvh * hd;
  const long long qoff = (long long)b * T * qs + (long long)kvh * G * hd;

  nt_fb_stage((buf0 + NT_FB_ROWS * sd), sd, q + qoff, qs, G, r0, NT_FB_ROWS, T, hd);
  nt_fb_stage(buf0, sd, dz + qoff, qs, G, r0, NT_FB_ROWS, T, hd);
  nt_cp_async_commit();
  nt_cp_async_wait<0>();
  __syncthreads();
  unsigned qf[NT_FB_KSTEPS][4], zf[NT_FB_KSTEPS][4];
  nt_fb_a_fragments(qf, (buf0 + NT_FB_ROWS * sd), sd, warp * 16, hd);
  nt_fb_a_fragments(zf, buf0, sd, warp * 16, hd);
  __syncthreads();

  const int tiles = (nt_min(r0 + NT_FB_ROWS, R) - 1) / G / NT_FB_TILE + 1;
  const int warp_t_last = (nt_min(r0 + warp * 16 + 16, R) - 1) / G;
  int row[2], t_of[2], h_of[2];
  float L[2], D[2];
  for (int j = 0; j < 2; ++j) {
    row[j] = r0 + warp * 16 + gq + 8 * j;
    t_of[j] = row[j] / G;
    h_of[j] = kvh * G + (row[j] - t_of[j] * G);
    const long long stat = ((long long)b * heads + h_of[j]) * T + t_of[j];
    L[j] = row[j] < R ? lse[stat] : 0.0f;
    D[j] = row[j] < R ? dsum[stat] : 0.0f;
  }
  float acc[NT_FB_DTILES][4];
#pragma unroll
  for (int dn = 0; dn < NT_FB_DTILES; ++dn)
    for (int i = 0; i < 4; ++i) acc[dn][i] = 0.0f;

  nt_fb_stage_kv(buf0, sd, kb, vb, kvs, 0, T, hd);
  nt_cp_async_commit();
  for (int j = 0; j < tiles; ++j) {
    const nt_bf16* cur = (buf0 + (j & 1) * NT_FB_ROWS * sd);
    if (j + 1 < tiles) nt_fb_stage_kv(buf0, sd, kb, vb, kvs, j + 1, T, hd);
    nt_cp_async_commit();
    nt_cp_async_wait<1>();
    __syncthreads();
    const int u0 = j * NT_FB_TILE;
    if (u0 <= warp_t_last) {
      float s[4][4], dp[4][4];
      nt_fb_scores(qf, cur, sd, hd, s);
      nt_fb_scores(zf, cur + NT_FB_TILE * sd, sd, hd, dp);
#pragma unroll
      for (int n = 0; n < 4; ++n)
        for (int i = 0; i < 4; ++i) {
          const int u = u0 + n * 8 + 2 * (lane & 3) + (i & 1), jr = i >> 1;
          const float p = u <= t_of[jr] && u < T ? __expf(s[n][i] * scale - L[jr]) : 0.0f;
          s[n][i] = p * (dp[n][i] - D[jr]) * scale;
        }
      nt_fb_accumulate(s, cur, sd, hd, acc);
    }
    __syncthreads();
  }
  float* out[2];
  for (int jr = 0; jr < 2; ++jr)
    out[jr] = row[jr] < R ? dq + ((long long)b * T + t_of[jr]) * qs + (long long)h_of[jr] * hd : nullptr;
  nt_fb_store(out[0], out[1], acc, hd, 1.0f, 1.0f);
}
NT_HOST_LAUNCHER(attention_flash_bf16_backward_dq)

// Key-major: dv_u = Σ_{(t, g): t ≥ u} P dz and (exact) dk_u = c·Σ P (dP − D) q over the packed query rows of kv head
// u's group. exact = 0 (FreezePattern) writes dk = 0 and never reads dsum or v. dv16 (may be null): dv rounded to
// bf16, rows dv16_stride values apart (dv's columns of the [dq | dk | dv] operand of the stacked Q/K/V input gradient).
extern "C" __global__ void attention_flash_bf16_backward_dkdv(const nt_bf16* __restrict__ dz, const nt_bf16* __restrict__ q,
                                                              const nt_bf16* __restrict__ k, const nt_bf16* __restrict__ v,
                                                              const float* __restrict__ lse, const float* __restrict__ dsum,
                                                              float* __restrict__ dk, float* __restrict__ dv,
                                                              nt_bf16* __restrict__ dv16, int dv16_stride, int seq_len,
                                                              int heads, int kv_heads, int head_dim, float scale, int exact) {
  NT_DYNAMIC_SHARED(nt_bf16, smem);
  const int T = seq_len, hd = head_dim, G = heads / kv_heads, sd = hd + 8, R = T * G;
  const int b = blockIdx.z, kvh = blockIdx.y, u0 = blockIdx.x * NT_FB_ROWS;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2;
  const long long qs = (long long)heads * hd, kvs = (long long)kv_heads * hd;
  nt_bf16* const buf0 = smem;  // buffer j & 1 is buf0 + (j & 1)·NT_FB_ROWS·sd (arithmetic, not an array: no local memory)
  float* stats = reinterpret_cast<float*>(smem + 2 * NT_FB_ROWS * sd);  // per buffer: L[32], then D[32]
  const long long kvoff = (long long)b * T * kvs + (long long)kvh * hd;
  const nt_bf16* qb = q + (long long)b * T * qs + (long long)kvh * G * hd;
  const nt_bf16* zb = dz + (long long)b * T * qs + (long long)kvh * G * hd;

  nt_fb_stage((buf0 + NT_FB_ROWS * sd), sd, k + kvoff, kvs, 1, u0, NT_FB_ROWS, T, hd);
  if (exact) nt_fb_stage(buf0, sd, v + kvoff, kvs, 1, u0, NT_FB_ROWS, T, hd);
  nt_cp_async_commit();
  nt_cp_async_wait<0>();
  __syncthreads();
  unsigned kf[NT_FB_KSTEPS][4], vf[NT_FB_KSTEPS][4];
  nt_fb_a_fragments(kf, (buf0 + NT_FB_ROWS * sd), sd, warp * 16, hd);
  if (exact) nt_fb_a_fragments(vf, buf0, sd, warp * 16, hd);
  __syncthreads();

  const int rs = u0 * G;  // the first packed row whose position reaches the block's first key
  const int tiles = (R - rs + NT_FB_TILE - 1) / NT_FB_TILE;
  const int warp_u0 = u0 + warp * 16;
  int key[2];
  for (int j = 0; j < 2; ++j) key[j] = warp_u0 + gq + 8 * j;
  float gv[NT_FB_DTILES][4], gk[NT_FB_DTILES][4];
#pragma unroll
  for (int dn = 0; dn < NT_FB_DTILES; ++dn)
    for (int i = 0; i < 4; ++i) gv[dn][i] = gk[dn][i] = 0.0f;

  auto stage = [&](int j) {
    const int rt0 = rs + j * NT_FB_TILE;
    nt_bf16* dst = (buf0 + (j & 1) * NT_FB_ROWS * sd);
    nt_fb_stage(dst, sd, qb, qs, G, rt0, NT_FB_TILE, T, hd);
    nt_fb_stage(dst + NT_FB_TILE * sd, sd, zb, qs, G, rt0, NT_FB_TILE, T, hd);
    float* st = stats + (j & 1) * 2 * NT_FB_TILE;
    for (int e = threadIdx.x; e < NT_FB_TILE; e += blockDim.x) {
      const int r = rt0 + e, t = r / G;
      const long long at = ((long long)b * heads + kvh * G + (r - t * G)) * T + t;
      st[e] = r < R ? lse[at] : 0.0f;
      st[NT_FB_TILE + e] = r < R && exact ? dsum[at] : 0.0f;
    }
  };
  if (tiles > 0) stage(0);
  nt_cp_async_commit();
  for (int j = 0; j < tiles; ++j) {
    const nt_bf16* cur = (buf0 + (j & 1) * NT_FB_ROWS * sd);
    const float* st = stats + (j & 1) * 2 * NT_FB_TILE;
    if (j + 1 < tiles) stage(j + 1);
    nt_cp_async_commit();
    nt_cp_async_wait<1>();
    __syncthreads();
    const int rt0 = rs + j * NT_FB_TILE;
    if ((nt_min(rt0 + NT_FB_TILE, R) - 1) / G >= warp_u0) {  // some row of the tile sees one of the warp's keys
      float p[4][4], dp[4][4];
      nt_fb_scores(kf, cur, sd, hd, p);
      if (exact) nt_fb_scores(vf, cur + NT_FB_TILE * sd, sd, hd, dp);
#pragma unroll
      for (int n = 0; n < 4; ++n)
        for (int i = 0; i < 4; ++i) {
          const int e = n * 8 + 2 * (lane & 3) + (i & 1), r = rt0 + e, u = warp_u0 + gq + 8 * (i >> 1);
          p[n][i] = r < R && u <= r / G && u < T ? __expf(p[n][i] * scale - st[e]) : 0.0f;
          if (exact) dp[n][i] = p[n][i] * (dp[n][i] - st[NT_FB_TILE + e]) * scale;
        }
      nt_fb_accumulate(p, cur + NT_FB_TILE * sd, sd, hd, gv);
      if (exact) nt_fb_accumulate(dp, cur, sd, hd, gk);
    }
    __syncthreads();
  }
  for (int jr = 0; jr < 2; ++jr) {
    if (key[jr] >= T) continue;
    float* kr = dk + ((long long)b * T + key[jr]) * kvs + (long long)kvh * hd;
    float* vr = dv + ((long long)b * T + key[jr]) * kvs + (long long)kvh * hd;
    nt_fb_store(jr == 0 ? vr : nullptr, jr == 1 ? vr : nullptr, gv, hd, 1.0f, 1.0f);
    nt_fb_store(jr == 0 ? kr : nullptr, jr == 1 ? kr : nullptr, gk, hd, 1.0f, 1.0f);  // zeros when frozen
    if (dv16) {
      nt_bf16* vr16 = dv16 + ((long long)b * T + key[jr]) * dv16_stride + (long long)kvh * hd;
      nt_fb_store16(jr == 0 ? vr16 : nullptr, jr == 1 ? vr16 : nullptr, gv, hd, 1.0f, 1.0f);
    }
  }
}
NT_HOST_LAUNCHER(attention_flash_bf16_backward_dkdv)
