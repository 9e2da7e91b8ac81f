using NeuronTrace.Model;
namespace NeuronTrace.Formats.Tokenizers;

/// <summary>Finds and loads the tokenizer that sits beside a model.</summary>
internal static class TokenizerFiles
{
    /// <summary>
    /// Loads, in this order, <c>tokenizer.json</c> (Hugging Face BPE: byte-level like Llama 3, or SentencePiece-style
    /// like Llama 2), <c>tokenizer.model</c> (a SentencePiece protobuf or a Llama 3 tiktoken rank file, told apart by
    /// content), then llama2.c's <c>tok512.bin</c> or <c>tokenizer.bin</c>. Returns null when the folder has none.
    /// </summary>
    /// <exception cref="ModelFormatException">the file found is unreadable, corrupt or of an unsupported kind</exception>
    public static ITextTokenizer? LoadFromFolder(string dir) => FindInFolder(dir) is { } file ? Load(file) : null;

    /// <summary>The tokenizer file <see cref="LoadFromFolder"/> would load, or null when the folder has none.</summary>
    public static string? FindInFolder(string dir) =>
        ((string[])["tokenizer.json", "tokenizer.model", "tok512.bin", "tokenizer.bin"])
            .Select(name => Path.Combine(dir, name))
            .FirstOrDefault(File.Exists);

    /// <summary>Loads one tokenizer file, its kind told by its name (and, for tokenizer.model, its content).</summary>
    /// <exception cref="ModelFormatException">the file is unreadable, corrupt or of an unsupported kind</exception>
    public static ITextTokenizer Load(string file) => Path.GetFileName(file) switch
    {
        "tokenizer.json" => HfTokenizerJson.Load(file),
        "tokenizer.model" => IsTiktokenRankFile(file) ? Llama3Tokenizer.LoadTiktoken(file) : SentencePieceBpeTokenizer.LoadModel(file),
        _ => Llama2cTokenizer.Load(file),
    };

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
            using var f = InputFiles.OpenRead(path);
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
