using System.Text;
using System.Text.Json;
using NeuronTrace.TestSupport;
using Xunit;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tests;

/// <summary>
/// Cross-checks the tokenizer.json path against the Llama 3 cases: the test converts Meta's rank file into a
/// byte-level tokenizer.json (as Hugging Face's converter does) and loads that.
/// </summary>
public class Llama3HfJsonTests
{
    static readonly Lazy<(Llama3Tokenizer Json, Llama3Tokenizer Tiktoken, IReadOnlyList<TokenizerCase> Cases)?> Converted = new(() =>
    {
        if (TokenizerCases.Shared("llama3") is not { } s) return null;
        string dir = RepoPaths.TempDir("llama3json");
        string json = Path.Combine(dir, "tokenizer.json");
        WriteTokenizerJson(s.ModelPath, json);
        var fromJson = Llama3Tokenizer.LoadHfJson(json);
        Directory.Delete(dir, recursive: true); // 6 MB, and it derives from Meta's file: keep no copy
        return (fromJson, Llama3Tokenizer.LoadTiktoken(s.ModelPath), s.Cases);
    });

    public static TheoryData<int> Llama3Indexes => new(Enumerable.Range(0, 71));

    [Theory]
    [MemberData(nameof(Llama3Indexes))]
    public void ConvertedTokenizerJsonEncodesLlama3Case(int index)
    {
        if (Converted.Value is not { } c) return; // plain clone without ../shared
        var test = c.Cases[index];
        TokenizerCases.AssertIds(test, c.Json.Encode(test.Text, addBos: false), "Llama 3 tokenizer.json: ");
        Assert.Equal(test.Text, c.Json.Decode(test.Ids));
    }

    [Fact]
    public void ConvertedTokenizerJsonAgreesOnTheChatPrompt()
    {
        if (Converted.Value is not { } c) return;
        string prompt = ChatTemplate.Llama31("What is the capital of the state containing Dallas?", "Answer:");
        Assert.Equal(c.Tiktoken.EncodeWithSpecialTokens(prompt), c.Json.EncodeWithSpecialTokens(prompt));
        Assert.Equal(c.Tiktoken.VocabSize, c.Json.VocabSize);
        Assert.Equal((c.Tiktoken.BosId, c.Tiktoken.EosId, c.Tiktoken.EotId), (c.Json.BosId, c.Json.EosId, c.Json.EotId));
    }

    /// <summary>
    /// Vocab = the ranks with each byte spelled by GPT-2's table; a token's merge is the two parts that tiktoken's
    /// own merging, allowed only lower ranks, leaves of it; merges are listed in rank order.
    /// </summary>
    static void WriteTokenizerJson(string rankFile, string outPath)
    {
        var tokens = new List<string>(); // bytes as Latin-1 chars, so that strings compare as byte strings
        var ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string line in File.ReadLines(rankFile))
        {
            if (line.Length == 0) continue;
            string[] f = line.Split(' ');
            string token = Encoding.Latin1.GetString(Convert.FromBase64String(f[0]));
            ranks[token] = int.Parse(f[1]);
            tokens.Add(token);
        }

        using var stream = File.Create(outPath);
        using var w = new Utf8JsonWriter(stream);
        w.WriteStartObject();
        w.WriteString("version", "1.0");
        w.WriteStartArray("added_tokens");
        foreach (var (name, id) in Llama3SpecialTokens.Create(ranks.Count).OrderBy(kv => kv.Value))
        {
            w.WriteStartObject();
            w.WriteNumber("id", id);
            w.WriteString("content", name);
            w.WriteBoolean("special", true);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteNull("normalizer");
        w.WritePropertyName("pre_tokenizer");
        JsonSerializer.Serialize(w, TinyTokenizerFiles.Llama3PreTokenizer());
        w.WriteStartObject("model");
        w.WriteString("type", "BPE");
        w.WriteBoolean("ignore_merges", true);
        w.WriteStartObject("vocab");
        foreach (string token in tokens) w.WriteNumber(Spell(token), ranks[token]);
        w.WriteEndObject();
        w.WriteStartArray("merges");
        foreach (string token in tokens.Where(t => t.Length > 1).OrderBy(t => ranks[t]))
        {
            var parts = SplitByLowerRanks(token, ranks[token], ranks);
            if (parts.Count != 2) continue;
            w.WriteStartArray();
            w.WriteStringValue(Spell(parts[0]));
            w.WriteStringValue(Spell(parts[1]));
            w.WriteEndArray();
        }
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteEndObject();
    }

    static List<string> SplitByLowerRanks(string token, int maxRank, Dictionary<string, int> ranks)
    {
        var parts = token.Select(c => c.ToString()).ToList();
        while (true)
        {
            int best = -1, bestRank = maxRank;
            for (int i = 0; i + 1 < parts.Count; i++)
                if (ranks.TryGetValue(parts[i] + parts[i + 1], out int r) && r < bestRank) (best, bestRank) = (i, r);
            if (best < 0) return parts;
            parts[best] += parts[best + 1];
            parts.RemoveAt(best + 1);
        }
    }

    static string Spell(string latin1) => string.Concat(latin1.Select(c => TinyTokenizerFiles.ByteChar(c)));
}
