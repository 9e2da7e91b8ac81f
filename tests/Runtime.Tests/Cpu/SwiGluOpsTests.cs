using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Tests.Kernels;

namespace NeuronTrace.Runtime.Tests.Cpu;

/// <summary>
/// <see cref="SwiGluOps.Backward"/> against the three gate rules written from their definitions in float64, on lengths
/// through the 8-wide body and the scalar tail, gates over [−12, 12] (σ saturating on both sides) plus 0 and ±30.
/// Outputs start NaN-filled. Tolerance 1e-7 abs + 1e-6 rel: a few float32 products on a ~1-ulp exp.
/// </summary>
public class SwiGluOpsTests
{
    public static TheoryData<int, GateRule> Cases()
    {
        var data = new TheoryData<int, GateRule>();
        foreach (int n in new[] { 1, 7, 8, 13, 1003 })
            foreach (var rule in new[] { GateRule.Exact, GateRule.IdentityHalf, GateRule.Identity })
                data.Add(n, rule);
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void Backward_matches_float64(int n, GateRule rule)
    {
        var g = Rand.Floats(n, n, -12f, 12f);
        float[] extremes = [0f, 30f, -30f];
        for (int i = 0; i < Math.Min(n, extremes.Length); i++) g[n - 1 - i] = extremes[i];
        var u = Rand.Floats(n + 1, n, -2f, 2f);
        var dh = Rand.Floats(n + 2, n);
        float[] dg = new float[n], du = new float[n];
        Array.Fill(dg, float.NaN);
        Array.Fill(du, float.NaN);
        SwiGluOps.Backward(dh, g, u, rule, dg, du);

        float[] eg = new float[n], eu = new float[n];
        for (int i = 0; i < n; i++)
        {
            double x = g[i], sg = 1 / (1 + Math.Exp(-x)), silu = x * sg;
            // Exact: d silu/dg = σ + g σ (1 − σ); the identity rules hold σ constant, the half rule halves both.
            double dSilu = rule == GateRule.Exact ? sg + x * sg * (1 - sg) : sg;
            double c = rule == GateRule.IdentityHalf ? 0.5 : 1;
            eg[i] = (float)(c * dh[i] * u[i] * dSilu);
            eu[i] = (float)(c * dh[i] * silu);
        }
        Approx.Equal(eg, dg, 1e-7f, 1e-6f, $"dgate ({rule})");
        Approx.Equal(eu, du, 1e-7f, 1e-6f, $"dup ({rule})");
    }
}
