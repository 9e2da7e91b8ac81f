using Xunit;
using System.Text.Json;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Formats.Tests;

/// <summary>One test vector: a text and its expected ids.</summary>
public sealed record TokenizerCase(string Text, int[] Ids);

/// <summary>Reads the tokenizer test vectors: the bundled golden file and the ../shared Llama files.</summary>
public static class TokenizerCases
{
    /// <summary>golden/stories260K/tokenizer_cases.json: ids include BOS.</summary>
    public static IReadOnlyList<TokenizerCase> Golden { get; } = ReadGolden();

    /// <summary>../shared/tokenizers/llama2 or llama3: the model file and its cases (ids without BOS), or null in a plain clone.</summary>
    public static (string ModelPath, IReadOnlyList<TokenizerCase> Cases)? Shared(string llama)
    {
        if (RepoPaths.Shared is not { } shared) return null;
        string dir = Path.Combine(shared, "tokenizers", llama);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "cases.json")));
        var cases = doc.RootElement.EnumerateArray().Select(Read).ToList();
        return (Path.Combine(dir, "tokenizer.model"), cases);
    }

    /// <summary>Compares ids and names the first mismatch, with the text and both id lists.</summary>
    public static void AssertIds(TokenizerCase expected, int[] actual, string what = "")
    {
        if (expected.Ids.SequenceEqual(actual)) return;
        int i = 0;
        while (i < expected.Ids.Length && i < actual.Length && expected.Ids[i] == actual[i]) i++;
        Assert.Fail($"{what}text {JsonSerializer.Serialize(expected.Text)}: first mismatch at index {i}\n" +
                    $"  expected [{string.Join(' ', expected.Ids)}]\n  actual   [{string.Join(' ', actual)}]");
    }

    static IReadOnlyList<TokenizerCase> ReadGolden()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Golden, "tokenizer_cases.json")));
        return doc.RootElement.GetProperty("cases").EnumerateArray().Select(Read).ToList();
    }

    static TokenizerCase Read(JsonElement e) =>
        new(e.GetProperty("text").GetString()!, e.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray());
}
