// nt_mma.h — the sm_80 device features of the tensor-core kernels, behind one header: cp.async (with commit and
// wait groups), ldmatrix (x4, plain and .trans) and mma.sync m16n8k16 bf16×bf16→fp32, plus the bf16x2 packing
// of cvt.rn.bf16x2.f32. On the GPU each is one inline-PTX instruction (PTX ISA 7.0, sm_80; an H100 JIT-compiles
// the sm_80 PTX). On the host each is emulated with the exact register layouts of the PTX ISA ("Matrix fragments
// for mma.m16n8k16", "ldmatrix"), warp-collectively: every lane publishes its operands in its warp's slots,
// the 32 lanes meet at a barrier, each reads what the ISA says it receives, and they meet again (as the shuffles
// do, native/host/nt_emulator.cpp). cp.async copies are queued per thread and performed only when a
// cp.async.wait_group covers their group, so a kernel that reads shared memory before waiting reads the
// emulator's NaN fill and fails its test. selftest.cu and EmulatorSelfTests check every instruction here.
//
// Fragment layouts (lane l, group g = l / 4, thread-in-group t = l % 4; a .b32 register holds two bf16, the
// element of lower column / row index in the low 16 bits):
//   A 16×16 (row):  reg i, half j → row g + 8·(i & 1), column 2t + j + 8·(i >> 1)
//   B 16×8  (col):  reg i, half j → row (k) 2t + j + 8·i, column (n) g
//   C/D 16×8 fp32:  element i     → row g + 8·(i >> 1), column 2t + (i & 1)
//   ldmatrix x4:    lanes 8m..8m+7 give the row addresses of matrix m (8 rows of 8 b16); reg m of lane l holds
//                   row l / 4, columns 2t, 2t + 1 of matrix m (.trans: rows 2t, 2t + 1 of column l / 4)
#pragma once
#ifndef NT_MMA_H
#define NT_MMA_H

#include "nt_device.h"

typedef unsigned short nt_bf16;  // raw bfloat16 bits, as f32_to_bf16 (convert.cu) writes them

#if defined(__CUDA_ARCH__) || defined(__CUDACC__)

static __device__ __forceinline__ unsigned nt_shared_address(const void* p) {
  unsigned a;
  asm("{ .reg .u64 s; cvta.to.shared.u64 s, %1; cvt.u32.u64 %0, s; }" : "=r"(a) : "l"(p));
  return a;
}

// 16 bytes global → shared, asynchronously; valid = false fills the 16 bytes with zeros and reads nothing.
static __device__ __forceinline__ void nt_cp_async16(void* shared, const void* global, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(nt_shared_address(shared)), "l"(global),
               "r"(valid ? 16 : 0) : "memory");
}
static __device__ __forceinline__ void nt_cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most `pending` of this thread's committed groups are still in flight (0 = all done).
template <int pending>
static __device__ __forceinline__ void nt_cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(pending) : "memory"); }

static __device__ __forceinline__ void nt_ldmatrix_x4(unsigned (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(nt_shared_address(row)) : "memory");
}
static __device__ __forceinline__ void nt_ldmatrix_x4_trans(unsigned (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(nt_shared_address(row)) : "memory");
}

