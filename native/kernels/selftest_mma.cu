// selftest_mma.cu — one kernel per sm_80 feature of nt_mma.h, each exposing the raw registers or shared memory
// the instruction produced, so EmulatorSelfTests can check every element against the PTX ISA's layouts (derived
// by hand in the test, independently of the emulator), plus one that composes them as the attention kernels do.
// One warp each (block = 32 threads). CudaBackend never launches these.
#include "nt_mma.h"

// m: 32 rows × 8 bf16. Lane l names shared row (7·l + 3) mod 32 as its ldmatrix row address, so a layout that
// took addresses from the wrong lane shows. out[l·8 + i]: register i of ldmatrix.x4, then of ldmatrix.x4.trans.
extern "C" __global__ void selftest_ldmatrix(const nt_bf16* __restrict__ m, unsigned* __restrict__ out) {
  __shared__ __attribute__((aligned(16))) nt_bf16 tile[32 * 8];
  const int lane = threadIdx.x;
  for (int e = lane; e < 32 * 8; e += 32) tile[e] = m[e];
  __syncthreads();
  const nt_bf16* row = tile + ((7 * lane + 3) % 32) * 8;
  unsigned r[4], rt[4];
  nt_ldmatrix_x4(r, row);
  nt_ldmatrix_x4_trans(rt, row);
  for (int i = 0; i < 4; ++i) {
    out[lane * 8 + i] = r[i];
    out[lane * 8 + 4 + i] = rt[i];
  }
}
NT_HOST_LAUNCHER(selftest_ldmatrix)

// Per lane l: a[l·4 + i], b[l·2 + i], c[l·4 + i] are its registers; d[l·4 + i] = its D registers after one
// mma.sync.m16n8k16 (d starts as c).
extern "C" __global__ void selftest_mma_bf16(const unsigned* __restrict__ a, const unsigned* __restrict__ b,
                                             const float* __restrict__ c, float* __restrict__ d) {
  const int lane = threadIdx.x;
  unsigned ra[4] = {a[lane * 4], a[lane * 4 + 1], a[lane * 4 + 2], a[lane * 4 + 3]};
  unsigned rb[2] = {b[lane * 2], b[lane * 2 + 1]};
  float rd[4] = {c[lane * 4], c[lane * 4 + 1], c[lane * 4 + 2], c[lane * 4 + 3]};
  nt_mma_bf16_16816(rd, ra, rb);
  for (int i = 0; i < 4; ++i) d[lane * 4 + i] = rd[i];
}
NT_HOST_LAUNCHER(selftest_mma_bf16)

// out[l] = the bf16x2 packing of (in[2l], in[2l + 1]) (cvt.rn.bf16x2.f32), for each of the block's threads.
extern "C" __global__ void selftest_pack_bf16x2(const float* __restrict__ in, unsigned* __restrict__ out) {
  const int i = threadIdx.x;
  out[i] = nt_pack_bf16x2(in[2 * i], in[2 * i + 1]);
}
NT_HOST_LAUNCHER(selftest_pack_bf16x2)

// Two commit groups of 16-byte copies (thread i copies chunk i of src into group 0's buffer and chunk 32 + i into
// group 1's; chunks at or past `valid_chunks` are zero-filled). After wait_group 1 and a barrier, thread i writes
// its neighbour's group-0 chunk to out[4i..]; after wait_group 0, its neighbour's group-1 chunk to out[128 + 4i..].
// out[256 + i] is what thread i read of its own group-0 chunk before any wait: undefined on a GPU, the NaN fill
// on the emulator (which performs a copy only when a wait covers it). Dynamic shared memory: 1024 bytes.
extern "C" __global__ void selftest_cp_async(const float* __restrict__ src, float* __restrict__ out, int valid_chunks) {
  NT_DYNAMIC_SHARED(float, first);  // 2·128 floats of the launch; dynamic, so the emulator NaN-fills it
  float* second = first + 32 * 4;
  const int i = threadIdx.x, next = (i + 1) % 32;
  nt_cp_async16(first + 4 * i, src + 4 * i, i < valid_chunks);
  nt_cp_async_commit();
  nt_cp_async16(second + 4 * i, src + 4 * (32 + i), 32 + i < valid_chunks);
  nt_cp_async_commit();
  out[256 + i] = first[4 * i];
  nt_cp_async_wait<1>();
  __syncthreads();
  for (int e = 0; e < 4; ++e) out[4 * i + e] = first[4 * next + e];
  nt_cp_async_wait<0>();
  __syncthreads();
  for (int e = 0; e < 4; ++e) out[128 + 4 * i + e] = second[4 * next + e];
}
NT_HOST_LAUNCHER(selftest_cp_async)

// The loaders as the attention kernels use them: x, y are 16×16 bf16 row-major. out[0..256) = x·y (y k-major:
// ldmatrix.trans), out[256..512) = x·yᵀ (y n-major: ldmatrix), both 16×16 fp32 row-major.
extern "C" __global__ void selftest_mma_tile(const nt_bf16* __restrict__ x, const nt_bf16* __restrict__ y, float* __restrict__ out) {
  constexpr int stride = 16 + 8;  // the kernels' padded row
  __shared__ __attribute__((aligned(16))) nt_bf16 xs[16 * stride], ys[16 * stride];
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  for (int e = lane; e < 256; e += 32) {
    xs[e / 16 * stride + e % 16] = x[e];
    ys[e / 16 * stride + e % 16] = y[e];
  }
  __syncthreads();
  unsigned a[4], b0[2], b1[2], c0[2], c1[2];
  nt_load_a16x16(a, xs, stride, 0, 0);
  nt_load_b_kmajor(b0, b1, ys, stride, 0, 0);
  nt_load_b_nmajor(c0, c1, ys, stride, 0, 0);
  float d[4][4] = {};
  nt_mma_bf16_16816(d[0], a, b0);
  nt_mma_bf16_16816(d[1], a, b1);
  nt_mma_bf16_16816(d[2], a, c0);
  nt_mma_bf16_16816(d[3], a, c1);
  for (int n = 0; n < 4; ++n)
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i >> 1), col = (n & 1) * 8 + 2 * t + (i & 1);
      out[(n >> 1) * 256 + row * 16 + col] = d[n][i];
    }
}
NT_HOST_LAUNCHER(selftest_mma_tile)
