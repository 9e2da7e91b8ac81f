namespace NeuronTrace.Runtime.Cpu;

/// <summary>Rotary position embedding in place, interleaved pairs or halves; the inverse is the backward.</summary>
public static class RopeOps
{
    public static void Apply(Span<float> x, int rows, int heads, int headDim, int seqLen, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin,
        bool interleaved, bool inverse)
    {
        int half = headDim / 2, width = heads * headDim;
        float sign = inverse ? -1f : 1f;
        for (int r = 0; r < rows; r++)
        {
            int pos = r % seqLen;
            var c = cos.Slice(pos * half, half);
            var s = sin.Slice(pos * half, half);
            var row = x.Slice(r * width, width);
            for (int h = 0; h < heads; h++)
            {
                var head = row.Slice(h * headDim, headDim);
                for (int i = 0; i < half; i++)
                {
                    int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
                    float a = head[i0], b = head[i1], ci = c[i], si = sign * s[i];
                    head[i0] = a * ci - b * si;
                    head[i1] = a * si + b * ci;
                }
            }
        }
    }
}
