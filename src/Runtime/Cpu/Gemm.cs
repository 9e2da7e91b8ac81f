using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

[assembly: InternalsVisibleTo("NeuronTrace.Runtime.Tests")]

namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// Single-precision matrix products on the host, row-major.
/// </summary>
/// <remarks>
/// <para>Large products use a BLIS-style packed GEMM: B is packed into column panels of <see cref="NR"/> = 16 columns
/// (contiguous along k, zero-padded), A into row panels of <see cref="MR"/> = 6 rows (zero-padded), k is blocked by KC,
/// n by NC and m by MC, and a 6×16 register-tiled micro-kernel (12 Vector256 accumulators, FMA, C prefetched and added
/// after the k loop) computes each micro-tile. The two entry points differ only in how B is packed (rows of B for A·Bᵀ,
/// columns of B for A·B). Without 256-bit SIMD a portable kernel runs over the same packed panels.</para>
/// <para>Products with a few rows (the last-position logits) are bandwidth bound: they skip packing and stream B once
/// (dot-product kernel for A·Bᵀ, row-axpy kernel for A·B).</para>
/// <para>Above <see cref="ParallelThreshold"/> multiply-adds the work is cut into one tile of C per core (each packs its
/// own operands), run with Parallel.For; smaller products run on the calling thread and allocate nothing (packing
/// buffers are pinned, 64-byte aligned, pooled and reused).</para>
/// </remarks>
internal static unsafe partial class Gemm
{
    /// <summary>c[m, n] (+)= Σ_k a[m, k] b[n, k]  (A·Bᵀ, B row-major [n, k]).</summary>
    public static void MultiplyTransposedB(float[] a, float[] b, float[] c, int m, int n, int k, bool accumulate) =>
        Run(a, b, c, m, n, k, accumulate, transposedB: true, Path.Auto);

    /// <summary>c[m, n] (+)= Σ_k a[m, k] b[k, n]  (A·B, B row-major [k, n]).</summary>
    public static void Multiply(float[] a, float[] b, float[] c, int m, int n, int k, bool accumulate) =>
        Run(a, b, c, m, n, k, accumulate, transposedB: false, Path.Auto);

    /// <summary>Which implementation to use; tests force each one, the public entry points pick automatically.</summary>
    internal enum Path { Auto, Packed, SmallM, PackedScalar }

    /// <summary>Rows up to which A·Bᵀ skips packing and streams B through a dot-product kernel.</summary>
    internal const int SmallMTransposedB = 16;

    /// <summary>Rows up to which A·B skips packing and streams B rows through an axpy kernel.</summary>
    internal const int SmallMPlain = 8;

    /// <summary>Below this many multiply-adds a product runs on the calling thread only.</summary>
    internal const long ParallelThreshold = 1L << 22;

    /// <summary>c[m, n] (+)= Σ_k a[m, k] b[n, k] with 16-bit B, widened to fp32 as it is read (fp32 accumulation).</summary>
    public static void MultiplyTransposedB(float[] a, HalfWeights b, float[] c, int m, int n, int k, bool accumulate) =>
        Run(a, b, c, m, n, k, accumulate, transposedB: true, Path.Auto);

    /// <summary>c[m, n] (+)= Σ_k a[m, k] b[k, n] with 16-bit B, widened to fp32 as it is read (fp32 accumulation).</summary>
    public static void Multiply(float[] a, HalfWeights b, float[] c, int m, int n, int k, bool accumulate) =>
        Run(a, b, c, m, n, k, accumulate, transposedB: false, Path.Auto);

    internal static void Run(float[] a, float[] b, float[] c, int m, int n, int k, bool accumulate, bool transposedB, Path path)
    {
        ArgumentNullException.ThrowIfNull(b);
        Check(a, b.LongLength, c, m, n, k);
        fixed (float* pb = b) Run(a, pb, null, default, c, m, n, k, accumulate, transposedB, path);
    }

    internal static void Run(float[] a, HalfWeights b, float[] c, int m, int n, int k, bool accumulate, bool transposedB, Path path)
    {
        ArgumentNullException.ThrowIfNull(b);
        Check(a, b.Length, c, m, n, k);
        Run(a, null, b.Pointer, b.Format, c, m, n, k, accumulate, transposedB, path);
        GC.KeepAlive(b);
    }

