namespace NeuronTrace.Model;

/// <summary>cos/sin of the rotary angles, [positions, headDim/2], with Llama 3.1 frequency scaling when configured.</summary>
public static class RopeTables
{
    /// <summary>Inverse frequency of pair i: theta^(−2i/headDim), rescaled per Llama 3.1's rule when a scaling is given.</summary>
    public static double[] InverseFrequencies(LlamaConfig c)
    {
        int half = c.HeadDim / 2;
        var f = new double[half];
        for (int i = 0; i < half; i++)
        {
            double inv = Math.Pow(c.RopeTheta, -2.0 * i / c.HeadDim);
            if (c.RopeScaling is { } s)
            {
                // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and the band between blended.
                double lowWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
                double highWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
                double wavelen = 2 * Math.PI / inv;
                if (wavelen > lowWavelen) inv /= s.Factor;
                else if (wavelen >= highWavelen)
                {
                    double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    inv = (1 - smooth) * inv / s.Factor + smooth * inv;
                }
            }
            f[i] = inv;
        }
        return f;
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
