using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Formats.Tokenizers;

/// <summary>One chat message: a role (system, user, assistant, …) and its text.</summary>
internal sealed record ChatMessage(string Role, string Content);

/// <summary>A piece of a rendered chat prompt: text to tokenize, or the name of a special token the template writes.</summary>
internal readonly record struct ChatSegment(string Text, bool IsSpecial);

/// <summary>
/// The chat templates NeuronTrace renders itself (no Jinja engine): the Llama 3 family's header/turn framing in three
/// forms. Rendering keeps the template's own special tokens apart from the message text (<see cref="ChatSegment"/>), so
/// text a user wrote that looks like <c>&lt;|eot_id|&gt;</c> stays text unless asked otherwise (<see cref="PromptEncoder"/>).
/// A final assistant message is left open (no closing <c>&lt;|eot_id|&gt;</c>) so the model continues it, as the method's
/// "Answer:" seed needs (docs/method.md §8.2); otherwise the assistant header is added (the generation prompt).
/// </summary>
internal sealed class ChatTemplate
{
    ChatTemplate(string name, bool dateLines, bool systemBlockAlways) { Name = name; _dateLines = dateLines; _systemBlockAlways = systemBlockAlways; }

    readonly bool _dateLines, _systemBlockAlways;
    public string Name { get; }

    /// <summary>
    /// Meta's published Llama 3.1 Instruct template (tokenizer_config.json of Llama-3.1-8B-Instruct, no tools): BOS, a
    /// system block always, opening with "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n", then each
    /// message as header + trimmed content + <c>&lt;|eot_id|&gt;</c>.
    /// </summary>
    public static ChatTemplate Llama31Published { get; } = new("llama3.1", dateLines: true, systemBlockAlways: true);

    /// <summary>The Llama 3.1 template without the date lines (circuit-tracer's stripped template; docs/method.md §8.2).</summary>
    public static ChatTemplate Llama31Stripped { get; } = new("llama3.1-stripped", dateLines: false, systemBlockAlways: true);

    /// <summary>Meta's Llama 3 Instruct template: BOS, then each message framed, no system block unless one is given.</summary>
    public static ChatTemplate Llama3 { get; } = new("llama3", dateLines: false, systemBlockAlways: false);

    public static IReadOnlyList<ChatTemplate> BuiltIn { get; } = [Llama31Published, Llama31Stripped, Llama3];

    /// <summary>A built-in template by name (llama3.1, llama3.1-stripped, llama3), or a one-line error listing them.</summary>
    public static ChatTemplate Named(string name) => BuiltIn.FirstOrDefault(t => t.Name == name)
        ?? throw new FormatException($"unknown chat template {ErrorText.Quote(name)} (built in: {string.Join(", ", BuiltIn.Select(t => t.Name))})");

