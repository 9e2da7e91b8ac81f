using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime;

/// <summary>
/// The keep-mask layout of <see cref="IBackend.MeanAblate"/>: one bit per node, mask rows of
/// <see cref="WordsPerRow"/> 32-bit words (bit i % 32 of word i / 32 is node i; the tail bits of the last word are
/// unused). Rows start on a word so a kernel finds node i of row m without a division by the width.
/// </summary>
internal static class AblationMask
{
    public static int WordsPerRow(int width) => (width + 31) >> 5;

    /// <summary>Packs one mask row (<paramref name="keep"/>, width values) into <see cref="WordsPerRow"/> words.</summary>
    public static void PackRow(ReadOnlySpan<bool> keep, Span<uint> words)
    {
        int width = keep.Length, full = width >> 5;
        if (words.Length < WordsPerRow(width)) throw new ArgumentException($"{words.Length} words cannot hold {width} bits");
        // A bool is one byte; the SIMD path reads 32 of them and takes the sign bits of (byte > 0), so any nonzero
        // byte counts as true, as in the scalar tail.
        var bytes = MemoryMarshal.AsBytes(keep);
        int w = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; w < full; w++)
            {
                var v = Vector256.Create<byte>(bytes.Slice(w << 5, 32));
                words[w] = Vector256.ExtractMostSignificantBits(Vector256.GreaterThan(v, Vector256<byte>.Zero));
            }
        for (; w < WordsPerRow(width); w++)
        {
            uint bits = 0;
            int end = Math.Min(width, (w + 1) << 5);
            for (int i = w << 5; i < end; i++)
                if (keep[i]) bits |= 1u << (i & 31);
            words[w] = bits;
        }
    }

    /// <summary>Whether node <paramref name="index"/> of mask row <paramref name="row"/> is kept.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsKept(ReadOnlySpan<uint> keepBits, int wordsPerRow, int row, int index) =>
        ((keepBits[row * wordsPerRow + (index >> 5)] >> (index & 31)) & 1u) != 0;

    /// <summary>The argument checks both backends make before <see cref="IBackend.MeanAblate"/> touches memory.</summary>
    public static void Check(Tensor x, Tensor means, ReadOnlySpan<uint> keepBits, ReadOnlySpan<int> keepRow, ReadOnlySpan<int> meanRow)
    {
        int width = x.Columns, rows = x.Rows;
        if (means.Columns != width) throw new ArgumentException($"MeanAblate: means {means} do not have x's width {width}");
        if (keepRow.Length != rows || meanRow.Length != rows)
            throw new ArgumentException($"MeanAblate: {keepRow.Length} keep rows and {meanRow.Length} mean rows for {rows} rows of x");
        int wpr = WordsPerRow(width);
        if (keepBits.Length % Math.Max(1, wpr) != 0) throw new ArgumentException($"MeanAblate: {keepBits.Length} mask words are not rows of {wpr}");
        int maskRows = wpr == 0 ? 0 : keepBits.Length / wpr, meanRows = means.Rows;
        for (int r = 0; r < rows; r++)
        {
            if (meanRow[r] >= meanRows) throw new ArgumentOutOfRangeException(nameof(meanRow), $"MeanAblate: mean row {meanRow[r]} outside [0, {meanRows})");
            if (keepRow[r] >= maskRows) throw new ArgumentOutOfRangeException(nameof(keepRow), $"MeanAblate: mask row {keepRow[r]} outside [0, {maskRows})");
        }
    }
}
