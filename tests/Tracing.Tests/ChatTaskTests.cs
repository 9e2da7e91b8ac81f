using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests;

/// <summary>Task lines with "messages" / "patch_messages": chat prompts rendered by the template, answers continuing the assistant turn.</summary>
public sealed class ChatTaskTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("chattask");
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // A byte-level tokenizer with no merges: id = byte; Llama 3's specials from 256 (begin 256, start_header 262,
    // end_header 263, eot 265).
    Llama3Tokenizer Bytes()
    {
        string f = Path.Combine(_dir, "tokenizer.model");
        File.WriteAllText(f, string.Concat(Enumerable.Range(0, 256).Select(b => $"{Convert.ToBase64String([(byte)b])} {b}\n")));
        return Llama3Tokenizer.LoadTiktoken(f);
    }

    static int[] B(string s) => System.Text.Encoding.UTF8.GetBytes(s).Select(b => (int)b).ToArray();

    string Task(params string[] lines)
    {
        string p = Path.Combine(_dir, "task.jsonl");
        File.WriteAllLines(p, lines);
        return p;
    }

    [Fact]
    public void MessagesLinesTokenizeThroughTheTemplate()
    {
        var tok = Bytes();
        string path = Task("""{"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A:"}], "patch_messages": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A:"}], "clean_answer": "x", "patch_answer": "y"}""");
        var t = PromptTask.Load(path, tok, encoder: new PromptEncoder(tok, template: ChatTemplate.Llama3));
        int[] Prompt(string q) => [256, 262, .. B("user"), 263, 10, 10, .. B(q), 265, 262, .. B("assistant"), 263, 10, 10, .. B("A:")];
        var p = Assert.Single(t.Pairs);
        Assert.Equal(Prompt("Q1"), p.CleanIds);
        Assert.Equal(Prompt("Q2"), p.PatchIds);
        Assert.Equal(('x', (int?)'y'), ((char)p.CleanAnswer, p.PatchAnswer));
    }

    [Fact]
    public void SpecialTokenTextInAPrefixWarnsOnceUnlessParsed()
    {
        var tok = Bytes();
        string path = Task("""{"clean_prefix": "<|begin_of_text|>ab", "patch_prefix": "cd", "clean_answer": "x", "patch_answer": "y"}""");
        var warnings = new List<string>();
        var plain = PromptTask.Load(path, tok, requireEqualLengths: false, encoder: new PromptEncoder(tok, warn: warnings.Add));
        Assert.Equal([256, .. B("<|begin_of_text|>ab")], plain.Pairs[0].CleanIds);
        Assert.Equal(["line 1: clean_prefix contains special-token text \"<|begin_of_text|>\", encoded as plain text (pass --special-tokens to parse it as the special token)"], warnings);
        var parsed = PromptTask.Load(path, tok, encoder: new PromptEncoder(tok, parseSpecialTokens: true, warn: warnings.Add));
        Assert.Equal([256, .. B("ab")], parsed.Pairs[0].CleanIds); // the written BOS is the BOS: not doubled
        Assert.Single(warnings);
    }

    [Fact]
    public void MessagesBesideAPrefixOrMalformedAreOneLineErrors()
    {
        var tok = Bytes();
        string Fail(string line)
        {
            var e = Assert.Throws<ModelFormatException>(() => PromptTask.Load(Task(line), tok));
            Assert.DoesNotContain('\n', e.Message);
            return e.Message;
        }
        Assert.Contains("line 1: give either \"messages\" or \"clean_prefix\", not both",
            Fail("""{"messages": [{"role": "user", "content": "Q"}], "clean_prefix": "Q", "clean_answer": "x"}"""));
        Assert.Contains("line 1: messages[0] is not an object with string fields \"role\" and \"content\"",
            Fail("""{"messages": [{"role": "user"}], "clean_answer": "x"}"""));
        Assert.Contains("line 1: messages is not a non-empty list", Fail("""{"messages": [], "clean_answer": "x"}"""));
        Assert.Contains("line 1: messages: chat message role \"bot\" is not system, user or assistant",
            Fail("""{"messages": [{"role": "bot", "content": "Q"}], "clean_answer": "x"}"""));
    }
}
