using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>Rotary position embedding in place, interleaved pairs or halves; the inverse is the backward.</summary>
internal static class RopeOps
{
    /// <remarks>
    /// Every element is out[j] = x[j]·C[j] + x[partner(j)]·S[j], where partner(j) is the other element of j's pair and
    /// C, S are cos and ±sin expanded to the head width (S carries the sign of the rotation). Those expanded tables are
    /// built once per call for the positions in use, so the per-head loop is two multiplies and an add per vector: a
    /// lane swap for interleaved pairs, a load from the other half for halves.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Apply(Span<float> x, int rows, int heads, int headDim, int seqLen, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin,
        bool interleaved, bool inverse)
    {
        int half = headDim / 2, width = heads * headDim;
        if (rows == 0 || heads == 0 || half == 0) return;
        if (x.Length < (long)rows * width) throw new ArgumentException("RoPE input is smaller than rows × heads × headDim");
        if (cos.Length < Math.Min(rows, seqLen) * half || sin.Length < Math.Min(rows, seqLen) * half)
            throw new ArgumentException("RoPE tables are shorter than the positions in use");
        int positions = Math.Min(rows, seqLen), tableLength = positions * headDim;
        float[] table = ArrayPool<float>.Shared.Rent(2 * tableLength);
        try
        {
            float sign = inverse ? -1f : 1f;
            fixed (float* px = x, pt = table)
            {
                float* ct = pt, st = pt + tableLength;
                for (int pos = 0; pos < positions; pos++)
                    for (int i = 0; i < half; i++)
                    {
                        float c = cos[pos * half + i], s = sign * sin[pos * half + i];
                        int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
                        ct[pos * headDim + i0] = c; st[pos * headDim + i0] = -s;
                        ct[pos * headDim + i1] = c; st[pos * headDim + i1] = s;
                    }
                bool pairs = interleaved && headDim % 8 == 0 && Vector256.IsHardwareAccelerated;
                bool halves = !interleaved && half % 8 == 0 && Vector256.IsHardwareAccelerated;
                var swap = Vector256.Create(1, 0, 3, 2, 5, 4, 7, 6);
                for (int r = 0; r < rows; r++)
                {
                    int pos = r % seqLen;
                    float* c = ct + pos * headDim, s = st + pos * headDim;
                    for (int h = 0; h < heads; h++)
                    {
                        float* v = px + (long)r * width + h * headDim;
                        if (pairs)
                            for (int j = 0; j < headDim; j += 8)
                            {
                                var a = Vector256.Load(v + j);
                                Vector256.Store(a * Vector256.Load(c + j) + Vector256.Shuffle(a, swap) * Vector256.Load(s + j), v + j);
                            }
                        else if (halves)
                            for (int j = 0; j < half; j += 8)
                            {
                                var a = Vector256.Load(v + j);
                                var b = Vector256.Load(v + half + j);
                                Vector256.Store(a * Vector256.Load(c + j) + b * Vector256.Load(s + j), v + j);
                                Vector256.Store(b * Vector256.Load(c + half + j) + a * Vector256.Load(s + half + j), v + half + j);
                            }
                        else
                            for (int i = 0; i < half; i++)
                            {
                                int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
                                float a = v[i0], b = v[i1];
                                v[i0] = a * c[i0] + b * s[i0];
                                v[i1] = b * c[i1] + a * s[i1];
                            }
                    }
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(table);
        }
    }
}
