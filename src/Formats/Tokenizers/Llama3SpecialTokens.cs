namespace NeuronTrace.Formats.Tokenizers;

/// <summary>
/// The 256 special tokens that follow Llama 3's 128,000 ranks (they are not in the rank file), as in Meta's
/// <c>llama/tokenizer.py</c>, with Llama 3.1's names for 128008 (<c>&lt;|eom_id|&gt;</c>) and 128010
/// (<c>&lt;|python_tag|&gt;</c>); the other reserved slots keep Llama 3's <c>&lt;|reserved_special_token_N|&gt;</c> names.
/// </summary>
internal static class Llama3SpecialTokens
{
    public const string BeginOfText = "<|begin_of_text|>";
    public const string EndOfText = "<|end_of_text|>";
    public const string StartHeader = "<|start_header_id|>";
    public const string EndHeader = "<|end_header_id|>";
    public const string EndOfMessage = "<|eom_id|>";
    public const string EndOfTurn = "<|eot_id|>";
    public const string PythonTag = "<|python_tag|>";

    public const int Count = 256;

    /// <summary>Special token names in id order, starting at <paramref name="firstId"/> (128000 for Llama 3).</summary>
    public static IReadOnlyDictionary<string, int> Create(int firstId)
    {
        string[] names = new string[Count];
        names[0] = BeginOfText;
        names[1] = EndOfText;
        for (int i = 2; i <= 5; i++) names[i] = Reserved(i - 2);
        names[6] = StartHeader;
        names[7] = EndHeader;
        names[8] = EndOfMessage;
        names[9] = EndOfTurn;
        names[10] = PythonTag;
        for (int i = 11; i < Count; i++) names[i] = Reserved(i - 5); // Meta numbers the reserved slots after 128010 from 6
        var ids = new Dictionary<string, int>(Count, StringComparer.Ordinal);
        for (int i = 0; i < Count; i++) ids.Add(names[i], firstId + i);
        return ids;
    }

    static string Reserved(int n) => $"<|reserved_special_token_{n}|>";
}
