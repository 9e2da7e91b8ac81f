namespace NeuronTrace.Model;

/// <summary>cos/sin of the rotary angles, [positions, headDim/2], with Llama 3.1 frequency scaling when configured.</summary>
internal static class RopeTables
{
    /// <summary>Inverse frequency of pair i: theta^(−2i/headDim), rescaled per Llama 3.1's rule when a scaling is given.</summary>
    public static double[] InverseFrequencies(LlamaConfig c)
    {
        var f = new double[c.HeadDim / 2];
        for (int i = 0; i < f.Length; i++)
        {
            double inv = UnscaledInverseFrequency(c.RopeTheta, i, c.HeadDim);
            f[i] = c.RopeScaling is { } s ? Llama3Rescale(inv, s) : inv;
        }
        return f;
    }

    public static double UnscaledInverseFrequency(double theta, int pair, int headDim) => Math.Pow(theta, -2.0 * pair / headDim);

    /// <summary>
    /// Llama 3.1's rule (the one copy: GGUF's rope_freqs table is derived from it): long wavelengths are slowed by
    /// <c>factor</c>, short ones kept, and the band between blended linearly in original_context / wavelength.
    /// </summary>
    public static double Llama3Rescale(double inv, Llama3RopeScaling s)
    {
        double lowWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
        double highWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
        double wavelen = 2 * Math.PI / inv;
        if (wavelen > lowWavelen) return inv / s.Factor;
        if (wavelen < highWavelen) return inv;
        double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
        return (1 - smooth) * inv / s.Factor + smooth * inv;
    }

    public static (float[] Cos, float[] Sin) Build(LlamaConfig c, int positions)
    {
        var inv = InverseFrequencies(c);
        int half = inv.Length;
        var cos = new float[positions * half];
        var sin = new float[positions * half];
        for (int p = 0; p < positions; p++)
            for (int i = 0; i < half; i++)
            {
                // float32 angle as llama2.c computes it, so fp32 logits match upstream bit-closely.
                float angle = p * (float)inv[i];
                cos[p * half + i] = MathF.Cos(angle);
                sin[p * half + i] = MathF.Sin(angle);
            }
        return (cos, sin);
    }
}
