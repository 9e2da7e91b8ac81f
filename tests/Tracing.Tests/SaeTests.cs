using System.Text.Json;
using System.Text.Json.Nodes;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using Xunit.Abstractions;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Sae;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests;

/// <summary>SAE feature nodes on stories260K with the tiny SAE of tests/fixtures/make_sae.py (resid, layer 2).</summary>
public class SaeTests(ITestOutputHelper output)
{
    const int Layer = 2;
    static readonly string SaeDir = Path.Combine(RepoPaths.Fixtures, "sae", "resid_2");
    static readonly Lazy<SparseAutoencoder> Sae = new(() => SparseAutoencoder.Load(SaeDir));
    static readonly Lazy<LoadedModel> Loaded = new(() => ModelLoader.Load(RepoPaths.Stories260KBin));
    static readonly Lazy<Llama> Model = new(() => new Llama(Loaded.Value.Weights, CpuBackend.Instance));
    static readonly Lazy<PromptTask> Pronouns = new(() => PromptTask.Load(Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl"), Loaded.Value.RequireTokenizer()));

    static PromptTask Slice(PromptTask t, int skip, int take) => new(t.Name, t.Pairs.Skip(skip).Take(take).ToList());

    [Fact]
    public void EncodeAndDecodeMatchPyTorch()
    {
        var sae = Sae.Value;
        Assert.Equal(64, sae.DModel);
        Assert.Equal(256, sae.Features);
        var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Fixtures, "sae", "reference.json"))).RootElement;
        var bytes = File.ReadAllBytes(Path.Combine(RepoPaths.Fixtures, "sae", "reference.f32"));
        var arrays = index.GetProperty("arrays").EnumerateArray().ToDictionary(a => a.GetProperty("name").GetString()!, a =>
        {
            var shape = a.GetProperty("shape").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            var f = new float[shape[0] * shape[1]];
            Buffer.BlockCopy(bytes, a.GetProperty("offset").GetInt32(), f, 0, f.Length * 4);
            return (shape[0], f);
        });
        var (n, x) = arrays["x"];
        var fRef = arrays["features"].Item2;
        var xhRef = arrays["x_hat"].Item2;
        double maxRelF = 0, maxRelX = 0;
        int active = 0;
        for (int r = 0; r < n; r++)
        {
            var xr = x.AsSpan(r * 64, 64);
            var f = sae.Encode(xr);
            for (int i = 0; i < 256; i++)
            {
                float want = fRef[r * 256 + i];
                Assert.True((f[i] == 0) == (want == 0), $"row {r} feature {i}: gate differs (ours {f[i]}, PyTorch {want})");
                if (want != 0) active++;
                maxRelF = Math.Max(maxRelF, Math.Abs(f[i] - want) / Math.Max(Math.Abs(want), 1e-3));
            }
            var xh = sae.Decode(f);
            for (int j = 0; j < 64; j++)
            {
                float want = xhRef[r * 64 + j];
                maxRelX = Math.Max(maxRelX, Math.Abs(xh[j] - want) / Math.Max(Math.Abs(want), 1e-3));
            }
        }
        output.WriteLine($"{n} inputs, {active} active features: max relative error features {maxRelF:E2}, reconstruction {maxRelX:E2}");
        Assert.True(maxRelF < 1e-5, $"features differ from PyTorch by {maxRelF:E2} relative");
        Assert.True(maxRelX < 1e-5, $"reconstructions differ from PyTorch by {maxRelX:E2} relative");
    }

    [Fact]
    public void LoadErrorsAreOneLineAndNameTheProblem()
    {
        var tmp = Directory.CreateTempSubdirectory("sae-test").FullName;
        try
        {
            string Fail(Action a) { var e = Assert.Throws<ModelFormatException>(a); Assert.DoesNotContain('\n', e.Message); return e.Message; }

            Assert.Contains("not found", Fail(() => SparseAutoencoder.Load(Path.Combine(tmp, "nope"))));
            Assert.Contains("neither cfg.json (SAELens) nor hyperparams.json (Llama Scope)", Fail(() => SparseAutoencoder.Load(tmp)));

            File.WriteAllText(Path.Combine(tmp, "hyperparams.json"), "{ broken");
            Directory.CreateDirectory(Path.Combine(tmp, "checkpoints"));
            var weights = Path.Combine(tmp, "checkpoints", "final.safetensors");
            // The config is read first (the memory plan reads it alone, SaeConfig), then the weights are looked for.
            Assert.Contains("not valid JSON", Fail(() => SparseAutoencoder.Load(tmp)));
            File.Copy(Path.Combine(SaeDir, "hyperparams.json"), Path.Combine(tmp, "hyperparams.json"), overwrite: true);
            Assert.Contains("SAE weights not found", Fail(() => SparseAutoencoder.Load(tmp)));
            File.Copy(Path.Combine(SaeDir, "checkpoints", "final.safetensors"), weights);

            var hp = JsonNode.Parse(File.ReadAllText(Path.Combine(SaeDir, "hyperparams.json")))!.AsObject();
            hp["d_sae"] = 128;
            File.WriteAllText(Path.Combine(tmp, "hyperparams.json"), hp.ToJsonString());
            string msg = Fail(() => SparseAutoencoder.Load(tmp));
            Assert.Contains("encoder.weight has shape [256, 64]", msg);
            output.WriteLine(msg);

            hp["d_sae"] = 256;
            hp.Remove("jump_relu_threshold");
            File.WriteAllText(Path.Combine(tmp, "hyperparams.json"), hp.ToJsonString());
            Assert.Contains("jump_relu_threshold", Fail(() => SparseAutoencoder.Load(tmp)));

            hp["jump_relu_threshold"] = 0.25;
            File.WriteAllText(Path.Combine(tmp, "hyperparams.json"), hp.ToJsonString());
            var full = File.ReadAllBytes(weights);
            File.WriteAllBytes(weights, full.AsSpan(0, full.Length - 100).ToArray());
            output.WriteLine(Fail(() => SparseAutoencoder.Load(tmp)));
            File.WriteAllBytes(weights, full);
            Assert.Equal(256, SparseAutoencoder.Load(tmp).Features);
        }
        finally { Directory.Delete(tmp, recursive: true); }
    }

    [Fact]
    public void LargeBf16SaeTakesTheThreadedPathAndMatchesTheFormulas()
    {
        // Llama Scope files are bf16 and large; a 2048 → 2048 random SAE in BF16 exercises the threaded encode path.
        const int d = 2048, F = 2048;
        var tmp = Directory.CreateTempSubdirectory("sae-big").FullName;
        try
        {
            var rng = new Random(3);
            float R(double s) => NeuronTrace.Formats.Float16.Bf16ToFloat(NeuronTrace.Formats.Float16.FloatToBf16((float)((rng.NextDouble() * 2 - 1) * s)));
            var wE = new float[F * d]; var bE = new float[F]; var wD = new float[d * F]; var bD = new float[d];
            for (int i = 0; i < wE.Length; i++) { wE[i] = R(0.05); wD[i] = R(0.05); }
            for (int i = 0; i < F; i++) bE[i] = R(0.1);
            for (int i = 0; i < d; i++) bD[i] = R(0.1);
            Directory.CreateDirectory(Path.Combine(tmp, "checkpoints"));
            new NeuronTrace.Formats.SafetensorsWriter()
                .Add("encoder.weight", wE, [F, d], NeuronTrace.Formats.FloatEncoding.BF16).Add("encoder.bias", bE, [F], NeuronTrace.Formats.FloatEncoding.BF16)
                .Add("decoder.weight", wD, [d, F], NeuronTrace.Formats.FloatEncoding.BF16).Add("decoder.bias", bD, [d], NeuronTrace.Formats.FloatEncoding.BF16)
                .Write(Path.Combine(tmp, "checkpoints", "final.safetensors"));
            double norm = 30, theta = 0.1;
            File.WriteAllText(Path.Combine(tmp, "hyperparams.json"), $$"""
                {"d_model": {{d}}, "d_sae": {{F}}, "act_fn": "jumprelu", "jump_relu_threshold": {{theta}}, "norm_activation": "dataset-wise",
                 "dataset_average_activation_norm": {"in": {{norm}}, "out": {{norm}}}, "sparsity_include_decoder_norm": true, "use_decoder_bias": true}
                """);
            var sae = SparseAutoencoder.Load(tmp);
            var x = Enumerable.Range(0, d).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            var f = sae.Encode(x);
            var xh = sae.Decode(f);
            double sIn = Math.Sqrt(d) / norm, sOut = norm / Math.Sqrt(d);
            int active = 0;
            var want = new double[d];
            for (int j = 0; j < d; j++) want[j] = bD[j];
            for (int i = 0; i < F; i++)
            {
                double pre = bE[i], dn = 0;
                for (int j = 0; j < d; j++) { pre += wE[i * d + j] * sIn * x[j]; dn += (double)wD[j * F + i] * wD[j * F + i]; }
                double fi = pre * Math.Sqrt(dn) > theta ? pre : 0;
                Assert.True(Math.Abs(f[i] - fi) <= 1e-5 * Math.Max(1, Math.Abs(fi)), $"feature {i}: {f[i]} vs {fi}");
                if (fi != 0) { active++; for (int j = 0; j < d; j++) want[j] += fi * wD[j * F + i]; }
            }
            for (int j = 0; j < d; j++) Assert.True(Math.Abs(xh[j] - want[j] * sOut) <= 1e-4 * Math.Max(1, Math.Abs(want[j] * sOut)), $"x_hat[{j}]");
            output.WriteLine($"{active} of {F} features active");
            Assert.InRange(active, 1, F - 1);
        }
        finally { Directory.Delete(tmp, recursive: true); }
    }

    [Fact]
    public void ReplacingTheSiteByDecodePlusErrorLeavesTheModelUnchanged()
    {
        var model = Model.Value; var sae = Sae.Value;
        var task = Slice(Pronouns.Value, 0, 12);
        var batch = new TokenBatch(task.Pairs.Select(p => p.CleanIds).ToList());
        using var plain = model.Forward(batch, LogitRows.Last);
        var want = plain.HostLogits();
        var means = SaeSiteMeans.Compute(model, sae, NodeSite.Resid, Layer, task.Pairs.Select(p => p.PatchIds!).ToList());
        // One mask per forward, so the ablated run has the same batch shape as the plain one (bit-for-bit comparable).
        var ev = new SaeMeanAblation(model, task, sae, NodeSite.Resid, Layer, means, Metric.CleanMinusPatch, means.Positions) { MasksPerForward = 1 };
        var all = Enumerable.Repeat(true, ev.NodeCount).ToArray();
        var featuresOnly = all.Select((_, i) => i % (sae.Features + 1) != sae.Features).ToArray();
        var m = ev.Evaluate([all, featuresOnly, new bool[ev.NodeCount]]);
        double direct = task.Pairs.Select((p, b) => (double)Metric.CleanMinusPatch.Value(want.AsSpan(b * model.Config.VocabSize, model.Config.VocabSize), p)).Sum() / task.Count;
        output.WriteLine($"metric: model {direct:R}, dec(enc(x)) + e {m[0]:R}, errors ablated {m[1]:F4}, everything ablated {m[2]:F4}");
        Assert.Equal(direct, m[0]);  // exact: x is rebuilt in double and rounds back to itself
        Assert.NotEqual(direct, m[1]);
        Assert.NotEqual(direct, m[2]);
        // handle_errors "remove" with every feature kept equals the default with the error nodes dropped from the mask.
        var remove = new SaeMeanAblation(model, task, sae, NodeSite.Resid, Layer, means, Metric.CleanMinusPatch, means.Positions)
            { MasksPerForward = 1, ErrorHandling = SaeErrorHandling.Remove };
        Assert.Equal(m[1], remove.Evaluate([all])[0]);
    }

    [Theory]
    [InlineData(AttributionMethod.AtP)]
    [InlineData(AttributionMethod.RelP)]
    public void FeatureAndErrorScoresSumToTheResidualScoreAtEachPosition(AttributionMethod method)
    {
        var model = Model.Value; var sae = Sae.Value;
        var task = Slice(Pronouns.Value, 0, 16);
        var options = new AttributionOptions { Method = method, Sites = [NodeSite.Resid] };
        var saeScores = SaeAttributor.Score(model, task, sae, NodeSite.Resid, Layer, options);
        var resid = Attributor.Score(model, task, options).Get(NodeSite.Resid, Layer);
        int d = model.Config.Dim, F = sae.Features;
        double worst = 0;
        for (int p = 0; p < saeScores.Positions; p++)
        {
            double want = 0, scale = 0, got = saeScores.ErrorScores[p];
            for (int j = 0; j < d; j++) { want += resid[p * d + j]; scale += Math.Abs(resid[p * d + j]); }
            for (int i = 0; i < F; i++) { got += saeScores.FeatureScores[p * F + i]; scale += Math.Abs(saeScores.FeatureScores[p * F + i]); }
            scale += Math.Abs(saeScores.ErrorScores[p]);
            double err = Math.Abs(got - want) / Math.Max(scale, 1e-9);
            worst = Math.Max(worst, err);
            Assert.True(err < 1e-5, $"position {p}: features + error {got} vs resid {want} (relative to Σ|terms| {err:E2})");
        }
        output.WriteLine($"{method}: max |Σ features + error − Σ resid| / Σ|terms| over {saeScores.Positions} positions = {worst:E2}; " +
                         $"position 0 error score {saeScores.ErrorScores[0]:F4}");
    }

    [Fact]
    public void AllNodesGiveFaithfulnessOneAndNoneGiveZero()
    {
        var model = Model.Value; var sae = Sae.Value;
        var train = Slice(Pronouns.Value, 0, 16);
        var eval = Slice(Pronouns.Value, 16, 16);
        var scores = SaeAttributor.Score(model, train, sae, NodeSite.Resid, Layer, new AttributionOptions { Method = AttributionMethod.RelP });
        var means = SaeSiteMeans.Compute(model, sae, NodeSite.Resid, Layer, eval.Pairs.Select(p => p.PatchIds!).ToList());
        var points = SaeCircuitSweep.Run(model, scores, sae, eval, means, [0, 10, scores.NodeCount]);
        foreach (var pt in points) output.WriteLine($"k {pt.K,5} of {pt.TotalNodes}: faithfulness {pt.Faithfulness:F4}, completeness {pt.Completeness:F4}");
        Assert.Equal(0.0, points[0].Faithfulness);
        Assert.Equal(1.0, points[2].Faithfulness);
        Assert.Equal(0.0, points[2].Completeness);
    }

    [Fact]
    public void NeuronVersusSaeCircuitSizesOnPronounGender()
    {
        var model = Model.Value; var sae = Sae.Value;
        foreach (var method in new[] { AttributionMethod.RelP, AttributionMethod.AtP })
        {
            var r = SaeCircuitComparison.Run(model, Pronouns.Value, sae, NodeSite.Resid, Layer, method);
            output.WriteLine(r.ToString());
            Assert.True(r.SaeK > 0 && r.NeuronK > 0, r.ToString());
            Assert.True(r.SaeFaithfulness >= 0.8 && r.NeuronFaithfulness >= 0.8);
        }
    }
}
