using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Formats.Tokenizers;

/// <summary>
/// Reads a Hugging Face <c>tokenizer.json</c> whose model is BPE. Byte-level ones (Llama 3) become a
/// <see cref="Llama3Tokenizer"/>; SentencePiece-style ones (Llama 2: U+2581 pieces, byte fallback) become a
/// <see cref="SentencePieceBpeTokenizer"/> whose scores follow the merge order.
/// </summary>
internal static class HfTokenizerJson
{
    /// <summary>GPT-2's pre-tokenizer regex, which a ByteLevel pre-tokenizer with <c>use_regex</c> applies.</summary>
    const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    public static ITextTokenizer Load(string path)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(InputFiles.ReadAllBytes(path)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            throw new ModelFormatException(path, $"cannot read tokenizer.json: {e.Message.ReplaceLineEndings(" ")}");
        }
        using (doc)
        {
            JsonStrings.RequireValid(doc.RootElement, path);
            try { return Build(path, doc.RootElement); }
            catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException or ArgumentException)
            {
                throw new ModelFormatException(path, $"malformed tokenizer.json: {e.Message.ReplaceLineEndings(" ")}");
            }
        }
    }

    static ITextTokenizer Build(string path, JsonElement root)
    {
        JsonElement model = Field(path, root, "model", "the top level");
        string type = model.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "";
        if (type != "BPE") throw new ModelFormatException(path, $"model type '{type}' is not supported; only BPE");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in Field(path, model, "vocab", "model").EnumerateObject()) vocab[entry.Name] = entry.Value.GetInt32();
        var merges = ReadMerges(model);
        var added = new Dictionary<string, (int Id, bool Special)>(StringComparer.Ordinal);
        if (root.TryGetProperty("added_tokens", out var addedTokens))
            foreach (var a in addedTokens.EnumerateArray())
                added[Field(path, a, "content", "an added_tokens entry").GetString()!] = (Field(path, a, "id", "an added_tokens entry").GetInt32(), a.TryGetProperty("special", out var s) && s.GetBoolean());

        bool byteFallback = model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True;
        bool sentencePieceStyle = byteFallback || (vocab.Keys.Any(k => k.Contains('\u2581')) && !vocab.ContainsKey("\u0120"));
        return sentencePieceStyle
            ? BuildSentencePiece(path, vocab, merges, added)
            : BuildByteLevel(path, root, model, vocab, merges, added);
    }

    /// <summary>Merges are "left right" strings (older files) or [left, right] arrays (newer ones).</summary>
    static List<(string Left, string Right)> ReadMerges(JsonElement model)
    {
        var merges = new List<(string, string)>();
        if (!model.TryGetProperty("merges", out var list)) return merges;
        foreach (var m in list.EnumerateArray())
        {
            if (m.ValueKind == JsonValueKind.Array) { merges.Add((m[0].GetString()!, m[1].GetString()!)); continue; }
            string s = m.GetString()!;
            int space = s.IndexOf(' ', 1); // from 1: a left piece is never empty
            if (space < 0) throw new FormatException($"merge '{s}' has no space");
            merges.Add((s[..space], s[(space + 1)..]));
        }
        return merges;
    }

    static Llama3Tokenizer BuildByteLevel(string path, JsonElement root, JsonElement model, Dictionary<string, int> vocab,
        List<(string Left, string Right)> merges, Dictionary<string, (int Id, bool Special)> added)
    {
        if (root.TryGetProperty("normalizer", out var normalizer) && normalizer.ValueKind != JsonValueKind.Null)
            throw new ModelFormatException(path, "a normalizer is not supported with byte-level BPE");
        var (pattern, addPrefixSpace) = PreTokenizer(path, root);

        var specials = added.ToDictionary(a => a.Key, a => a.Value.Id, StringComparer.Ordinal);
        bool ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
        return ByteLevelBpe.CreateTokenizer(vocab, merges, specials, pattern, ignoreMerges, addPrefixSpace);
    }

    /// <summary>
    /// The split regex: a Split pre-tokenizer's pattern (Llama 3), or GPT-2's when a ByteLevel pre-tokenizer has
    /// use_regex. Added tokens that are not special would need splitting out even in plain text; Llama 3 has none.
    /// </summary>
    static (string Pattern, bool AddPrefixSpace) PreTokenizer(string path, JsonElement root)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind == JsonValueKind.Null)
            throw new ModelFormatException(path, "byte-level BPE without a pre_tokenizer is not supported");
        var steps = pre.GetProperty("type").GetString() == "Sequence" ? pre.GetProperty("pretokenizers").EnumerateArray().ToList() : [pre];
        string? pattern = null;
        bool addPrefixSpace = false, byteLevel = false;
        foreach (var step in steps)
        {
            switch (step.GetProperty("type").GetString())
            {
                case "Split":
                    if (pattern is not null) throw new ModelFormatException(path, "more than one Split pre-tokenizer is not supported");
                    var p = step.GetProperty("pattern");
                    pattern = p.TryGetProperty("Regex", out var regex) ? regex.GetString() : Regex.Escape(p.GetProperty("String").GetString()!);
                    if (step.TryGetProperty("behavior", out var behavior) && behavior.GetString() != "Isolated")
                        throw new ModelFormatException(path, $"Split behavior '{behavior.GetString()}' is not supported");
                    if (step.TryGetProperty("invert", out var invert) && invert.GetBoolean())
                        throw new ModelFormatException(path, "an inverted Split pre-tokenizer is not supported");
                    break;
                case "ByteLevel":
                    byteLevel = true;
                    addPrefixSpace = step.TryGetProperty("add_prefix_space", out var aps) && aps.GetBoolean();
                    bool useRegex = !step.TryGetProperty("use_regex", out var ur) || ur.GetBoolean();
                    if (useRegex)
                    {
                        if (pattern is not null) throw new ModelFormatException(path, "Split followed by a regex ByteLevel pre-tokenizer is not supported");
                        pattern = Gpt2Pattern;
                    }
                    break;
                default:
                    throw new ModelFormatException(path, $"pre-tokenizer '{step.GetProperty("type").GetString()}' is not supported");
            }
        }
        if (!byteLevel || pattern is null) throw new ModelFormatException(path, "expected a byte-level pre-tokenizer with a split regex");
        return (pattern, addPrefixSpace);
    }

    /// <summary>
    /// A Llama 2 style tokenizer.json as SentencePiece BPE. The file has merges instead of scores; HF's converter
    /// ordered them by the merged piece's SentencePiece score, so a piece's score is minus the rank of its first
    /// merge. Multi-character pieces that no merge produces can never form in HF's BPE, so they are marked unused.
    /// The file's normalizer/pre-tokenizer are taken to be Llama 2's (prepend "▁", spaces to "▁") and are not read.
    /// </summary>
    static SentencePieceBpeTokenizer BuildSentencePiece(string path, Dictionary<string, int> vocab,
        List<(string Left, string Right)> merges, Dictionary<string, (int Id, bool Special)> added)
    {
        int size = Math.Max(vocab.Values.DefaultIfEmpty(-1).Max(), added.Values.Select(a => a.Id).DefaultIfEmpty(-1).Max()) + 1;
        var pieces = new string[size];
        var scores = new float[size];
        var types = new int[size];
        Array.Fill(pieces, "");
        Array.Fill(types, SentencePieceBpeTokenizer.Unused);
        var firstMerge = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int rank = 0; rank < merges.Count; rank++) firstMerge.TryAdd(merges[rank].Left + merges[rank].Right, rank);

        foreach (var (piece, id) in vocab)
        {
            pieces[id] = piece;
            if (Utf8Text.TryParseByteToken(piece, out _)) types[id] = SentencePieceBpeTokenizer.Byte;
            else if (firstMerge.TryGetValue(piece, out int rank)) { types[id] = SentencePieceBpeTokenizer.Normal; scores[id] = -rank; }
            else if (piece.EnumerateRunes().Count() == 1) types[id] = SentencePieceBpeTokenizer.Normal;
        }
        foreach (var (content, (id, special)) in added)
        {
            pieces[id] = content;
            if (special) types[id] = SentencePieceBpeTokenizer.Control;
        }
        int Id(string name) => vocab.TryGetValue(name, out int id) ? id : added.TryGetValue(name, out var a) ? a.Id : -1;
        int unk = Id("<unk>");
        if (unk >= 0) types[unk] = SentencePieceBpeTokenizer.Unknown;
        if (unk < 0) throw new ModelFormatException(path, "SentencePiece-style tokenizer.json without <unk>");
        return SentencePieceBpeTokenizer.FromVocabulary(pieces, scores, types, Id("<s>"), Id("</s>"), unk);
    }

    /// <summary>A required field; its absence is an error naming the key (GetProperty's message names none).</summary>
    static JsonElement Field(string path, JsonElement e, string key, string where) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(key, out var v) ? v
        : throw new ModelFormatException(path, $"tokenizer.json: {where} has no field {ErrorText.Quote(key)}");
}
