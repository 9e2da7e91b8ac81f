using NeuronTrace.Formats;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// Tasks built through the facade, from files and in memory, tokenize as the CLI tokenizes them: chat prompts with the
/// model folder's own chat template. The model: stories260K written as a Hugging Face folder with a byte-level Llama 3
/// tokenizer (id = byte, the 256 specials from 256: the model's vocabulary of 512) and Llama 3's (not 3.1's) template.
/// </summary>
public sealed class TracedModelTaskTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("facade-chat");
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    string ChatModel()
    {
        string tokenizer = Path.Combine(_dir, "tokenizer.model");
        File.WriteAllText(tokenizer, string.Concat(Enumerable.Range(0, 256).Select(b => $"{Convert.ToBase64String([(byte)b])} {b}\n")));
        string folder = Path.Combine(_dir, "model");
        HfFolderWriter.Write(ModelLoader.Load(RepoPaths.Stories260KBin).Weights, folder, tokenizer);
        // The identifying framing of Meta's Llama 3 template (ChatTemplate.Recognise): headers, eot, bos_token once.
        const string llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}";
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), System.Text.Json.JsonSerializer.Serialize(new { chat_template = llama3 }));
        return folder;
    }

    static int[] B(string s) => System.Text.Encoding.UTF8.GetBytes(s).Select(b => (int)b).ToArray();

    // Llama 3's rendering, by hand: begin 256, start_header 262, end_header 263, eot 265; the assistant turn left open.
    static int[] Prompt(string question) => [256, 262, .. B("user"), 263, 10, 10, .. B(question), 265, 262, .. B("assistant"), 263, 10, 10, .. B("A:")];

    [Fact]
    public void ChatTasksInMemoryAndFromAFileUseTheModelFoldersTemplate()
    {
        using var model = TracedModel.Open(ChatModel());
        Assert.Equal("hf", model.Format);
        var memory = model.CreateChatTask("chat", [([("user", "Q1"), ("assistant", "A:")], "x", [("user", "Q2"), ("assistant", "A:")], "y")]);
        var pair = Assert.Single(memory.Pairs);
        Assert.Equal(Prompt("Q1"), pair.CleanIds);
        Assert.Equal(Prompt("Q2"), pair.PatchIds);
        Assert.Equal(('x', (int?)'y'), ((char)pair.CleanAnswer, pair.PatchAnswer));

        string file = Path.Combine(_dir, "chat.jsonl");
        File.WriteAllText(file, """{"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A:"}], "patch_messages": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A:"}], "clean_answer": "x", "patch_answer": "y"}""" + "\n");
        var loaded = Assert.Single(model.LoadTask(file, mostCommonLength: false).Pairs);
        AssertSamePair(pair, loaded);

        // The CLI reads the same file to the same prompts: its attribution of that one line equals the facade's.
        string scores = Path.Combine(_dir, "scores");
        var r = CliHarness.Run("attribute", "--model", Path.Combine(_dir, "model"), "--task", file, "--sites", "mlp_act", "--quiet", "--out", scores);
        Assert.True(r.Exit == 0, r.Err);
        var facade = model.Attribute(memory, sites: [Model.NodeSite.MlpAct]).Top(Model.NodeSite.MlpAct, 5);
        var cli = File.ReadAllLines(Path.Combine(scores, "scores.csv")).Skip(1).Select(l => l.Split(',')).ToDictionary(f => f[0], f => f[^1]);
        foreach (var (node, score) in facade)
            Assert.Equal(score, float.Parse(cli[node.ToString()], System.Globalization.CultureInfo.InvariantCulture));
    }

    static void AssertSamePair(Tracing.Tasks.PromptPair want, Tracing.Tasks.PromptPair got)
    {
        Assert.Equal(want.CleanIds, got.CleanIds);
        Assert.Equal(want.PatchIds, got.PatchIds);
        Assert.Equal((want.CleanAnswer, want.PatchAnswer), (got.CleanAnswer, got.PatchAnswer));
    }

    [Fact]
    public void PromptPairsInMemoryAreTheTaskFileOfTheSameLines()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var file = model.LoadTask(Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl"), mostCommonLength: false);
        var lines = File.ReadAllLines(Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl")).Take(6).Select(l =>
        {
            using var d = System.Text.Json.JsonDocument.Parse(l);
            string F(string k) => d.RootElement.GetProperty(k).GetString()!;
            return (F("clean_prefix"), F("clean_answer"), F("patch_prefix"), F("patch_answer"));
        }).ToList();
        var memory = model.CreateTask("six", lines);
        Assert.Equal(6, memory.Count);
        for (int i = 0; i < 6; i++)
        {
            AssertSamePair(file.Pairs[i], memory.Pairs[i]);
        }
    }

    [Fact]
    public void AttributeAndTraceObserveCancellationAtTheirFirstStep()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var task = model.LoadTask("pronoun_gender").Take(4);
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.Throws<OperationCanceledException>(() => model.Attribute(task, sites: [Model.NodeSite.MlpAct], cancellation: cancelled.Token));
        Assert.Throws<OperationCanceledException>(() => model.Trace(task, new Tracing.Pipeline.TraceOptions { Sites = [Model.NodeSite.MlpAct], KPoints = 3 },
            cancellation: cancelled.Token));
    }
}
