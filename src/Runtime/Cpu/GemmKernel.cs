using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace NeuronTrace.Runtime.Cpu;

internal static unsafe partial class Gemm
{
    static bool Vector256IsFast => Vector256.IsHardwareAccelerated;

    /// <summary>a·b + c, fused where the hardware has FMA, else a multiply and an add.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> MulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) =>
        Fma.IsSupported ? Fma.MultiplyAdd(a, b, c) : a * b + c;

    /// <summary>
    /// C[6, 16] (+)= Apanel[kc, 6]ᵀ · Bpanel[kc, 16] with both panels packed (A: 6 floats per k, B: 16 floats per k,
    /// 32-byte aligned). Twelve accumulators, two B vectors and one broadcast live in registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Kernel6x16(int kc, float* a, float* b, float* c, int ldc, bool add)
    {
        float* c1 = c + ldc, c2 = c1 + ldc, c3 = c2 + ldc, c4 = c3 + ldc, c5 = c4 + ldc;
        if (Sse.IsSupported)
        {
            // C is only touched after the k loop: fetch its lines now so that they arrive while the loop runs.
            Sse.Prefetch0(c); Sse.Prefetch0(c + 15);
            Sse.Prefetch0(c1); Sse.Prefetch0(c1 + 15);
            Sse.Prefetch0(c2); Sse.Prefetch0(c2 + 15);
            Sse.Prefetch0(c3); Sse.Prefetch0(c3 + 15);
            Sse.Prefetch0(c4); Sse.Prefetch0(c4 + 15);
            Sse.Prefetch0(c5); Sse.Prefetch0(c5 + 15);
        }
        Vector256<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = Vector256<float>.Zero;

        Vector256<float> b0, b1, x;
        int p = 0;
        for (; p + 4 <= kc; p += 4)
        {
            b0 = Vector256.LoadAligned(b); b1 = Vector256.LoadAligned(b + 8);
            x = Vector256.Create(a[0]); c00 = MulAdd(x, b0, c00); c01 = MulAdd(x, b1, c01);
            x = Vector256.Create(a[1]); c10 = MulAdd(x, b0, c10); c11 = MulAdd(x, b1, c11);
            x = Vector256.Create(a[2]); c20 = MulAdd(x, b0, c20); c21 = MulAdd(x, b1, c21);
            x = Vector256.Create(a[3]); c30 = MulAdd(x, b0, c30); c31 = MulAdd(x, b1, c31);
            x = Vector256.Create(a[4]); c40 = MulAdd(x, b0, c40); c41 = MulAdd(x, b1, c41);
            x = Vector256.Create(a[5]); c50 = MulAdd(x, b0, c50); c51 = MulAdd(x, b1, c51);

            b0 = Vector256.LoadAligned(b + 16); b1 = Vector256.LoadAligned(b + 24);
            x = Vector256.Create(a[6]); c00 = MulAdd(x, b0, c00); c01 = MulAdd(x, b1, c01);
            x = Vector256.Create(a[7]); c10 = MulAdd(x, b0, c10); c11 = MulAdd(x, b1, c11);
            x = Vector256.Create(a[8]); c20 = MulAdd(x, b0, c20); c21 = MulAdd(x, b1, c21);
            x = Vector256.Create(a[9]); c30 = MulAdd(x, b0, c30); c31 = MulAdd(x, b1, c31);
            x = Vector256.Create(a[10]); c40 = MulAdd(x, b0, c40); c41 = MulAdd(x, b1, c41);
            x = Vector256.Create(a[11]); c50 = MulAdd(x, b0, c50); c51 = MulAdd(x, b1, c51);

            b0 = Vector256.LoadAligned(b + 32); b1 = Vector256.LoadAligned(b + 40);
            x = Vector256.Create(a[12]); c00 = MulAdd(x, b0, c00); c01 = MulAdd(x, b1, c01);
            x = Vector256.Create(a[13]); c10 = MulAdd(x, b0, c10); c11 = MulAdd(x, b1, c11);
            x = Vector256.Create(a[14]); c20 = MulAdd(x, b0, c20); c21 = MulAdd(x, b1, c21);
            x = Vector256.Create(a[15]); c30 = MulAdd(x, b0, c30); c31 = MulAdd(x, b1, c31);
            x = Vector256.Create(a[16]); c40 = MulAdd(x, b0, c40); c41 = MulAdd(x, b1, c41);
            x = Vector256.Create(a[17]); c50 = MulAdd(x, b0, c50); c51 = MulAdd(x, b1, c51);

            b0 = Vector256.LoadAligned(b + 48); b1 = Vector256.LoadAligned(b + 56);
            x = Vector256.Create(a[18]); c00 = MulAdd(x, b0, c00); c01 = MulAdd(x, b1, c01);
            x = Vector256.Create(a[19]); c10 = MulAdd(x, b0, c10); c11 = MulAdd(x, b1, c11);
            x = Vector256.Create(a[20]); c20 = MulAdd(x, b0, c20); c21 = MulAdd(x, b1, c21);
            x = Vector256.Create(a[21]); c30 = MulAdd(x, b0, c30); c31 = MulAdd(x, b1, c31);
            x = Vector256.Create(a[22]); c40 = MulAdd(x, b0, c40); c41 = MulAdd(x, b1, c41);
            x = Vector256.Create(a[23]); c50 = MulAdd(x, b0, c50); c51 = MulAdd(x, b1, c51);

            a += 4 * MR; b += 4 * NR;
        }
        for (; p < kc; p++)
        {
            b0 = Vector256.LoadAligned(b); b1 = Vector256.LoadAligned(b + 8);
            x = Vector256.Create(a[0]); c00 = MulAdd(x, b0, c00); c01 = MulAdd(x, b1, c01);
            x = Vector256.Create(a[1]); c10 = MulAdd(x, b0, c10); c11 = MulAdd(x, b1, c11);
            x = Vector256.Create(a[2]); c20 = MulAdd(x, b0, c20); c21 = MulAdd(x, b1, c21);
            x = Vector256.Create(a[3]); c30 = MulAdd(x, b0, c30); c31 = MulAdd(x, b1, c31);
            x = Vector256.Create(a[4]); c40 = MulAdd(x, b0, c40); c41 = MulAdd(x, b1, c41);
            x = Vector256.Create(a[5]); c50 = MulAdd(x, b0, c50); c51 = MulAdd(x, b1, c51);
            a += MR; b += NR;
        }

        if (add)
        {
            c00 += Vector256.Load(c); c01 += Vector256.Load(c + 8);
            c10 += Vector256.Load(c1); c11 += Vector256.Load(c1 + 8);
            c20 += Vector256.Load(c2); c21 += Vector256.Load(c2 + 8);
            c30 += Vector256.Load(c3); c31 += Vector256.Load(c3 + 8);
            c40 += Vector256.Load(c4); c41 += Vector256.Load(c4 + 8);
            c50 += Vector256.Load(c5); c51 += Vector256.Load(c5 + 8);
        }
        Vector256.Store(c00, c); Vector256.Store(c01, c + 8);
        Vector256.Store(c10, c1); Vector256.Store(c11, c1 + 8);
        Vector256.Store(c20, c2); Vector256.Store(c21, c2 + 8);
        Vector256.Store(c30, c3); Vector256.Store(c31, c3 + 8);
        Vector256.Store(c40, c4); Vector256.Store(c41, c4 + 8);
        Vector256.Store(c50, c5); Vector256.Store(c51, c5 + 8);
    }

    /// <summary>Portable micro-kernel over the same packed panels, for hardware without 256-bit SIMD.</summary>
    static void KernelScalar(int kc, float* a, float* b, float* c, int ldc, bool add)
    {
        float* acc = stackalloc float[MR * NR];
        new Span<float>(acc, MR * NR).Clear();
        for (int p = 0; p < kc; p++, a += MR, b += NR)
            for (int i = 0; i < MR; i++)
            {
                float ai = a[i];
                float* row = acc + i * NR;
                for (int j = 0; j < NR; j++) row[j] += ai * b[j];
            }
        for (int i = 0; i < MR; i++)
        {
            float* dst = c + (long)i * ldc, row = acc + i * NR;
            if (add) for (int j = 0; j < NR; j++) dst[j] += row[j];
            else for (int j = 0; j < NR; j++) dst[j] = row[j];
        }
    }
}
