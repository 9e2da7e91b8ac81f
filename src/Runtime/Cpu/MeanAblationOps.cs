using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// <see cref="IBackend.MeanAblate"/> on the CPU: per row, a copy of the mean row where nothing is kept, nothing where
/// everything is, and otherwise a select of 8 lanes at a time from the mask bits. Only data movement, so threads pay
/// off only on large sites (a Llama-8B sweep chunk is tens of millions of values; stories260K's are thousands).
/// </summary>
internal static unsafe class MeanAblationOps
{
    /// <summary>Values below which one thread does the whole op (thread start-up costs more than the copy).</summary>
    const long ParallelThreshold = 1 << 20;

    public static void Apply(float[] x, int rows, int width, float[] means, ReadOnlySpan<uint> keepBits,
        ReadOnlySpan<int> keepRow, ReadOnlySpan<int> meanRow)
    {
        if (rows == 0 || width == 0) return;
        int wpr = AblationMask.WordsPerRow(width);
        fixed (float* px = x)
        fixed (float* pm = means)
        fixed (uint* pb = keepBits)
        fixed (int* pk = keepRow)
        fixed (int* pr = meanRow)
        {
            // Pointers as nint so the lambda can capture them; the fixed block outlives Parallel.For.
            nint ax = (nint)px, am = (nint)pm, ab = (nint)pb, ak = (nint)pk, ar = (nint)pr;
            if ((long)rows * width < ParallelThreshold || Environment.ProcessorCount == 1)
            {
                for (int r = 0; r < rows; r++) Row(ax, am, ab, ak, ar, r, width, wpr);
                return;
            }
            Parallel.For(0, rows, r => Row(ax, am, ab, ak, ar, r, width, wpr));
        }
    }

    static void Row(nint ax, nint am, nint ab, nint ak, nint ar, int r, int width, int wpr)
    {
        int meanRow = ((int*)ar)[r];
        if (meanRow < 0) return;   // padding: the forward's own value stays
        float* xr = (float*)ax + (long)r * width;
        float* mr = (float*)am + (long)meanRow * width;
        int keepRow = ((int*)ak)[r];
        if (keepRow < 0)
        {
            Buffer.MemoryCopy(mr, xr, (long)width * sizeof(float), (long)width * sizeof(float));
            return;
        }
        uint* bits = (uint*)ab + (long)keepRow * wpr;
        for (int w = 0; w < wpr; w++)
        {
            uint word = bits[w];
            int start = w << 5, end = Math.Min(width, start + 32);
            if (word == uint.MaxValue && end - start == 32) continue;   // all 32 kept
            int i = start;
            if (word == 0)
            {
                for (; i < end; i++) xr[i] = mr[i];
                continue;
            }
            if (Vector256.IsHardwareAccelerated)
            {
                // Lane j of a group of 8 tests bit (i - start + j): broadcast the word, AND with one bit per lane.
                var lanes = Vector256.Create(1u, 2u, 4u, 8u, 16u, 32u, 64u, 128u);
                for (; i + 8 <= end; i += 8)
                {
                    var keep = Vector256.Equals(Vector256.Create(word >> (i - start)) & lanes, lanes);
                    var kept = Vector256.Load(xr + i);
                    var mean = Vector256.Load(mr + i);
                    Vector256.ConditionalSelect(keep.AsSingle(), kept, mean).Store(xr + i);
                }
            }
            for (; i < end; i++)
                if (((word >> (i - start)) & 1u) == 0) xr[i] = mr[i];
        }
    }
}
