using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// Single-precision matrix products on the host, row-major. Placeholder implementation: correct, parallel, SIMD dot
/// products; to be replaced by a packed register-tiled kernel.
/// </summary>
public static class Gemm
{
    /// <summary>c[m, n] (+)= Σ_k a[m, k] b[n, k]  (A·Bᵀ, B row-major [n, k]).</summary>
    public static void MultiplyTransposedB(float[] a, float[] b, float[] c, int m, int n, int k, bool accumulate)
    {
        CheckSizes(a, b, c, m, n, k);
        Parallel.For(0, m, new ParallelOptions { MaxDegreeOfParallelism = ThreadCount(m, n, k) }, i =>
        {
            var ra = new ReadOnlySpan<float>(a, i * k, k);
            for (int j = 0; j < n; j++)
            {
                float dot = Dot(ra, new ReadOnlySpan<float>(b, j * k, k));
                c[i * n + j] = accumulate ? c[i * n + j] + dot : dot;
            }
        });
    }

    /// <summary>c[m, n] (+)= Σ_k a[m, k] b[k, n]  (A·B, B row-major [k, n]).</summary>
    public static void Multiply(float[] a, float[] b, float[] c, int m, int n, int k, bool accumulate)
    {
        CheckSizes(a, b, c, m, n, k);
        Parallel.For(0, m, new ParallelOptions { MaxDegreeOfParallelism = ThreadCount(m, n, k) }, i =>
        {
            var rc = new Span<float>(c, i * n, n);
            if (!accumulate) rc.Clear();
            for (int p = 0; p < k; p++)
            {
                float s = a[i * k + p];
                if (s == 0f) continue;
                System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(b, p * n, n), s, rc, rc);
            }
        });
    }

    static float Dot(ReadOnlySpan<float> x, ReadOnlySpan<float> y) => System.Numerics.Tensors.TensorPrimitives.Dot(x, y);

    internal static int ThreadCount(long m, long n, long k) => m * n * k < 1 << 16 ? 1 : Environment.ProcessorCount;

    static void CheckSizes(float[] a, float[] b, float[] c, int m, int n, int k)
    {
        if (a.LongLength < (long)m * k || b.LongLength < (long)n * k || c.LongLength < (long)m * n)
            throw new ArgumentException($"GEMM sizes m={m} n={n} k={k} exceed buffers a={a.Length} b={b.Length} c={c.Length}");
    }
}
