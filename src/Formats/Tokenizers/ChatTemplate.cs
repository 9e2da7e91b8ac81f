namespace NeuronTrace.Formats.Tokenizers;

/// <summary>Chat prompt texts; encode them with <see cref="Llama3Tokenizer.EncodeWithSpecialTokens"/>.</summary>
public static class ChatTemplate
{
    /// <summary>
    /// The Llama 3.1 chat prompt as the method uses it (docs/method.md §8.2): a system block (empty when
    /// <paramref name="systemMessage"/> is null, without the "Cutting Knowledge Date" lines), the user turn, then the
    /// assistant header followed by <paramref name="assistantPrefix"/> with no closing <c>&lt;|eot_id|&gt;</c>, so the
    /// model continues the assistant's answer.
    /// </summary>
    public static string Llama31(string userMessage, string assistantPrefix, string? systemMessage = null) =>
        $"{Llama3SpecialTokens.BeginOfText}{Header("system")}{systemMessage}{Llama3SpecialTokens.EndOfTurn}" +
        $"{Header("user")}{userMessage}{Llama3SpecialTokens.EndOfTurn}" +
        $"{Header("assistant")}{assistantPrefix}";

    static string Header(string role) => $"{Llama3SpecialTokens.StartHeader}{role}{Llama3SpecialTokens.EndHeader}\n\n";
}
