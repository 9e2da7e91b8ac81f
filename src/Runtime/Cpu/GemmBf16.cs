using System.Buffers;
using System.Runtime.CompilerServices;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// Products in the bf16 CPU math mode (<see cref="CpuMath.Bf16"/>): c (+)= bf16(a) · B over bf16 weights, that is the
/// activation operand rounded to bf16 (to nearest even, denormals to zero), exact bf16 × bf16 products, fp32 sums.
/// The arithmetic PyTorch's bf16 CPU matmul does (oneDNN avx512_core_bf16), without its bf16 outputs: C, and
/// everything outside the products, stays fp32.
/// </summary>
/// <remarks>
/// <para>Two implementations of that arithmetic, which differ only in summation order:
/// <see cref="Bf16Path.Instruction"/>, the AVX-512 BF16 micro-kernel of native/cpu (<see cref="CpuBf16Library"/>;
/// about 2.5× the multiply-adds per second of the fp32 FMA kernel on Zen 4), where the CPU has it and the library is
/// found; and <see cref="Bf16Path.Portable"/> everywhere else: A rounded here, then the ordinary fp32 product over the
/// widened weights (exact products of bf16 values, so the same sums).</para>
/// <para>Few-row products (the last-position logits) take the portable path too: they are bound by reading B, which
/// the streaming kernels of GemmSmall.cs do without packing, so the path choice by rows is the fp32 mode's and
/// <see cref="SameRowArithmetic(int, int)"/> holds for both modes.</para>
/// <para>The instruction path cuts C into column tiles (a few per core, as <see cref="RunPacked"/> does); each tile
/// packs its own columns of B, so every weight is read once per product. A is rounded once per product.</para>
/// </remarks>
internal static unsafe partial class Gemm
{
    /// <summary>Which bf16-math implementation to use; tests force each, the backend picks automatically.</summary>
    internal enum Bf16Path { Auto, Instruction, Portable }

    /// <summary>c[m, n] (+)= Σ_k bf16(a[m, k]) b[n, k] (A·Bᵀ, B bf16 row-major [n, k]).</summary>
    public static void MultiplyTransposedBBf16(float[] a, HalfWeights b, float[] c, int m, int n, int k, bool accumulate) =>
        RunBf16(a, b, c, m, n, k, accumulate, transposedB: true, Bf16Path.Auto);

    /// <summary>c[m, n] (+)= Σ_k bf16(a[m, k]) b[k, n] (A·B, B bf16 row-major [k, n]).</summary>
    public static void MultiplyBf16(float[] a, HalfWeights b, float[] c, int m, int n, int k, bool accumulate) =>
        RunBf16(a, b, c, m, n, k, accumulate, transposedB: false, Bf16Path.Auto);

