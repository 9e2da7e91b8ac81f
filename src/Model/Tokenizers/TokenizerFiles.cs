namespace NeuronTrace.Model.Tokenizers;

/// <summary>Finds and loads the tokenizer that sits beside a model.</summary>
public static class TokenizerFiles
{
    /// <summary>
    /// Loads, in this order, <c>tokenizer.json</c> (Hugging Face BPE: byte-level like Llama 3, or SentencePiece-style
    /// like Llama 2), <c>tokenizer.model</c> (a SentencePiece protobuf or a Llama 3 tiktoken rank file, told apart by
    /// content), then llama2.c's <c>tok512.bin</c> or <c>tokenizer.bin</c>. Returns null when the folder has none.
    /// </summary>
    /// <exception cref="ModelFormatException">the file found is unreadable, corrupt or of an unsupported kind</exception>
    public static ITextTokenizer? LoadFromFolder(string dir)
    {
        string json = Path.Combine(dir, "tokenizer.json");
        if (File.Exists(json)) return HfTokenizerJson.Load(json);

        string model = Path.Combine(dir, "tokenizer.model");
        if (File.Exists(model))
            return IsTiktokenRankFile(model) ? Llama3Tokenizer.LoadTiktoken(model) : SentencePieceBpeTokenizer.LoadModel(model);

        foreach (string name in (string[])["tok512.bin", "tokenizer.bin"])
        {
            string bin = Path.Combine(dir, name);
            if (File.Exists(bin)) return Llama2cTokenizer.Load(bin);
        }
        return null;
    }

    /// <summary>
    /// A tiktoken rank file starts with a text line "base64 rank"; a SentencePiece model is a protobuf, whose first
    /// byte is a field key (0x0A for its first piece), never a base64 character.
    /// </summary>
    internal static bool IsTiktokenRankFile(string path)
    {
        Span<byte> head = stackalloc byte[256];
        int n;
        try
        {
            using var f = File.OpenRead(path);
            n = f.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFormatException(path, $"cannot read: {e.Message}");
        }
        int i = 0;
        while (i < n && (char.IsAsciiLetterOrDigit((char)head[i]) || head[i] is (byte)'+' or (byte)'/' or (byte)'=')) i++;
        if (i == 0 || i >= n || head[i] != ' ') return false;
        int digits = ++i;
        while (i < n && char.IsAsciiDigit((char)head[i])) i++;
        return i > digits && (i == n || head[i] is (byte)'\n' or (byte)'\r');
    }
}