    /// <summary>
    /// The template of a Hugging Face model folder: its <c>tokenizer_config.json</c> <c>chat_template</c>, recognised as
    /// one of the built-in forms by the framing it writes; null when the folder has no such file or template (the caller
    /// then uses <see cref="Llama31Published"/>). Jinja that is none of the built-in forms is refused in one line, since
    /// rendering it differently would silently change every score.
    /// </summary>
    /// <exception cref="ModelFormatException">the file is unreadable, or its template is not a supported form</exception>
    public static ChatTemplate? FromModelFolder(string dir)
    {
        string file = Path.Combine(dir, "tokenizer_config.json");
        if (!File.Exists(file)) return null;
        InputFiles.RequireRegular(file);
        string? jinja;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            if (!doc.RootElement.TryGetProperty("chat_template", out var t) || t.ValueKind == JsonValueKind.Null) return null;
            // A list of named templates (default, tool_use, …): the default one is the chat template.
            jinja = t.ValueKind == JsonValueKind.String ? t.GetString()
                : t.ValueKind == JsonValueKind.Array ? t.EnumerateArray().Where(e => e.ValueKind == JsonValueKind.Object
                    && e.TryGetProperty("name", out var n) && n.GetString() == "default").Select(e => e.GetProperty("template").GetString()).FirstOrDefault()
                : null;
        }
        catch (Exception e) when (e is JsonException or IOException or InvalidOperationException or KeyNotFoundException)
        {
            throw new ModelFormatException(file, $"cannot read chat_template ({e.Message.Split('\n')[0].Trim()})");
        }
        if (jinja is null) throw new ModelFormatException(file, "chat_template is neither a string nor a list holding a \"default\" template");
        return Recognise(jinja) ?? throw new ModelFormatException(file,
            $"chat_template is not a form NeuronTrace renders ({string.Join(", ", BuiltIn.Select(t => t.Name))}; it has no Jinja engine); its first line: {ErrorText.Quote(jinja.Split('\n')[0])}");
    }

    /// <summary>The built-in form a Jinja template is, told by the framing it writes; null for any other template.</summary>
    public static ChatTemplate? Recognise(string jinja)
    {
        bool frames = jinja.Contains("<|start_header_id|>") && jinja.Contains("<|end_header_id|>") && jinja.Contains("<|eot_id|>");
        if (!frames) return null;
        // Llama 3.1's default date is fixed; 3.2 and later take today's (strftime_now), which would make scores date-dependent.
        if (jinja.Contains("Cutting Knowledge Date"))
            return jinja.Contains("Cutting Knowledge Date: December 2023") && jinja.Contains("26 Jul 2024") && !jinja.Contains("strftime_now") ? Llama31Published : null;
        return jinja.Contains("bos_token") ? Llama3 : null;
    }

    /// <summary>
    /// The method's prompt (docs/method.md §8.2): an empty system block without the date lines, the user turn, and the
    /// assistant turn opened with <paramref name="assistantPrefix"/>. Special tokens appear as their names in the text;
    /// encode it with <see cref="Llama3Tokenizer.EncodeWithSpecialTokens"/>.
    /// </summary>
    public static string Llama31(string userMessage, string assistantPrefix, string? systemMessage = null)
    {
        var messages = new List<ChatMessage>();
        if (systemMessage is not null) messages.Add(new("system", systemMessage));
        messages.Add(new("user", userMessage));
        messages.Add(new("assistant", assistantPrefix));
        return string.Concat(Llama31Stripped.Render(messages, trim: false).Select(s => s.Text));
    }

    /// <summary>Renders messages as segments; contents are trimmed as the published templates do (<c>| trim</c>) unless <paramref name="trim"/> is false.</summary>
    public IReadOnlyList<ChatSegment> Render(IReadOnlyList<ChatMessage> messages, bool trim = true)
    {
        if (messages.Count == 0) throw new FormatException("a chat prompt needs at least one message");
        foreach (var m in messages)
            if (m.Role is not ("system" or "user" or "assistant"))
                throw new FormatException($"chat message role {ErrorText.Quote(m.Role)} is not system, user or assistant (tool turns are not supported)");
        string Content(string c) => trim ? c.Trim() : c;
        var s = new List<ChatSegment> { Special(Llama3SpecialTokens.BeginOfText) };
        int first = 0;
        if (_systemBlockAlways || messages[0].Role == "system")
        {
            Header(s, "system");
            if (_dateLines) Add(s, "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n");
            if (messages[0].Role == "system") { Add(s, Content(messages[0].Content)); first = 1; }
            s.Add(Special(Llama3SpecialTokens.EndOfTurn));
        }
        for (int i = first; i < messages.Count; i++)
        {
            if (messages[i].Role == "system") throw new FormatException("a system message may only come first");
            Header(s, messages[i].Role);
            Add(s, Content(messages[i].Content));
            bool openAnswer = i == messages.Count - 1 && messages[i].Role == "assistant";
            if (!openAnswer) s.Add(Special(Llama3SpecialTokens.EndOfTurn));
        }
        if (messages[^1].Role != "assistant") Header(s, "assistant");
        return s;
    }

    static void Header(List<ChatSegment> s, string role)
    {
        s.Add(Special(Llama3SpecialTokens.StartHeader));
        Add(s, role);
        s.Add(Special(Llama3SpecialTokens.EndHeader));
        Add(s, "\n\n");
    }

    // Adjacent text segments are merged, so "\n\n" + content is tokenized as one text, as the template's string would be.
    static void Add(List<ChatSegment> s, string text)
    {
        if (text.Length == 0) return;
        if (s.Count > 0 && !s[^1].IsSpecial) s[^1] = Text(s[^1].Text + text);
        else s.Add(Text(text));
    }

    static ChatSegment Special(string name) => new(name, true);
    static ChatSegment Text(string text) => new(text, false);
}
