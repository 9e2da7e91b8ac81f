namespace NeuronTrace.Runtime.Cpu;

/// <summary>The SwiGLU product h = silu(g) ⊙ u and its backward under a gate rule.</summary>
public static class SwiGluOps
{
    public static float Sigmoid(float x) => 1f / (1f + MathF.Exp(-x));

    public static void Forward(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> h)
    {
        // Vectorised (a scalar exp per element dominated small models), one pass over the three arrays.
        SimdMath.SiluTimes(gate, up, h);
    }

    public static void Backward(ReadOnlySpan<float> dh, ReadOnlySpan<float> gate, ReadOnlySpan<float> up, GateRule rule,
        Span<float> dgate, Span<float> dup)
    {
        for (int i = 0; i < dh.Length; i++)
        {
            float g = gate[i], sg = Sigmoid(g), silu = g * sg;
            switch (rule)
            {
                case GateRule.Exact:
                    dgate[i] = dh[i] * up[i] * sg * (1f + g * (1f - sg));
                    dup[i] = dh[i] * silu;
                    break;
                case GateRule.IdentityHalf:
                    dgate[i] = 0.5f * dh[i] * up[i] * sg;
                    dup[i] = 0.5f * dh[i] * silu;
                    break;
                case GateRule.Identity:
                    dgate[i] = dh[i] * up[i] * sg;
                    dup[i] = dh[i] * silu;
                    break;
                default: throw new ArgumentOutOfRangeException(nameof(rule));
            }
        }
    }
}
