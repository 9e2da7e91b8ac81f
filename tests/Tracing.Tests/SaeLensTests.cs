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

/// <summary>
/// SAEs in the SAELens layout (tests/fixtures/make_saelens.py): the Llama Scope fixture folded into SAELens form gives
/// the same features; ReLU and TopK variants match the script's SAELens-semantics encodes; hook names map to sites.
/// </summary>
public class SaeLensTests(ITestOutputHelper output)
{
    static string Dir(string name) => Path.Combine(RepoPaths.Fixtures, "sae", name);

    static (float[] X, int Rows, float[] LlamaScopeFeatures) ReferenceInputs()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Fixtures, "sae", "reference.json")));
        var bin = File.ReadAllBytes(Path.Combine(RepoPaths.Fixtures, "sae", "reference.f32"));
        float[] Array(string name)
        {
            var a = doc.RootElement.GetProperty("arrays").EnumerateArray().First(e => e.GetProperty("name").GetString() == name);
            int n = a.GetProperty("shape").EnumerateArray().Aggregate(1, (p, s) => p * s.GetInt32());
            return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bin.AsSpan(a.GetProperty("offset").GetInt32(), 4 * n)).ToArray();
        }
        var x = Array("x");
        return (x, x.Length / 64, Array("features"));
    }

    [Fact]
    public void SaeLensFoldOfTheLlamaScopeFixtureGivesTheSameFeatures()
    {
        var lens = SparseAutoencoder.Load(Dir("saelens_jumprelu"));
        var scope = SparseAutoencoder.Load(Dir("resid_2"));
        Assert.Equal(("saelens", "llama-scope"), (lens.Layout, scope.Layout));
        Assert.Equal((SaeActivation.JumpReLU, 64, 256), (lens.Activation, lens.DModel, lens.Features));
        Assert.False(lens.DecoderBiasBeforeEncoder);
        var (x, rows, reference) = ReferenceInputs();
        double worstVsScope = 0, worstVsRef = 0, worstRecon = 0, reconScale = 0;
        int active = 0;
        for (int r = 0; r < rows; r++)
        {
            var xr = x.AsSpan(r * 64, 64);
            var fl = lens.Encode(xr);
            var fs = scope.Encode(xr);
            for (int i = 0; i < 256; i++)
            {
                Assert.True((fl[i] != 0) == (fs[i] != 0), $"row {r} feature {i}: SAELens {fl[i]} vs Llama Scope {fs[i]}");
                if (fl[i] != 0) active++;
                worstVsScope = Math.Max(worstVsScope, Math.Abs(fl[i] - fs[i]) / Math.Max(Math.Abs(fs[i]), 1e-3));
                worstVsRef = Math.Max(worstVsRef, Math.Abs(fl[i] - reference[r * 256 + i]) / Math.Max(Math.Abs(reference[r * 256 + i]), 1e-3));
            }
            var xl = lens.Decode(fl); var xs = scope.Decode(fs);
            // Folding s_out into W_dec and b_dec rounds them to float32 again: compare against the vector's scale.
            for (int j = 0; j < 64; j++) { worstRecon = Math.Max(worstRecon, Math.Abs(xl[j] - xs[j])); reconScale = Math.Max(reconScale, Math.Abs(xs[j])); }
        }
        output.WriteLine($"{rows} inputs, {active} active: max relative difference SAELens vs Llama Scope {worstVsScope:E2}, vs PyTorch reference {worstVsRef:E2}, reconstruction max |difference| / max |x̂| {worstRecon / reconScale:E2}");
        Assert.True(active > 100);
        Assert.True(worstVsScope < 1e-5 && worstVsRef < 1e-5 && worstRecon < 1e-5 * reconScale);
    }

    [Theory]
    [InlineData("saelens_jumprelu", nameof(SaeActivation.JumpReLU), 0)]
    [InlineData("saelens_relu", nameof(SaeActivation.ReLU), 0)]
    [InlineData("saelens_topk", nameof(SaeActivation.TopK), 8)]
    public void FeaturesMatchTheScriptsSaeLensEncode(string name, string activationName, int k) // by name: SaeActivation is internal
    {
        var activation = Enum.Parse<SaeActivation>(activationName);
        var sae = SparseAutoencoder.Load(Dir(name));
        Assert.Equal((activation, k), (sae.Activation, sae.TopK));
        Assert.Equal(name == "saelens_relu", sae.DecoderBiasBeforeEncoder);
        Assert.Equal("blocks.2.hook_resid_post", sae.HookName);
        Assert.Equal((NodeSite.Resid, 2), sae.HookSite);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Fixtures, "sae", "saelens_reference.json")));
        var want = doc.RootElement.GetProperty("features").GetProperty(name).EnumerateArray()
            .Select(row => row.EnumerateArray().Select(v => v.GetSingle()).ToArray()).ToArray();
        var (x, rows, _) = ReferenceInputs();
        Assert.Equal(rows, want.Length);
        double worst = 0;
        for (int r = 0; r < rows; r++)
        {
            var f = sae.Encode(x.AsSpan(r * 64, 64));
            if (k > 0) Assert.Equal(k, f.Count(v => v != 0));
            for (int i = 0; i < 256; i++)
            {
                Assert.True((f[i] != 0) == (want[r][i] != 0), $"row {r} feature {i}: {f[i]} vs SAELens {want[r][i]}");
                worst = Math.Max(worst, Math.Abs(f[i] - want[r][i]) / Math.Max(Math.Abs(want[r][i]), 1e-3));
            }
        }
        output.WriteLine($"{name}: max relative difference {worst:E2}");
        Assert.True(worst < 1e-5);
    }

    [Fact]
    public void ScoresOfTheFoldedSaeEqualTheLlamaScopeOnes()
    {
        var loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
        var model = new Llama(loaded.Weights, CpuBackend.Instance);
        var task = PromptTask.Load(Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl"), loaded.RequireTokenizer()).Take(6);
        var options = new AttributionOptions { Method = AttributionMethod.AtP };
        var lens = SparseAutoencoder.Load(Dir("saelens_jumprelu"));
        var (site, layer) = lens.HookSite;
        var a = SaeAttributor.Score(model, task, lens, site, layer, options).Flat();
        var b = SaeAttributor.Score(model, task, SparseAutoencoder.Load(Dir("resid_2")), NodeSite.Resid, 2, options).Flat();
        double scale = b.Max(Math.Abs), worst = a.Zip(b).Max(p => Math.Abs(p.First - p.Second));
        output.WriteLine($"{a.Length} nodes, max |score| {scale:E3}, max |difference| {worst:E2}");
        Assert.True(scale > 0 && worst <= 1e-4 * scale);
    }

    [Theory]
    [InlineData("blocks.3.hook_resid_post", NodeSite.Resid, 3)]
    [InlineData("blocks.3.hook_resid_pre", NodeSite.Resid, 2)]
    [InlineData("blocks.0.hook_attn_out", NodeSite.Attn, 0)]
    [InlineData("blocks.1.attn.hook_z", NodeSite.AttnZ, 1)]
    [InlineData("blocks.4.hook_mlp_out", NodeSite.MlpOut, 4)]
    [InlineData("blocks.4.mlp.hook_post", NodeSite.MlpAct, 4)]
    public void HookNamesMapToSites(string hook, NodeSite site, int layer)
    {
        Assert.Equal((site, layer), SaeHookPoint.Parse(hook, "cfg.json"));
        if (hook.Contains("resid_pre")) return;
        Assert.Equal(hook, SaeHookPoint.Name(site, layer));
    }

    [Theory]
    [InlineData("blocks.0.hook_resid_pre")]
    [InlineData("blocks.2.hook_resid_mid")]
    [InlineData("hook_embed")]
    [InlineData("model.layers.2")]
    public void HooksWithoutASiteAreRefused(string hook)
    {
        var e = Assert.Throws<ModelFormatException>(() => SaeHookPoint.Parse(hook, "cfg.json"));
        Assert.Contains($"hook point \"{hook}\" has no NeuronTrace site", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void BadConfigsAreOneLineErrors()
    {
        var tmp = Directory.CreateTempSubdirectory("saelens").FullName;
        try
        {
            File.Copy(Path.Combine(Dir("saelens_topk"), "sae_weights.safetensors"), Path.Combine(tmp, "sae_weights.safetensors"));
            var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(Dir("saelens_topk"), "cfg.json")))!.AsObject();
            string Fail(Action<JsonObject> edit)
            {
                var c = cfg.DeepClone().AsObject();
                edit(c);
                File.WriteAllText(Path.Combine(tmp, "cfg.json"), c.ToJsonString());
                var e = Assert.Throws<ModelFormatException>(() => SparseAutoencoder.Load(tmp));
                Assert.DoesNotContain('\n', e.Message);
                output.WriteLine(e.Message);
                return e.Message;
            }
            Assert.Contains("architecture \"gated\" is not supported", Fail(c => c["architecture"] = "gated"));
            Assert.Contains("normalize_activations \"layer_norm\" is not supported", Fail(c => c["normalize_activations"] = "layer_norm"));
            Assert.Contains("topk k 0 must be in [1, d_sae 256]", Fail(c => c["k"] = 0));
            Assert.Contains("tensor W_enc has shape [64, 256] but cfg.json (d_in 64, d_sae 128) needs [64, 128]", Fail(c => c["d_sae"] = 128));
            Assert.Contains("tensor threshold is missing", Fail(c => c["architecture"] = "jumprelu"));
            var mid = cfg.DeepClone().AsObject();
            ((JsonObject)mid["metadata"]!)["hook_name"] = "blocks.2.hook_resid_mid";
            File.WriteAllText(Path.Combine(tmp, "cfg.json"), mid.ToJsonString());
            Assert.Contains("hook point \"blocks.2.hook_resid_mid\" has no NeuronTrace site", Assert.Throws<ModelFormatException>(() => SparseAutoencoder.Load(tmp).HookSite).Message);
            File.Delete(Path.Combine(tmp, "sae_weights.safetensors"));
            Assert.Contains("SAE weights not found", Fail(_ => { }));
        }
        finally { Directory.Delete(tmp, recursive: true); }
    }
}
