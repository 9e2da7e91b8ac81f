using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// <c>attribute</c> and <c>trace</c> plan from the model's header before a weight byte is read: a GGUF whose every tensor
/// byte is 0xFF (NaN; header and tokenizer intact) is refused with the memory line when it cannot fit, and with the
/// format error of its data when it can (so the refusal came first). When it fits, the scores are those of the library
/// on the fully loaded model; the batch the plan chose is printed, and a lowered batch gives the library's scores at it.
/// </summary>
[Collection("console")]
public sealed class PlanBeforeLoadTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("plan-before-load");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>The bundled GGUF with its tensor data overwritten by 0xFF: it describes as the original and loads as nothing.</summary>
    string ScrambledGguf() => ScrambledGguf(_dir);

    /// <summary>As <see cref="ScrambledGguf()"/>, written into <paramref name="dir"/> (also the SAE and shard plan tests').</summary>
    internal static string ScrambledGguf(string dir)
    {
        string path = Path.Combine(dir, "scrambled.gguf");
        File.Copy(RepoPaths.Stories260KGguf, path);
        long dataOffset;
        using (var g = GgufFile.Open(path)) dataOffset = g.DataOffset;
        using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        var ones = new byte[fs.Length - dataOffset];
        Array.Fill(ones, (byte)0xFF);
        fs.Position = dataOffset;
        fs.Write(ones);
        return path;
    }

    /// <summary>The CLI in a child process whose GC sees <paramref name="heapLimit"/> bytes (what the CPU plan compares with).</summary>
    internal static (int Exit, string Out, string Err) RunLimited(long heapLimit, params string[] args)
    {
        string config = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
        string cli = Path.Combine(RepoPaths.Root, "src", "Cli", "bin", config, "net10.0", "neurontrace.dll");
        Assert.True(File.Exists(cli), cli);
        var psi = new ProcessStartInfo("dotnet", [cli, .. args]) { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.Environment["DOTNET_GCHeapHardLimit"] = "0x" + heapLimit.ToString("x", CultureInfo.InvariantCulture);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string err = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), "the CLI did not exit");
        return (p.ExitCode, stdout.Result, err);
    }

    [Theory]
    [InlineData("attribute")]
    [InlineData("trace")]
    public void A_run_that_cannot_fit_is_refused_before_the_weights_are_read(string command)
    {
        string model = ScrambledGguf();
        string outDir = Path.Combine(_dir, "out");
        // 48 MiB: under the plan's 64 MiB runtime allowance alone, so no batch fits even checkpointed.
        var r = RunLimited(48L << 20, command, "--model", model, "--task", "gender_name", "--sites", "mlp_act", "--out", outDir);
        string[] lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith("model ", StringComparison.Ordinal)).ToArray();
        Assert.True(r.Exit != 0 && lines.Length == 1, $"exit {r.Exit}: {r.Err}");
        Assert.Contains("this run needs about", lines[0]);
        Assert.Contains("but 48 MiB is available", lines[0]);
        Assert.DoesNotContain("non-finite", r.Err);
        Assert.False(Directory.Exists(outDir));

        // The same file where the run fits: now the weights are read, and their data refused.
        var fits = CliHarness.Run(command, "--model", model, "--task", "gender_name", "--sites", "mlp_act", "--out", outDir);
        Assert.NotEqual(0, fits.Exit);
        Assert.Contains("non-finite", fits.Err);
        Assert.DoesNotContain("this run needs about", fits.Err);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void A_fitting_run_prints_its_batch_and_writes_the_scores_of_the_loaded_model()
    {
        string outDir = Path.Combine(_dir, "fits");
        var r = CliHarness.Run("attribute", "--model", RepoPaths.Stories260KGguf, "--task", "gender_name", "--sites", "mlp_act,attn", "--out", outDir);
        Assert.True(r.Exit == 0, r.Err);
        var (task, model) = Library();
        using var _ = model;
        Assert.Contains($"{task.Count} examples, relp (batch {Math.Min(32, task.Count)}: memory plan), ", r.Out);
        Assert.DoesNotContain("memory plan", r.Err);
        AssertScores(outDir, Attributor.Score(model, task, Options(32)));
    }

    [Fact]
    public void A_batch_the_plan_lowers_gives_the_library_scores_at_that_batch()
    {
        // 80 MiB: batch 32 does not fit the plan, a smaller one does (the plan is 64 MiB runtime plus a few MiB).
        string outDir = Path.Combine(_dir, "lowered");
        var r = RunLimited(80L << 20, "attribute", "--model", RepoPaths.Stories260KGguf, "--task", "gender_name", "--sites", "mlp_act,attn", "--out", outDir);
        Assert.True(r.Exit == 0, r.Err);
        var m = Regex.Match(r.Err, @"memory plan: batch (\d+) × \d+ tokens \(batch 32 does not fit\)");
        Assert.True(m.Success, r.Err);
        int batch = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.InRange(batch, 1, 31);
        var (task, model) = Library();
        using var _ = model;
        AssertScores(outDir, Attributor.Score(model, task, Options(batch)));

        // A --batch given is kept (the layers checkpointed where that is what fits it) or refused, never lowered. 84 MiB:
        // checkpointed, batch 32 needs a little over 80 (the backward's compact scratch, BackwardRows, adds ~1.5 MiB).
        var pinned = RunLimited(84L << 20, "attribute", "--model", RepoPaths.Stories260KGguf, "--task", "gender_name", "--sites", "mlp_act,attn",
            "--batch", "32", "--out", Path.Combine(_dir, "pinned"));
        Assert.True(pinned.Exit == 0, pinned.Err);
        Assert.Contains("memory plan: batch 32 × ", pinned.Err);
        Assert.Contains("activation checkpointing", pinned.Err);
        // Checkpointed scores agree with the library's to float rounding (seen: 1 ulp at a few nodes, not bit-identical).
        AssertScores(Path.Combine(_dir, "pinned"), Attributor.Score(model, task, Options(32)), relative: 1e-5);
        var refused = RunLimited(72L << 20, "attribute", "--model", RepoPaths.Stories260KGguf, "--task", "gender_name", "--sites", "mlp_act,attn",
            "--batch", "32", "--out", Path.Combine(_dir, "refused"));
        Assert.True(refused.Exit != 0, refused.Err);
        Assert.Matches(@"^neurontrace: error: --batch 32: this run needs about .* but 72 MiB is available; use --batch \d+ or less\n$", refused.Err);
        Assert.False(Directory.Exists(Path.Combine(_dir, "refused")));
    }

    [Fact]
    public void The_facade_reads_the_weights_at_the_first_call_that_needs_them()
    {
        // Open and LoadTask read the header and tokenizer only: the scrambled file opens and tokenises as the original.
        using var scrambled = TracedModel.Open(ScrambledGguf());
        using var original = TracedModel.Open(RepoPaths.Stories260KGguf);
        Assert.Equal(original.Config, scrambled.Config);
        var task = scrambled.LoadTask("gender_name", mostCommonLength: false);
        Assert.Equal(original.LoadTask("gender_name", mostCommonLength: false).Pairs.Select(p => p.CleanIds), task.Pairs.Select(p => p.CleanIds));
        // Attribute plans (it fits), then reads the weights, and refuses their data.
        var e = Assert.Throws<ModelFormatException>(() => scrambled.Attribute(task, AttributionMethod.RelP, [NodeSite.MlpAct]));
        Assert.Contains("non-finite", e.Message);
        // The original's facade scores are the library's on the loaded model.
        var (libraryTask, model) = Library();
        using var _ = model;
        var expected = Attributor.Score(model, libraryTask, Options(32) with { Sites = [NodeSite.MlpAct] });
        var got = original.Attribute(task, AttributionMethod.RelP, [NodeSite.MlpAct], new AttributionOptions { Metric = Metric.TowardsPatch });
        for (int l = 0; l < model.Config.Layers; l++) Assert.Equal(expected.Get(NodeSite.MlpAct, l), got.Get(NodeSite.MlpAct, l));
    }

    static AttributionOptions Options(int batch) =>
        new() { Method = AttributionMethod.RelP, Sites = [NodeSite.MlpAct, NodeSite.Attn], Metric = Metric.TowardsPatch, BatchSize = batch };

    /// <summary>The old order: every weight read first, then the task tokenised with the loaded model's encoder.</summary>
    static (PromptTask Task, Llama Model) Library()
    {
        var loaded = ModelLoader.Load(RepoPaths.Stories260KGguf);
        var task = PromptTask.Load(Path.Combine(RepoPaths.Tasks, "gender_name.jsonl"), loaded.RequireTokenizer(),
            encoder: Formats.Tokenizers.PromptEncoder.ForModel(loaded), maxTokens: loaded.Config.MaxSeqLen);
        return (task, new Llama(loaded.Weights, CpuBackend.Instance));
    }

    /// <summary>The scores folder holds <paramref name="expected"/>: exactly, or within <paramref name="relative"/> of each array's largest |score|.</summary>
    static void AssertScores(string dir, NodeScores expected, double relative = 0)
    {
        var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "scores.json"))).RootElement;
        var bytes = File.ReadAllBytes(Path.Combine(dir, "scores.f32"));
        int arrays = 0;
        foreach (var a in index.GetProperty("arrays").EnumerateArray())
        {
            var want = expected.Get(NodeSites.ParseList(a.GetProperty("site").GetString()!)[0], a.GetProperty("layer").GetInt32());
            var got = new float[want.Length];
            Buffer.BlockCopy(bytes, (int)a.GetProperty("offset_bytes").GetInt64(), got, 0, got.Length * 4);
            if (relative == 0) Assert.Equal(want, got);
            else
            {
                double scale = want.Max(MathF.Abs), worst = want.Zip(got, (w, g) => Math.Abs(w - g)).Max();
                Assert.True(worst <= relative * scale, $"{a.GetProperty("site").GetString()} L{a.GetProperty("layer").GetInt32()}: |Δ| {worst:G3} > {relative} × {scale:G3}");
            }
            arrays++;
        }
        Assert.True(arrays > 0);
    }
}
