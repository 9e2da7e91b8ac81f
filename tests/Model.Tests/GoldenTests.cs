using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using Xunit.Abstractions;
using NeuronTrace.Formats;

namespace NeuronTrace.Model.Tests;

/// <summary>The forward pass against upstream llama2.c's golden numbers, for every model format we load.</summary>
public class GoldenTests(ITestOutputHelper output)
{
    static readonly JsonElement Golden = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Golden, "golden.json"))).RootElement;

    public static TheoryData<string> Formats => new() { "bin", "gguf", "hf" };

    static string ModelPath(string format) => format switch
    {
        "bin" => RepoPaths.Stories260KBin,
        "gguf" => RepoPaths.Stories260KGguf,
        "hf" => HfCopy.Value,
        _ => throw new ArgumentException(format),
    };

    // The HF folder the tests use is written by our converter from the .bin (Q/K permuted for rotate_half).
    static readonly Lazy<string> HfCopy = new(() =>
    {
        string dir = Path.Combine(RepoPaths.TempDir("hf"), "stories260K-hf");
        HfFolderWriter.Write(Llama2cBinFormat.Load(RepoPaths.Stories260KBin), dir, RepoPaths.Tok512);
        return dir;
    });

    [Theory]
    [MemberData(nameof(Formats))]
    public void LogitsOfEveryGoldenPromptMatchUpstream(string format)
    {
        var loaded = ModelLoader.Load(ModelPath(format));
        Assert.Equal(format == "hf" ? RopeLayout.RotateHalf : RopeLayout.Interleaved, loaded.Config.RopeLayout);
        using var model = new Llama(loaded.Weights, CpuBackend.Instance);
        var prompts = Golden.GetProperty("prompts").EnumerateArray().ToList();
        // All prompts in one right-padded batch: padding must not change any real position.
        var ids = prompts.Select(p => p.GetProperty("tokens").EnumerateArray().Select(x => x.GetInt32()).ToArray()).ToList();
        var batch = new TokenBatch(ids);
        using var pass = model.Forward(batch, LogitRows.All);
        var logits = pass.HostLogits();
        int v = loaded.Config.VocabSize;
        double worst = 0;
        for (int b = 0; b < prompts.Count; b++)
        {
            var expected = ReadF32(Path.Combine(RepoPaths.Golden, prompts[b].GetProperty("logits_file").GetString()!));
            Assert.Equal(ids[b].Length * v, expected.Length);
            for (int t = 0; t < ids[b].Length; t++)
                for (int i = 0; i < v; i++)
                {
                    double err = Math.Abs(logits[(b * batch.SeqLen + t) * v + i] - expected[t * v + i]);
                    worst = Math.Max(worst, err);
                    Assert.True(err <= 1e-4, $"{format} prompt {b} pos {t} id {i}: {logits[(b * batch.SeqLen + t) * v + i]} vs {expected[t * v + i]}");
                }
            // Tokenizer of this format agrees with the golden ids.
            string text = prompts[b].GetProperty("prompt").GetString()!;
            Assert.Equal(ids[b], loaded.RequireTokenizer().Encode(text, addBos: true));
        }
        output.WriteLine($"{format}: max |logit - golden| = {worst:E2}");
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void GreedyContinuationsEqualUpstream(string format)
    {
        var loaded = ModelLoader.Load(ModelPath(format));
        using var model = new Llama(loaded.Weights, CpuBackend.Instance);
        foreach (var p in Golden.GetProperty("prompts").EnumerateArray())
        {
            var g = p.GetProperty("greedy");
            var prompt = p.GetProperty("tokens").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            var ids = GreedyGenerator.Generate(model, prompt, g.GetProperty("steps").GetInt32());
            Assert.Equal(g.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()), ids);
            Assert.Equal(g.GetProperty("text").GetString(), TextOf(loaded, ids));
        }
    }

    [Fact]
    public void TheDefault256StepStoryEqualsUpstream()
    {
        var loaded = ModelLoader.Load();
        using var model = new Llama(loaded.Weights, CpuBackend.Instance);
        var story = Golden.GetProperty("default_story");
        var ids = GreedyGenerator.Generate(model, loaded.RequireTokenizer().Encode(story.GetProperty("prompt").GetString()!, addBos: true),
            story.GetProperty("steps").GetInt32());
        Assert.Equal(story.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()), ids);
        Assert.Equal(story.GetProperty("text").GetString(), TextOf(loaded, ids));
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void TaskLogitDifferencesEqualUpstreamOnEveryLine(string format)
    {
        var loaded = ModelLoader.Load(ModelPath(format));
        using var model = new Llama(loaded.Weights, CpuBackend.Instance);
        var tasks = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Golden, "tasks_logit_diffs.json"))).RootElement.GetProperty("tasks");
        int v = loaded.Config.VocabSize, n = 0;
        double worst = 0;
        foreach (var task in tasks.EnumerateObject())
        {
            var lines = task.Value.GetProperty("lines").EnumerateArray().ToList();
            foreach (var side in new[] { "clean", "patch" })
            {
                var batch = new TokenBatch(lines.Select(l => l.GetProperty(side + "_ids").EnumerateArray().Select(x => x.GetInt32()).ToArray()).ToList());
                using var pass = model.Forward(batch, LogitRows.Last);
                var logits = pass.HostLogits();
                for (int b = 0; b < lines.Count; b++)
                {
                    int c = lines[b].GetProperty("clean_answer_id").GetInt32(), p = lines[b].GetProperty("patch_answer_id").GetInt32();
                    double ld = side == "clean" ? logits[b * v + c] - logits[b * v + p] : logits[b * v + p] - logits[b * v + c];
                    double expected = lines[b].GetProperty(side + "_ld").GetDouble();
                    worst = Math.Max(worst, Math.Abs(ld - expected));
                    Assert.True(Math.Abs(ld - expected) <= 2e-4, $"{format} {task.Name} line {b} {side}: {ld} vs {expected}");
                    n++;
                }
            }
        }
        output.WriteLine($"{format}: {n} logit differences, max error {worst:E2}");
    }

    static string TextOf(LoadedModel m, List<int> ids)
    {
        var tok = m.RequireTokenizer();
        var sb = new System.Text.StringBuilder();
        for (int i = 1; i < ids.Count; i++) sb.Append(tok.Decode(ids[i - 1], ids[i]));
        return sb.ToString();
    }

    static float[] ReadF32(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var f = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, f, 0, bytes.Length);
        return f;
    }
}