    static void Check(float[] a, long bLength, float[] c, int m, int n, int k)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(c);
        if (m < 0 || n < 0 || k < 0) throw new ArgumentOutOfRangeException(nameof(m), $"GEMM sizes m={m} n={n} k={k} must not be negative");
        if (a.LongLength < (long)m * k || bLength < (long)n * k || c.LongLength < (long)m * n)
            throw new ArgumentException($"GEMM sizes m={m} n={n} k={k} exceed buffers a={a.Length} b={bLength} c={c.Length}");
    }

    static void Run(float[] a, float* pb, ushort* pbHalf, HalfFormat bFormat, float[] c, int m, int n, int k, bool accumulate, bool transposedB, Path path)
    {
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            if (!accumulate) c.AsSpan(0, m * n).Clear();
            return;
        }

        if (path == Path.Auto) path = AutoPath(m, transposedB);
        // The 16-bit widening kernels are AVX2; elsewhere 16-bit B goes through the packers' scalar widening.
        if (pbHalf != null && !Avx2.IsSupported) path = Path.PackedScalar;

        fixed (float* pa = a, pc = c)
        {
            var p = new Problem(pa, pb, pc, m, n, k, accumulate, transposedB, path == Path.PackedScalar, pbHalf, bFormat);
            if (path == Path.SmallM) RunSmallM(in p);
            else RunPacked(in p);
        }
    }

    static Path AutoPath(int m, bool transposedB) =>
        !Vector256.IsHardwareAccelerated ? Path.PackedScalar
        : m <= (transposedB ? SmallMTransposedB : SmallMPlain) ? Path.SmallM
        : Path.Packed;

    /// <summary>
    /// Whether an A·Bᵀ product (the forward's x·Wᵀ) computes each row of C with the same operations, in the same order,
    /// when A has <paramref name="rows1"/> rows as when it has <paramref name="rows2"/>: true unless one count takes the
    /// few-row kernel and the other the packed one (their summation orders differ). Tiling and threading never change
    /// a row's arithmetic.
    /// </summary>
    public static bool SameRowArithmetic(int rows1, int rows2) => SameRowArithmetic(rows1, rows2, transposedB: true);

    /// <summary>As <see cref="SameRowArithmetic(int, int)"/> for A·Bᵀ, or with <paramref name="transposedB"/> false for A·B (the input gradient dy·W).</summary>
    public static bool SameRowArithmetic(int rows1, int rows2, bool transposedB) => AutoPath(rows1, transposedB) == AutoPath(rows2, transposedB);

    /// <summary>One product, with raw pointers into arrays pinned by the caller for the duration of the call.</summary>
    /// <summary>B is fp32 at <see cref="B"/>, or 16-bit at <see cref="BHalf"/> (then B is null) in <see cref="BFormat"/>.</summary>
    internal readonly struct Problem(float* a, float* b, float* c, int m, int n, int k, bool accumulate, bool transposedB, bool scalar,
        ushort* bHalf = null, HalfFormat bFormat = default)
    {
        public readonly float* A = a, B = b, C = c;
        public readonly ushort* BHalf = bHalf;
        public readonly HalfFormat BFormat = bFormat;
        public readonly int M = m, N = n, K = k;
        public readonly bool Accumulate = accumulate, TransposedB = transposedB, Scalar = scalar;
        public long MultiplyAdds => (long)M * N * K;
    }

    static int Workers(long multiplyAdds) =>
        multiplyAdds < ParallelThreshold ? 1 : Math.Max(1, Environment.ProcessorCount);

    /// <summary>Runs <paramref name="body"/>(state, 0..count-1) on the pool, or inline when there is one task.</summary>
    static void ForEach<TState>(int count, TState state, Action<TState, int> body)
    {
        if (count == 1) body(state, 0);
        else ForEachParallel(count, state, body);
    }

    // Separate so that the closure is only allocated when the work is actually spread over threads.
    static void ForEachParallel<TState>(int count, TState state, Action<TState, int> body) =>
        Parallel.For(0, count, i => body(state, i));

    // Pinned, 64-byte aligned scratch for packing; a few are pooled so steady-state calls allocate nothing.
    internal sealed class Workspace
    {
        float[]? aBuf, bBuf;
        public float* APack, BPack;

        public void Reserve(int aFloats, int bFloats)
        {
            if (aBuf == null || aBuf.Length < aFloats + 32) APack = Allocate(aFloats, ref aBuf);
            if (bBuf == null || bBuf.Length < bFloats + 32) BPack = Allocate(bFloats, ref bBuf);
        }

        static float* Allocate(int floats, ref float[]? buffer)
        {
            // Slack: 16 floats to align to 64 bytes, 16 for the overlapping stores of the packers.
            buffer = GC.AllocateUninitializedArray<float>(floats + 32, pinned: true);
            nint p = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer));
            return (float*)((p + 63) & ~(nint)63);
        }
    }

    static readonly Workspace?[] Pool = new Workspace?[16];

    static Workspace RentWorkspace()
    {
        for (int i = 0; i < Pool.Length; i++)
        {
            var w = Interlocked.Exchange(ref Pool[i], null);
            if (w != null) return w;
        }
        return new Workspace();
    }

    static void ReturnWorkspace(Workspace w)
    {
        for (int i = 0; i < Pool.Length; i++)
            if (Interlocked.CompareExchange(ref Pool[i], w, null) == null) return;
    }

    static int CeilDiv(int x, int y) => (x + y - 1) / y;
    static int RoundUp(int x, int y) => CeilDiv(x, y) * y;
}