// d += a·b for one 16×8×16 tile.
static __device__ __forceinline__ void nt_mma_bf16_16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// {lo, hi} rounded to nearest-even bf16, lo in the low half.
static __device__ __forceinline__ unsigned nt_pack_bf16x2(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

#else  // host emulation

namespace nt_host {
// Defined in nt_emulator.cpp. Every lane named in `mask` publishes `bytes` bytes at `mine`; each gets all 32
// lanes' bytes in `all` (lane-major; lanes not in the mask or not existing read as 0xff bytes).
void warp_gather(unsigned mask, const void* mine, unsigned bytes, void* all);
void cp_async_enqueue(void* shared, const void* global, unsigned bytes, bool valid);
void cp_async_commit();
void cp_async_wait(int pending);
}  // namespace nt_host

inline void nt_cp_async16(void* shared, const void* global, bool valid) { ::nt_host::cp_async_enqueue(shared, global, 16, valid); }
inline void nt_cp_async_commit() { ::nt_host::cp_async_commit(); }
template <int pending>
inline void nt_cp_async_wait() { ::nt_host::cp_async_wait(pending); }

inline float nt_float_from_bf16(unsigned bits16) {
  const unsigned u = bits16 << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned nt_bf16_bits(float v) {  // cvt.rn.bf16: round to nearest even, NaN stays a quiet NaN
  unsigned u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x0040u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
inline unsigned nt_pack_bf16x2(float lo, float hi) { return nt_bf16_bits(lo) | (nt_bf16_bits(hi) << 16); }

// ldmatrix: this lane's register m holds two b16 of matrix m, whose 8 row addresses lanes 8m..8m+7 gave.
inline void nt_ldmatrix_x4_emulated(unsigned (&r)[4], const void* row, bool trans) {
  const void* rows[32];
  ::nt_host::warp_gather(NT_FULL_MASK, &row, sizeof(row), rows);
  const unsigned lane = ::nt_host::lane_id(), g = lane / 4, t = lane % 4;
  for (unsigned m = 0; m < 4; ++m) {
    unsigned short lo, hi;
    if (!trans) {  // row g, columns 2t and 2t + 1
      const unsigned short* p = static_cast<const unsigned short*>(rows[8 * m + g]);
      lo = p[2 * t];
      hi = p[2 * t + 1];
    } else {  // rows 2t and 2t + 1, column g
      lo = static_cast<const unsigned short*>(rows[8 * m + 2 * t])[g];
      hi = static_cast<const unsigned short*>(rows[8 * m + 2 * t + 1])[g];
    }
    r[m] = unsigned(lo) | (unsigned(hi) << 16);
  }
}
inline void nt_ldmatrix_x4(unsigned (&r)[4], const void* row) { nt_ldmatrix_x4_emulated(r, row, false); }
inline void nt_ldmatrix_x4_trans(unsigned (&r)[4], const void* row) { nt_ldmatrix_x4_emulated(r, row, true); }

// mma.m16n8k16: gathers the warp's A and B fragments, rebuilds the element each register half stands for, and
// computes this lane's four D elements. The products of two bf16 are exact in fp32; they are summed in k order
// onto C in fp32 (the hardware's internal order is unspecified; the kernel tests' tolerances cover either).
inline void nt_mma_bf16_16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  struct Operands { unsigned a[4], b[2]; } mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}}, all[32];
  ::nt_host::warp_gather(NT_FULL_MASK, &mine, sizeof(mine), all);
  float A[16][16], B[16][8];
  for (unsigned l = 0; l < 32; ++l) {
    const unsigned g = l / 4, t = l % 4;
    for (unsigned i = 0; i < 4; ++i)
      for (unsigned j = 0; j < 2; ++j) A[g + 8 * (i & 1)][2 * t + j + 8 * (i >> 1)] = nt_float_from_bf16((all[l].a[i] >> (16 * j)) & 0xffffu);
    for (unsigned i = 0; i < 2; ++i)
      for (unsigned j = 0; j < 2; ++j) B[2 * t + j + 8 * i][g] = nt_float_from_bf16((all[l].b[i] >> (16 * j)) & 0xffffu);
  }
  const unsigned lane = ::nt_host::lane_id(), g = lane / 4, t = lane % 4;
  for (unsigned i = 0; i < 4; ++i) {
    const unsigned row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
    float acc = d[i];
    for (unsigned k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
    d[i] = acc;
  }
}

#endif

// Fragment loads from row-major bf16 tiles in shared memory (`stride` elements per row, rows 16-byte aligned),
// for the three operand shapes the attention kernels use. Warp-collective, like the ldmatrix they issue.

// A 16×16 at (row0, col0): lanes 0-15 name rows 0-15 at col0, lanes 16-31 the same rows at col0 + 8, so
// matrices 0..3 are (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15): registers a0..a3.
static __device__ __forceinline__ void nt_load_a16x16(unsigned (&a)[4], const nt_bf16* tile, int stride, int row0, int col0) {
  const int lane = threadIdx.x & 31;
  nt_ldmatrix_x4(a, tile + (row0 + (lane & 15)) * stride + col0 + (lane >> 4) * 8);
}

// Two B fragments (k 16 × n 8) of a tile stored n-major ([n][k], e.g. keys × head dim for Q·Kᵀ): n-tiles n0 and
// n0 + 8 at k0. Matrix m covers rows n0 + 8·(m >> 1).., columns k0 + 8·(m & 1)..
static __device__ __forceinline__ void nt_load_b_nmajor(unsigned (&b0)[2], unsigned (&b1)[2], const nt_bf16* tile, int stride, int n0, int k0) {
  const int lane = threadIdx.x & 31, m = lane >> 3;
  unsigned r[4];
  nt_ldmatrix_x4(r, tile + (n0 + (m >> 1) * 8 + (lane & 7)) * stride + k0 + (m & 1) * 8);
  b0[0] = r[0]; b0[1] = r[1]; b1[0] = r[2]; b1[1] = r[3];
}

// Two B fragments of a tile stored k-major ([k][n], e.g. keys × head dim for P·V): n-tiles n0 and n0 + 8 at k0,
// through ldmatrix.trans. Matrix m covers rows k0 + 8·(m & 1).., columns n0 + 8·(m >> 1)..
static __device__ __forceinline__ void nt_load_b_kmajor(unsigned (&b0)[2], unsigned (&b1)[2], const nt_bf16* tile, int stride, int k0, int n0) {
  const int lane = threadIdx.x & 31, m = lane >> 3;
  unsigned r[4];
  nt_ldmatrix_x4_trans(r, tile + (k0 + (m & 1) * 8 + (lane & 7)) * stride + n0 + (m >> 1) * 8);
  b0[0] = r[0]; b0[1] = r[1]; b1[0] = r[2]; b1[1] = r[3];
}

// The A fragment of a 16×16 slice (columns 16·s.. of this warp's 16 rows) of a product held in C layout: n-tiles
// 2s and 2s + 1 of `c` are exactly registers (a0, a1) and (a2, a3) once packed to bf16 — no shuffle needed.
static __device__ __forceinline__ void nt_a_from_c(unsigned (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = nt_pack_bf16x2(c0[0], c0[1]);
  a[1] = nt_pack_bf16x2(c0[2], c0[3]);
  a[2] = nt_pack_bf16x2(c1[0], c1[1]);
  a[3] = nt_pack_bf16x2(c1[2], c1[3]);
}

#endif