    internal static void RunBf16(float[] a, HalfWeights b, float[] c, int m, int n, int k, bool accumulate, bool transposedB, Bf16Path path)
    {
        ArgumentNullException.ThrowIfNull(b);
        if (b.Format != HalfFormat.BFloat16) throw new ArgumentException($"bf16 math needs bf16 weights, not {b.Format}");
        Check(a, b.Length, c, m, n, k);
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            if (!accumulate) c.AsSpan(0, m * n).Clear();
            return;
        }
        if (path == Bf16Path.Auto)
            path = AutoPath(m, transposedB) == Path.Packed && CpuBf16Library.Available ? Bf16Path.Instruction : Bf16Path.Portable;
        if (path == Bf16Path.Instruction)
        {
            if (!CpuBf16Library.Available) throw new InvalidOperationException($"bf16 instruction path: {CpuBf16Library.WhyNot}");
            RunBf16Instruction(a, b, c, m, n, k, accumulate, transposedB);
        }
        else RunBf16Portable(a, b, c, m, n, k, accumulate, transposedB);
        GC.KeepAlive(b);
    }

    static void RunBf16Portable(float[] a, HalfWeights b, float[] c, int m, int n, int k, bool accumulate, bool transposedB)
    {
        int count = m * k;
        var rounded = ArrayPool<float>.Shared.Rent(count);
        try
        {
            for (int i = 0; i < count; i++) rounded[i] = RoundToBf16(a[i]);
            Run(rounded, b, c, m, n, k, accumulate, transposedB, Path.Auto);
        }
        finally { ArrayPool<float>.Shared.Return(rounded); }
    }

    /// <summary>
    /// x rounded to the nearest bf16 value (ties to even) and widened back: what vcvtne2ps2bf16 computes, including
    /// its flushing of denormal inputs to (signed) zero and its quieting of NaNs.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float RoundToBf16(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        if ((bits & 0x7F800000u) == 0) return BitConverter.UInt32BitsToSingle(bits & 0x80000000u);
        if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return BitConverter.UInt32BitsToSingle((bits | 0x00400000u) & 0xFFFF0000u);
        bits += 0x7FFFu + ((bits >> 16) & 1u);
        return BitConverter.UInt32BitsToSingle(bits & 0xFFFF0000u);
    }

    readonly struct Bf16Job(ushort* aRounded, int m, int kpad, ushort* b, int n, int k, bool transposedB, float* c, bool accumulate, int tileN)
    {
        public readonly ushort* ARounded = aRounded, B = b;
        public readonly float* C = c;
        public readonly int M = m, KPad = kpad, N = n, K = k, TileN = tileN;
        public readonly bool TransposedB = transposedB, Accumulate = accumulate;
    }

    /// <summary>
    /// A rounded into the kernel's buffer, in one piece of whole row blocks per core when the product is spread: on the
    /// calling thread alone it was a serial step before every product (192 × 8192 values for the down projection; smaller ones stay on the calling thread, CpuParallel.MinElements). Each
    /// value rounds the same way whichever piece holds it; the zero rows past m belong to the last piece.
    /// </summary>
    static void RoundRows(float* a, int m, int k, ushort* rounded, int kpad, int mpad, int workers)
    {
        int block = CpuBf16Library.nt_cpu_bf16_row_block();
        if (workers == 1 || (long)m * k < CpuParallel.MinElements || mpad <= block)
        {
            CpuBf16Library.nt_cpu_bf16_round_rows(a, m, k, rounded, kpad, mpad);
            return;
        }
        nint pa = (nint)a, pr = (nint)rounded;
        CpuParallel.For(mpad, (long)m * k, block, (r0, r1) =>
            CpuBf16Library.nt_cpu_bf16_round_rows((float*)pa + (long)r0 * k, Math.Clamp(m - r0, 0, r1 - r0), k, (ushort*)pr + (long)r0 * kpad, kpad, r1 - r0));
    }

    /// <summary>Columns of C per tile are a multiple of this (the micro-kernel's panel width).</summary>
    const int Bf16PanelColumns = 32;

    static void RunBf16Instruction(float[] a, HalfWeights b, float[] c, int m, int n, int k, bool accumulate, bool transposedB)
    {
        int kpad = RoundUp(k, 2), mpad = RoundUp(m, CpuBf16Library.nt_cpu_bf16_row_block());
        long roundedValues = (long)mpad * kpad;
        if (roundedValues > int.MaxValue) throw new ArgumentException($"GEMM m={m} k={k}: the rounded activations exceed 2^31 values");
        int workers = Workers((long)m * n * k);
        int tiles = workers == 1 ? 1 : Math.Min(TilesPerWorker * workers, CeilDiv(n, Bf16PanelColumns));
        int tileN = RoundUp(CeilDiv(n, tiles), Bf16PanelColumns);
        tiles = CeilDiv(n, tileN);

        var aws = RentWorkspace();
        try
        {
            aws.Reserve(CeilDiv((int)roundedValues, 2), 0);
            ushort* rounded = (ushort*)aws.APack;
            fixed (float* pa = a, pc = c)
            {
                RoundRows(pa, m, k, rounded, kpad, mpad, workers);
                var job = new Bf16Job(rounded, m, kpad, b.Pointer, n, k, transposedB, pc, accumulate, tileN);
                ForEach(tiles, job, static (job, index) =>
                {
                    int j0 = index * job.TileN, j1 = Math.Min(job.N, j0 + job.TileN);
                    var ws = RentWorkspace();
                    try
                    {
                        ws.Reserve(0, CeilDiv((int)CpuBf16Library.nt_cpu_bf16_workspace_bytes(), sizeof(float)));
                        int rc = CpuBf16Library.nt_cpu_gemm_bf16(job.ARounded, job.M, job.KPad, job.B, job.N, job.K, job.TransposedB ? 1 : 0,
                            job.C, j0, j1, job.Accumulate ? 1 : 0, ws.BPack);
                        if (rc != 0) throw new InvalidOperationException($"nt_cpu_gemm_bf16 refused m={job.M} n={job.N} k={job.K} columns {j0}..{j1}");
                    }
                    finally { ReturnWorkspace(ws); }
                });
            }
        }
        finally { ReturnWorkspace(aws); }
    }
}
