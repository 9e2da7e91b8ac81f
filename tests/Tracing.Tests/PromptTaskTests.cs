using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests;

public class PromptTaskTests
{
    [Fact]
    public void MostCommonLengthKeepsOnlyThatLength()
    {
        var pairs = new[] { 3, 5, 5, 4, 5, 4 }.Select((n, i) => new PromptPair(i + 1, new int[n], new int[n], 1, 2)).ToList();
        var kept = new PromptTask("t", pairs).OfMostCommonLength();
        Assert.Equal([2, 3, 5], kept.Pairs.Select(p => p.Line));
        // Ties go to the longer length.
        var tie = new PromptTask("t", pairs.Take(4).ToList()).OfMostCommonLength();
        Assert.All(tie.Pairs, p => Assert.Equal(5, p.CleanIds.Length));
    }

    [Fact]
    public void LinesReadFromMemoryGiveTheSameTaskAsTheFile()
    {
        var tok = ModelLoader.Load(RepoPaths.Stories260KBin).RequireTokenizer();
        string path = BundledFiles.Find("data", "tasks", "pronoun_gender.jsonl");
        var fromFile = PromptTask.Load(path, tok);
        var fromMemory = PromptTask.Read(new StringReader(File.ReadAllText(path)), "in memory", tok);
        Assert.Equal(fromFile.Count, fromMemory.Count);
        for (int i = 0; i < fromFile.Count; i++)
        {
            var (a, b) = (fromFile.Pairs[i], fromMemory.Pairs[i]);
            Assert.Equal(a.Line, b.Line);
            Assert.Equal(a.CleanIds, b.CleanIds);
            Assert.Equal(a.PatchIds, b.PatchIds);
            Assert.Equal((a.CleanAnswer, a.PatchAnswer), (b.CleanAnswer, b.PatchAnswer));
        }
        // Errors name the source the lines came from.
        var e = Assert.Throws<ModelFormatException>(() => PromptTask.Read(new StringReader("{\"clean_prefix\": 3}"), "in memory", tok));
        Assert.Contains("in memory", e.Message);
    }

    [Fact]
    public void APairWhoseAnswersAreTheSameTokenIsRefused()
    {
        var loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
        string path = Path.Combine(RepoPaths.TempDir("same"), "t.jsonl");
        File.WriteAllText(path, "{\"clean_prefix\": \"Mia found a ball.\", \"patch_prefix\": \"Max found a ball.\", \"clean_answer\": \" She\", \"patch_answer\": \" He\"}\n" +
                                "{\"clean_prefix\": \"Mia found a ball.\", \"patch_prefix\": \"Max found a ball.\", \"clean_answer\": \" She\", \"patch_answer\": \" She\"}\n");
        var e = Assert.Throws<ModelFormatException>(() => PromptTask.Load(path, loaded.RequireTokenizer()));
        Assert.Contains("line 2", e.Message);
        Assert.Contains("same token", e.Message);
    }

    [Theory]
    [InlineData(0, 0.8)]
    [InlineData(6, 0.8)]
    [InlineData(null, 0.0)]
    [InlineData(null, 1.5)]
    [InlineData(null, double.NaN)]
    public void TraceRefusesTrainingSplitsAndTargetsOutOfRange(int? train, double target)
    {
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 2), CpuBackend.Instance);
        var task = RandomTasks.Pairs(6, model.Config.VocabSize, seed: 1);
        Assert.Throws<ArgumentException>(() => TraceJob.Run(model, task, new TraceOptions { TrainExamples = train, TargetFaithfulness = target }));
    }
}
