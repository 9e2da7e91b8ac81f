using System.Text.Json;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Tasks;

/// <summary>The chat fields of a task line, <c>messages</c> and <c>patch_messages</c>, beside the plain-text prefixes.</summary>
static class ChatPrompts
{
    /// <summary>The line's messages lists (null where absent); a one-line error when one is malformed or given beside its text prefix.</summary>
    public static (IReadOnlyList<ChatMessage>? Clean, IReadOnlyList<ChatMessage>? Patch) Read(JsonElement line, string path, string where) =>
        (Field(line, "messages", "clean_prefix", path, where), Field(line, "patch_messages", "patch_prefix", path, where));

    static IReadOnlyList<ChatMessage>? Field(JsonElement line, string key, string textKey, string path, string where)
    {
        if (!line.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (line.TryGetProperty(textKey, out var t) && t.ValueKind != JsonValueKind.Null)
            throw new ModelFormatException(path, $"{where}: give either {ErrorText.Quote(key)} or {ErrorText.Quote(textKey)}, not both");
        try { return PromptEncoder.ParseMessages(v, $"{where}: {key}"); }
        catch (FormatException e) { throw new ModelFormatException(path, e.Message); }
    }

    /// <summary>Ids of a prompt plus <paramref name="answer"/>: the chat rendering when there are messages, else the text prefix.</summary>
    public static int[] Encode(PromptEncoder encoder, IReadOnlyList<ChatMessage>? messages, string prefix, string answer, string path, string where)
    {
        try { return messages is null ? encoder.EncodeText(prefix + answer, where) : encoder.EncodeChat(messages, where, answer); }
        catch (FormatException e) { throw new ModelFormatException(path, e.Message.StartsWith(where) ? e.Message : $"{where}: {e.Message}"); }
    }
}
