using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tokenizers;

/// <summary>
/// Llama 3's byte-level BPE: Meta's pre-tokenizer regex, then merges by rank over the UTF-8 bytes of each chunk.
/// Loads Meta's tiktoken rank file (encoded by Microsoft.ML.Tokenizers' <c>TiktokenTokenizer</c>) or a Hugging Face
/// <c>tokenizer.json</c> (encoded by <see cref="ByteLevelBpe"/>). <see cref="Encode"/> treats special-token text as
/// plain text, like tiktoken's <c>encode_ordinary</c>; <see cref="EncodeWithSpecialTokens"/> parses it, for chat prompts.
/// </summary>
internal sealed class Llama3Tokenizer : ITextTokenizer
{
    /// <summary>Meta's <c>pat_str</c> for Llama 3.</summary>
    public const string Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    readonly byte[]?[] _bytes;     // per id; null for special tokens and unused ids
    readonly string?[] _specials;  // per id; the name of a special token
    readonly Regex? _specialSplitter;
    readonly IReadOnlyDictionary<string, int> _specialIds;
    readonly Func<string, IReadOnlyList<int>> _encodeOrdinary;

    internal Llama3Tokenizer(byte[]?[] bytes, IReadOnlyDictionary<string, int> specialIds, Func<string, IReadOnlyList<int>> encodeOrdinary,
        int? bosId = null, int? eosId = null)
    {
        int size = Math.Max(bytes.Length, specialIds.Count == 0 ? 0 : specialIds.Values.Max() + 1);
        _bytes = new byte[]?[size];
        bytes.CopyTo(_bytes, 0);
        _specials = new string?[size];
        foreach (var (name, id) in specialIds) _specials[id] = name;
        _specialIds = specialIds;
        _encodeOrdinary = encodeOrdinary;
        // Longest names first, so that a name that is a prefix of another cannot cut it.
        if (specialIds.Count > 0)
            _specialSplitter = new Regex(string.Join('|', specialIds.Keys.OrderByDescending(k => k.Length).Select(Regex.Escape)),
                RegexOptions.CultureInvariant);
        BosId = bosId ?? specialIds.GetValueOrDefault(Llama3SpecialTokens.BeginOfText, -1);
        EosId = eosId ?? specialIds.GetValueOrDefault(Llama3SpecialTokens.EndOfText, -1);
        EotId = specialIds.GetValueOrDefault(Llama3SpecialTokens.EndOfTurn, -1);
    }

    public int VocabSize => _bytes.Length;
    public int BosId { get; }
    /// <summary><c>&lt;|end_of_text|&gt;</c>, the base model's end; chat models end a turn with <see cref="EotId"/>.</summary>
    public int EosId { get; }
    /// <summary><c>&lt;|eot_id|&gt;</c>, the end of a chat turn (-1 when the vocabulary lacks it).</summary>
    public int EotId { get; }
    public IReadOnlyDictionary<string, int> SpecialTokens => _specialIds;

    /// <summary>Loads Meta's Llama 3 <c>tokenizer.model</c>: lines of base64 token bytes and rank; the 256 special tokens follow the ranks.</summary>
    public static Llama3Tokenizer LoadTiktoken(string rankFilePath)
    {
        byte[] data;
        try { data = InputFiles.ReadAllBytes(rankFilePath); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFormatException(rankFilePath, $"cannot read tiktoken rank file: {e.Message}");
        }
        byte[]?[] bytes = ReadRanks(rankFilePath, data);
        var specials = Llama3SpecialTokens.Create(bytes.Length);
        TiktokenTokenizer tiktoken;
        using (var stream = new MemoryStream(data, writable: false))
            tiktoken = TiktokenTokenizer.Create(stream, new RegexPreTokenizer(new Regex(Pattern, RegexOptions.Compiled), null),
                normalizer: null, specialTokens: null);
        return new Llama3Tokenizer(bytes, specials, text => tiktoken.EncodeToIds(text));
    }

    /// <summary>Loads a Hugging Face <c>tokenizer.json</c> with a byte-level BPE model (Llama 3 style).</summary>
    public static Llama3Tokenizer LoadHfJson(string tokenizerJsonPath) =>
        HfTokenizerJson.Load(tokenizerJsonPath) as Llama3Tokenizer
        ?? throw new ModelFormatException(tokenizerJsonPath,
            "is a SentencePiece-style (Llama 2) tokenizer.json, not byte-level BPE; load it with TokenizerFiles.LoadFromFolder");

