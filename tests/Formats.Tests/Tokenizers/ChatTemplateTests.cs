using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Formats.Tests;

/// <summary>
/// Chat prompts: rendering the Llama 3 family templates, encoding them (template specials as ids, message text as text),
/// BOS once, special-token text only with --special-tokens, the warning otherwise, and tokenizer_config.json templates.
/// </summary>
public sealed class ChatTemplateTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("chat");
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // The tiny rank file of TinyTokenizerFiles: ids 0..255 are the bytes, 256 "he", 257 "ll"; Llama 3's specials from 258
    // (begin_of_text 258, start_header 264, end_header 265, eot 267).
    Llama3Tokenizer Tiny()
    {
        string f = Path.Combine(_dir, "tokenizer.model");
        File.WriteAllText(f, TinyTokenizerFiles.TiktokenRanks());
        return Llama3Tokenizer.LoadTiktoken(f);
    }

    static readonly Lazy<Llama3Tokenizer?> Meta = new(() =>
        TokenizerCases.Shared("llama3") is { } s ? Llama3Tokenizer.LoadTiktoken(s.ModelPath) : null);

    static int[] Bytes(string s) => System.Text.Encoding.UTF8.GetBytes(s).Select(b => (int)b).ToArray();

    [Fact]
    public void PublishedLlama31TemplateRendersMetasFraming()
    {
        var text = string.Concat(ChatTemplate.Llama31Published.Render([new("system", " Be brief. "), new("user", "Hello\n")]).Select(s => s.Text));
        Assert.Equal("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
            "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", text);
        // No system message: the block is still written, with the date lines only; a final assistant turn stays open.
        text = string.Concat(ChatTemplate.Llama31Published.Render([new("user", "Q"), new("assistant", "Answer:")]).Select(s => s.Text));
        Assert.Equal("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
            "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nAnswer:", text);
        // Llama 3: no system block unless given.
        text = string.Concat(ChatTemplate.Llama3.Render([new("user", "Q")]).Select(s => s.Text));
        Assert.Equal("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", text);
    }

    [Fact]
    public void TinyTokenizerEncodesTemplateSpecialsAsIdsAndTextAsBytes()
    {
        var enc = new PromptEncoder(Tiny(), template: ChatTemplate.Llama3);
        int[] want = [258, 264, .. Bytes("user"), 265, 10, 10, .. Bytes("Q"), 267, 264, .. Bytes("assistant"), 265, 10, 10, .. Bytes("Answer:")];
        Assert.Equal(want, enc.EncodeChat([new("user", "Q"), new("assistant", "Answer:")], "test"));
        Assert.Equal([.. want, .. Bytes(" A")], enc.EncodeChat([new("user", "Q"), new("assistant", "Answer:")], "test", " A"));
    }

    [Fact]
    public void Llama31ChatEncodesToMetasIds()
    {
        if (Meta.Value is not { } tok) { Console.WriteLine("SKIPPED Llama31ChatEncodesToMetasIds: ../shared/tokenizers/llama3 is absent (plain clone)"); return; }
        // Written out by hand from the published template: specials 128000 begin_of_text, 128006/128007 header, 128009
        // eot (Meta's test_tokenizer.py pins them); "system" 9125, "user" 882, "assistant" 78191, "\n\n" 271 (also pinned
        // there), the date lines "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" and "Hello".
        int[] dateLines = [38766, 1303, 33025, 2696, 25, 6790, 220, 2366, 18, 198, 15724, 2696, 25, 220, 1627, 10263, 220, 2366, 19, 271];
        int[] want = [128000, 128006, 9125, 128007, 271, .. dateLines, 128009, 128006, 882, 128007, 271, 9906, 128009, 128006, 78191, 128007, 271];
        var ids = new PromptEncoder(tok).EncodeChat([new("user", "Hello")], "test");
        Assert.Equal(want, ids);
        Assert.Single(ids, 128000);
    }

    [Fact]
    public void BosIsNeverDoubled()
    {
        var tok = Tiny();
        Assert.Equal([258, .. Bytes("Hi")], new PromptEncoder(tok, parseSpecialTokens: true).EncodeText("<|begin_of_text|>Hi", "p"));
        Assert.Equal([258, .. Bytes("Hi"), 267], new PromptEncoder(tok, parseSpecialTokens: true).EncodeText("Hi<|eot_id|>", "p"));
        var chat = new PromptEncoder(tok, parseSpecialTokens: true).EncodeChat([new("user", "Hi")], "p");
        Assert.Equal(1, chat.Count(i => i == 258));
        Assert.Equal(258, chat[0]);
    }

    [Fact]
    public void SpecialTokenTextWithoutTheFlagIsPlainTextWithOneWarning()
    {
        var tok = Tiny();
        var warnings = new List<string>();
        var enc = new PromptEncoder(tok, warn: warnings.Add);
        var ids = enc.EncodeText("Hi<|eot_id|>", "line 1: clean_prefix");
        Assert.Equal([258, .. Bytes("Hi<|eot_id|>")], ids);
        Assert.DoesNotContain(267, ids);
        enc.EncodeText("Hi<|eot_id|>!", "line 1: clean_prefix"); // the same field again: no second warning
        Assert.Equal(["line 1: clean_prefix contains special-token text \"<|eot_id|>\", encoded as plain text (pass --special-tokens to parse it as the special token)"], warnings);

        // In a message: the text stays text, the template's own specials are ids; with the flag, it is the token.
        var chat = enc.EncodeChat([new("user", "a<|eot_id|>b")], "line 2: messages");
        Assert.Equal(2, warnings.Count);
        Assert.Equal(2, chat.Count(i => i == 267)); // the system block's and the user turn's; the message's text is bytes
        var parsed = new PromptEncoder(tok, parseSpecialTokens: true, warn: warnings.Add).EncodeChat([new("user", "a<|eot_id|>b")], "line 2: messages");
        Assert.Equal(3, parsed.Count(i => i == 267));
        Assert.Equal(2, warnings.Count);
        // Clean text: no warning.
        enc.EncodeText("Hello", "line 3: clean_prefix");
        Assert.Equal(2, warnings.Count);
    }

    [Fact]
    public void TokenizerConfigTemplatesAreRecognisedOrRefusedInOneLine()
    {
        Assert.Null(ChatTemplate.FromModelFolder(_dir));
        string file = Path.Combine(_dir, "tokenizer_config.json");
        // The identifying lines of Meta's Llama 3.1 template (bos_token, header framing, fixed date).
        const string llama31 = "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}" +
            "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}" +
            "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}{{- system_message }}{{- \"<|eot_id|>\" }}";
        File.WriteAllText(file, System.Text.Json.JsonSerializer.Serialize(new { chat_template = llama31 }));
        Assert.Same(ChatTemplate.Llama31Published, ChatTemplate.FromModelFolder(_dir));
        const string llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}";
        File.WriteAllText(file, System.Text.Json.JsonSerializer.Serialize(new { chat_template = new[] { new { name = "default", template = llama3 } } }));
        Assert.Same(ChatTemplate.Llama3, ChatTemplate.FromModelFolder(_dir));

        foreach (var other in new[] { "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}", llama31.Replace("\"26 Jul 2024\"", "strftime_now(\"%d %b %Y\")") })
        {
            File.WriteAllText(file, System.Text.Json.JsonSerializer.Serialize(new { chat_template = other }));
            var e = Assert.Throws<ModelFormatException>(() => ChatTemplate.FromModelFolder(_dir));
            Assert.Contains("chat_template is not a form NeuronTrace renders (llama3.1, llama3.1-stripped, llama3; it has no Jinja engine)", e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
    }

    [Fact]
    public void MethodPromptIsUnchanged()
    {
        // docs/method.md §8.2, as ChatTemplate.Llama31 wrote it before chat messages existed.
        Assert.Equal("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n Q <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nAnswer:",
            ChatTemplate.Llama31(" Q ", "Answer:"));
    }

    [Fact]
    public void BadMessagesAreOneLineErrors()
    {
        var enc = new PromptEncoder(Tiny());
        Assert.Contains("role \"robot\" is not system, user or assistant", Assert.Throws<FormatException>(() => enc.EncodeChat([new("robot", "x")], "p")).Message);
        Assert.Contains("a system message may only come first", Assert.Throws<FormatException>(() => enc.EncodeChat([new("user", "x"), new("system", "y")], "p")).Message);
        var l2c = new PromptEncoder(Llama2cTokenizer.Load(RepoPaths.Tok512, 512));
        Assert.Contains("chat messages need a tokenizer with Llama 3 special tokens", Assert.Throws<FormatException>(() => l2c.EncodeChat([new("user", "x")], "p")).Message);
    }
}
