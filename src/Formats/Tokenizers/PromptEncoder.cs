using System.Text.Json;
using System.Text.RegularExpressions;
using NeuronTrace.Runtime;

namespace NeuronTrace.Formats.Tokenizers;

/// <summary>
/// Turns prompts into ids the one way every command shares: plain text gets BOS prepended; chat messages are rendered
/// with a <see cref="ChatTemplate"/> whose own special tokens become their ids (its BOS included, so BOS is never doubled).
/// Special-token text a user wrote (<c>&lt;|eot_id|&gt;</c> in a prefix or a message) is parsed as the special token
/// only with <see cref="ParseSpecialTokens"/> (<c>--special-tokens</c>); otherwise it is tokenized as plain text and
/// <see cref="Warn"/> is told once per prompt field, since a chat prompt pasted as text silently changes every score.
/// </summary>
internal sealed class PromptEncoder(ITextTokenizer tokenizer, bool parseSpecialTokens = false, ChatTemplate? template = null, Action<string>? warn = null)
{
    public ITextTokenizer Tokenizer { get; } = tokenizer;
    public bool ParseSpecialTokens { get; } = parseSpecialTokens;
    /// <summary>The template chat messages are rendered with (the model's, else Llama 3.1's published one).</summary>
    public ChatTemplate Template { get; } = template ?? ChatTemplate.Llama31Published;
    public Action<string>? Warn { get; } = warn;

    /// <summary>The encoder every reader of a model's prompts uses: its folder's tokenizer_config.json chat template where
    /// present (Hugging Face folders), else Llama 3.1's.</summary>
    /// <param name="model">The loaded model (its tokenizer, and its folder for the template).</param>
    /// <param name="parseSpecialTokens">Whether special-token text in prompts is parsed as the special tokens (<c>--special-tokens</c>).</param>
    /// <param name="warn">Told once per prompt field about special-token text read as plain text; null: not told.</param>
    /// <exception cref="NeuronTrace.Model.ModelFormatException">The model has no tokenizer, or its chat template is unreadable.</exception>
    public static PromptEncoder ForModel(LoadedModel model, bool parseSpecialTokens = false, Action<string>? warn = null) =>
        ForModel(model.Description, parseSpecialTokens, warn);

    /// <summary>The same encoder from the model's description alone (<see cref="ModelLoader.Describe"/>: tokenizer, format
    /// and folder), so a task is tokenised, and its run planned, before any weight is read.</summary>
    /// <param name="model">The described model.</param>
    /// <param name="parseSpecialTokens">Whether special-token text in prompts is parsed as the special tokens (<c>--special-tokens</c>).</param>
    /// <param name="warn">Told once per prompt field about special-token text read as plain text; null: not told.</param>
    /// <exception cref="NeuronTrace.Model.ModelFormatException">The model has no tokenizer, or its chat template is unreadable.</exception>
    public static PromptEncoder ForModel(ModelDescription model, bool parseSpecialTokens = false, Action<string>? warn = null) =>
        new(model.RequireTokenizer(), parseSpecialTokens, model.Format == "hf" ? ChatTemplate.FromModelFolder(model.Path) : null, warn);
    readonly HashSet<string> _warned = [];

    void WarnOnce(string where, string message)
    {
        if (Warn is not null && _warned.Add(where)) Warn(message);
    }

    /// <summary>Encodes plain text with BOS first (once: with <see cref="ParseSpecialTokens"/>, a leading <c>&lt;|begin_of_text|&gt;</c> is that BOS).</summary>
    /// <param name="text">The text to encode.</param>
    /// <param name="where">What the text is, for the warning ("line 3: clean_prefix").</param>
    public int[] EncodeText(string text, string where)
    {
        if (!ParseSpecialTokens)
        {
            if (Specials() is { } sp && FindSpecial(text, sp) is { } found)
                WarnOnce(where, $"{where} contains special-token text {ErrorText.Quote(found)}, encoded as plain text (pass --special-tokens to parse it as the special token)");
            return Tokenizer.Encode(text, addBos: true);
        }
        var ids = EncodeSpecial(text);
        return ids.Length > 0 && ids[0] == Tokenizer.BosId ? ids : [Tokenizer.BosId, .. ids];
    }

    /// <summary>
    /// Renders and encodes chat messages; <paramref name="answer"/> is appended to the final text (the open assistant
    /// turn), so that <c>EncodeChat(m, a)</c> minus <c>EncodeChat(m)</c> is the answer's tokens.
    /// </summary>
    public int[] EncodeChat(IReadOnlyList<ChatMessage> messages, string where, string answer = "")
    {
        var specials = Specials() ?? throw new FormatException($"{where}: chat messages need a tokenizer with Llama 3 special tokens (<|start_header_id|>, <|eot_id|>); this model's has none");
        var segments = Template.Render(messages).ToList();
        if (answer.Length > 0)
        {
            if (segments[^1].IsSpecial) segments.Add(new ChatSegment(answer, false));
            else segments[^1] = new ChatSegment(segments[^1].Text + answer, false);
        }
        var ids = new List<int>();
        foreach (var s in segments)
        {
            if (s.IsSpecial) { ids.Add(specials[s.Text]); continue; }
            if (ParseSpecialTokens) { ids.AddRange(EncodeSpecial(s.Text)); continue; }
            if (FindSpecial(s.Text, specials) is { } found)
                WarnOnce(where, $"{where}: a message contains special-token text {ErrorText.Quote(found)}, encoded as plain text (pass --special-tokens to parse it as the special token)");
            ids.AddRange(Tokenizer.Encode(s.Text, addBos: false));
        }
        return ids.ToArray();
    }

    /// <summary>
    /// Reads a JSON messages list, <c>[{"role": "user", "content": "..."}, ...]</c>; a one-line error naming
    /// <paramref name="where"/> when it is not one.
    /// </summary>
    public static IReadOnlyList<ChatMessage> ParseMessages(JsonElement list, string where)
    {
        if (list.ValueKind != JsonValueKind.Array || list.GetArrayLength() == 0)
            throw new FormatException($"{where} is not a non-empty list of {{\"role\", \"content\"}} messages");
        var result = new List<ChatMessage>();
        int i = 0;
        foreach (var m in list.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object || !m.TryGetProperty("role", out var r) || r.ValueKind != JsonValueKind.String
                || !m.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String)
                throw new FormatException($"{where}[{i}] is not an object with string fields \"role\" and \"content\"");
            result.Add(new ChatMessage(r.GetString()!, c.GetString()!));
            i++;
        }
        return result;
    }

    /// <summary>Whether a <c>--prompt</c> value is a JSON messages list (it starts with <c>[</c> and <c>{</c>).</summary>
    public static bool LooksLikeMessages(string prompt) => Regex.IsMatch(prompt, @"^\s*\[\s*\{");

    IReadOnlyDictionary<string, int>? Specials() => Tokenizer is Llama3Tokenizer l && l.SpecialTokens.Count > 0 ? l.SpecialTokens : null;

    int[] EncodeSpecial(string text) => Tokenizer is Llama3Tokenizer l ? l.EncodeWithSpecialTokens(text) : Tokenizer.Encode(text, addBos: false);

    static string? FindSpecial(string text, IReadOnlyDictionary<string, int> specials)
    {
        if (!text.Contains("<|")) return null;
        foreach (var name in specials.Keys)
            if (text.Contains(name, StringComparison.Ordinal)) return name;
        return null;
    }
}