    /// <summary>
    /// Builds the tokenizer from GGUF's <c>tokenizer.ggml.*</c> arrays of a <c>gpt2</c>-model vocabulary with the
    /// <c>llama-bpe</c> pre-tokenizer (Llama 3): tokens in GPT-2's byte spelling, merges as "left right" in priority
    /// order, token types as in SentencePiece (3 control and 4 user-defined are the special tokens).
    /// Like llama.cpp for Llama 3, a chunk that is a whole token is taken as is (ignore_merges).
    /// </summary>
    /// <exception cref="FormatException">a byte is missing from the tokens, or a merge names an unknown token</exception>
    public static Llama3Tokenizer FromGgufVocabulary(string[] tokens, string[] merges, int[] tokenTypes, int bosId, int eosId)
    {
        if (tokenTypes.Length != tokens.Length) throw new ArgumentException($"{tokens.Length} tokens but {tokenTypes.Length} token types");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int id = 0; id < tokens.Length; id++)
        {
            if (tokenTypes[id] is SentencePieceBpeTokenizer.Control or SentencePieceBpeTokenizer.UserDefined) specials.TryAdd(tokens[id], id);
            else vocab.TryAdd(tokens[id], id);
        }
        var pairs = merges.Select(m =>
        {
            int space = m.IndexOf(' ', 1);
            return space < 0 ? throw new FormatException($"merge '{m}' has no space") : (m[..space], m[(space + 1)..]);
        }).ToList();
        return ByteLevelBpe.CreateTokenizer(vocab, pairs, specials, Pattern, ignoreMerges: true, addPrefixSpace: false, bosId, eosId);
    }

    /// <summary>Parses the rank file; rank = id. Fails on a line that is not "base64 rank" or a repeated rank.</summary>
    static byte[]?[] ReadRanks(string path, byte[] data)
    {
        var byRank = new Dictionary<int, byte[]>();
        int lineNumber = 0, maxRank = -1;
        foreach (string line in Encoding.ASCII.GetString(data).Split('\n'))
        {
            lineNumber++;
            if (line.Length == 0) continue;
            int space = line.IndexOf(' ');
            byte[] token;
            if (space <= 0 || !int.TryParse(line.AsSpan(space + 1).TrimEnd('\r'), out int rank) || rank < 0)
                throw new ModelFormatException(path, $"line {lineNumber} is not '<base64> <rank>'");
            try { token = Convert.FromBase64String(line[..space]); }
            catch (FormatException) { throw new ModelFormatException(path, $"line {lineNumber}: invalid base64"); }
            if (!byRank.TryAdd(rank, token)) throw new ModelFormatException(path, $"line {lineNumber}: rank {rank} repeated");
            maxRank = Math.Max(maxRank, rank);
        }
        if (byRank.Count < 256) throw new ModelFormatException(path, $"only {byRank.Count} ranks; a byte-level vocabulary needs all 256 bytes");
        var bytes = new byte[]?[maxRank + 1];
        foreach (var (rank, token) in byRank) bytes[rank] = token;
        return bytes;
    }

    public int[] Encode(string text, bool addBos)
    {
        var ids = new List<int>();
        if (addBos && BosId >= 0) ids.Add(BosId);
        ids.AddRange(_encodeOrdinary(Utf8Text.Sanitize(text)));
        return ids.ToArray();
    }

    /// <summary>
    /// Encodes text in which special-token names (<c>&lt;|begin_of_text|&gt;</c>, <c>&lt;|eot_id|&gt;</c>, …) stand for
    /// their ids, as in a chat prompt; adds no BOS (a chat prompt writes <c>&lt;|begin_of_text|&gt;</c> itself).
    /// </summary>
    public int[] EncodeWithSpecialTokens(string text)
    {
        text = Utf8Text.Sanitize(text);
        if (_specialSplitter is null) return Encode(text, addBos: false);
        var ids = new List<int>();
        int at = 0;
        foreach (var m in _specialSplitter.EnumerateMatches(text))
        {
            if (m.Index > at) ids.AddRange(_encodeOrdinary(text[at..m.Index]));
            ids.Add(_specialIds[text.Substring(m.Index, m.Length)]);
            at = m.Index + m.Length;
        }
        if (at < text.Length) ids.AddRange(_encodeOrdinary(text[at..]));
        return ids.ToArray();
    }

    /// <summary>The exact bytes of one token (a special token gives its name); no space is stripped, Llama 3 adds no dummy prefix.</summary>
    public byte[] DecodeBytes(int previous, int token) =>
        _specials[token] is { } name ? Encoding.UTF8.GetBytes(name) : _bytes[token] ?? [];

    /// <summary>One token as streamed; bytes of a character split across tokens print nothing (use <see cref="DecodeBytes"/> with a UTF-8 decoder for those).</summary>
    public string Decode(int previous, int token) => Utf8Text.DecodeDropping(DecodeBytes(previous, token));

    /// <summary>Decodes a sequence like tiktoken: BOS and EOS are dropped, other special tokens appear by name.</summary>
    public string Decode(IReadOnlyList<int> ids)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
            if (id != BosId && id != EosId) bytes.AddRange(DecodeBytes(-1, id));
        return Utf8Text.DecodeReplacing(bytes.ToArray());
    }

    /// <summary>The token's text, with bytes that are not a whole character shown as <c>&lt;0xXX&gt;</c>; special tokens by name.</summary>
    public string Piece(int id) => _specials[id] ?? Utf8Text.Readable(_bytes[id] ?? []);
}
