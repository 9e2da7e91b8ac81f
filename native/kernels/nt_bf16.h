// nt_bf16.h — bfloat16 as raw 16-bit patterns (the upper half of a float32), for the kernels that read or write the
// bf16 operands of matrix products: f32 → bf16 rounds to nearest even (a NaN stays a quiet NaN), bf16 → f32 is exact.
// One definition for convert.cu, rmsnorm.cu, swiglu.cu; the host build compiles the same code.
#pragma once
#include "nt_device.h"

static __device__ __forceinline__ unsigned short nt_bf16_from_float(float v) {
  union { float f; unsigned int u; } bits;
  bits.f = v;
  const unsigned int u = bits.u;
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x0040u);  // NaN: keep sign, make quiet
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static __device__ __forceinline__ float nt_bf16_to_float(unsigned short b) {
  union { unsigned int u; float f; } bits;
  bits.u = (unsigned int)b << 16;
  return bits.f;
}
