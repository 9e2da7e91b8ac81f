using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Model.Tests;

/// <summary>The hand-written backward against central finite differences of the forward, at every site.</summary>
public class FiniteDifferenceTests
{
    [Theory]
    [InlineData(RopeLayout.Interleaved)]
    [InlineData(RopeLayout.RotateHalf)]
    public void ExactGradientsMatchFiniteDifferencesAtEverySite(RopeLayout layout)
    {
        var be = CpuBackend.Instance;
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig(layout), seed: 7), be);
        // Unequal lengths: padding must not leak into real positions.
        var batch = new TokenBatch([[1, 5, 9, 3, 17], [1, 4, 30]]);
        int a = 11, b = 20;
        float Metric(InterventionPlan? plan)
        {
            using var pass = model.Forward(batch, LogitRows.Last, plan);
            var logits = pass.HostLogits();
            int v = model.Config.VocabSize;
            double m = 0;
            for (int i = 0; i < batch.Size; i++) m += logits[i * v + a] - logits[i * v + b];
            return (float)m;
        }

        using var clean = model.Forward(batch, LogitRows.Last);
        var dLogits = new float[batch.Size * model.Config.VocabSize];
        for (int i = 0; i < batch.Size; i++) { dLogits[i * model.Config.VocabSize + a] = 1; dLogits[i * model.Config.VocabSize + b] = -1; }
        using var dl = be.Upload(dLogits, batch.Size, model.Config.VocabSize);
        using var grads = model.Backward(clean, dl, BackwardRules.Exact, NodeSites.All);

        var rng = new Random(3);
        double worst = 0;
        foreach (var site in NodeSites.All)
            for (int layer = 0; layer < model.Config.Layers; layer++)
            {
                var g = grads.Host(site, layer);
                double gMax = g.Max(Math.Abs);
                int width = site.Width(model.Config);
                for (int trial = 0; trial < 6; trial++)
                {
                    // Real positions only (row 5..7 of prompt 1 are padding, where the gradient must be exactly 0).
                    int bIdx = rng.Next(2), t = rng.Next(batch.Lengths[bIdx]), unit = rng.Next(width);
                    int row = bIdx * batch.SeqLen + t;
                    const float eps = 1e-2f;
                    float Perturbed(float delta)
                    {
                        using var plan = new InterventionPlan();
                        var scale = new float[batch.Rows * width]; Array.Fill(scale, 1f);
                        var offset = new float[batch.Rows * width]; offset[row * width + unit] = delta;
                        plan.Set(site, layer, be.Upload(scale, batch.Rows, width), be.Upload(offset, batch.Rows, width));
                        return Metric(plan);
                    }
                    double fd = (Perturbed(eps) - Perturbed(-eps)) / (2 * eps);
                    double an = g[row * width + unit];
                    // Relative to the entry, with a floor of a tenth of the array's largest gradient (fp32 central
                    // differences at eps 1e-2 are good to ~5e-5 absolute here; measured worst: 1.9e-4 by this measure).
                    double err = Math.Abs(fd - an) / (Math.Abs(fd) + 0.1 * gMax);
                    worst = Math.Max(worst, err);
                    Assert.True(err < 1e-3, $"{site.Name()} L{layer} row {row} unit {unit}: backward {an}, finite difference {fd}");
                }
                // Padding rows of prompt 1 get no gradient.
                for (int t = batch.Lengths[1]; t < batch.SeqLen; t++)
                    for (int u = 0; u < width; u++) Assert.Equal(0f, g[(batch.SeqLen + t) * width + u]);
            }
        Assert.True(worst < 1e-3);
    }
}
