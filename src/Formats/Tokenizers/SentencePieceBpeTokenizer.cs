using System.Text;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tokenizers;

/// <summary>
/// SentencePiece's BPE model, exactly as Llama 2 uses it: no normalisation rules, spaces become U+2581 ("▁"), a
/// dummy "▁" prefix on non-empty text, then the adjacent pair whose merged piece is a vocabulary piece with the
/// highest score merges first (leftmost on ties); characters left without a piece fall back to <c>&lt;0xXX&gt;</c>
/// byte tokens. Control and unknown pieces are never matched in text. Built from a <c>tokenizer.model</c> or from
/// GGUF's <c>tokenizer.ggml.*</c> arrays.
/// </summary>
internal sealed class SentencePieceBpeTokenizer : ITextTokenizer
{
    /// <summary>SentencePiece piece types, which GGUF's <c>token_type</c> reuses.</summary>
    public const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6;

    const char Whitespace = '\u2581';
    const string UnknownSurface = " \u2047 "; // SentencePiece's default text for an unknown piece

    readonly string[] _pieces;
    readonly float[] _scores;
    readonly int[] _types;
    readonly int _unkId;
    readonly bool _addDummyPrefix, _removeExtraWhitespaces, _byteFallback;
    readonly int[] _byteIds; // byte value -> id of its <0xXX> piece, -1 when absent
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _mergeable; // normal and user-defined pieces
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _reserved;  // control, unknown and byte pieces
    readonly string[] _userDefined; // matched whole in the text, longest first

    SentencePieceBpeTokenizer(string[] pieces, float[] scores, int[] types, int bosId, int eosId, int unkId,
        bool addDummyPrefix, bool removeExtraWhitespaces, bool byteFallback)
    {
        _pieces = pieces;
        _scores = scores;
        _types = types;
        BosId = bosId;
        EosId = eosId;
        _unkId = unkId;
        _addDummyPrefix = addDummyPrefix;
        _removeExtraWhitespaces = removeExtraWhitespaces;
        _byteFallback = byteFallback;

        _byteIds = new int[256];
        Array.Fill(_byteIds, -1);
        var mergeable = new Dictionary<string, int>(StringComparer.Ordinal);
        var reserved = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int id = 0; id < pieces.Length; id++)
        {
            switch (types[id])
            {
                // UNUSED pieces are left out: SentencePiece merges through them and splits them back, which only
                // matters for vocabularies trimmed after training; Llama vocabularies have none.
                case Normal or UserDefined: mergeable.TryAdd(pieces[id], id); break;
                case Unused: break;
                default: reserved.TryAdd(pieces[id], id); break;
            }
            if (types[id] == Byte && Utf8Text.TryParseByteToken(pieces[id], out byte b) && _byteIds[b] < 0) _byteIds[b] = id;
        }
        _mergeable = mergeable.GetAlternateLookup<ReadOnlySpan<char>>();
        _reserved = reserved.GetAlternateLookup<ReadOnlySpan<char>>();
        _userDefined = Enumerable.Range(0, pieces.Length).Where(i => types[i] == UserDefined && pieces[i].Length > 0)
            .Select(i => pieces[i]).OrderByDescending(p => p.Length).ToArray();
    }

    public int VocabSize => _pieces.Length;
    public int BosId { get; }
    public int EosId { get; }
    public int UnkId => _unkId;

    /// <summary>Loads a SentencePiece <c>tokenizer.model</c>; only the BPE model type with the identity normaliser is supported.</summary>
    public static SentencePieceBpeTokenizer LoadModel(string tokenizerModelPath)
    {
        byte[] data;
        try { data = InputFiles.ReadAllBytes(tokenizerModelPath); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFormatException(tokenizerModelPath, $"cannot read SentencePiece model: {e.Message}");
        }
        SentencePieceModelFile m;
        try { m = SentencePieceModelFile.Parse(data); }
        catch (FormatException e) { throw new ModelFormatException(tokenizerModelPath, $"corrupt SentencePiece model: {e.Message}"); }

        string Fail(string problem) => throw new ModelFormatException(tokenizerModelPath, problem);
        if (m.Pieces.Count == 0) Fail("no pieces: not a SentencePiece model");
        if (m.ModelType != SentencePieceModelFile.ModelTypeBpe) Fail($"SentencePiece model type {m.ModelType} is not BPE (2); only BPE is supported");
        // A non-empty charsmap means NFKC-like rules that this tokenizer does not apply; encoding would be wrong.
        if (m.PrecompiledCharsmapLength > 0) Fail($"normalizer '{m.NormalizerName}' has rules; only the identity normalizer is supported");
        if (m.TreatWhitespaceAsSuffix) Fail("treat_whitespace_as_suffix is not supported");
        if (!m.EscapeWhitespaces) Fail("escape_whitespaces=false is not supported");
        int n = m.Pieces.Count;
        foreach (var (name, id) in new[] { ("unk", m.UnkId), ("bos", m.BosId), ("eos", m.EosId) })
            if (id >= n) Fail($"{name}_id {id} is outside the {n} pieces");
        for (int i = 0; i < n; i++)
            if (m.Types[i] is < Normal or > Byte) Fail($"piece {i} has unknown type {m.Types[i]}");
        return new SentencePieceBpeTokenizer(m.Pieces.ToArray(), m.Scores.ToArray(), m.Types.ToArray(), m.BosId, m.EosId, m.UnkId,
            m.AddDummyPrefix, m.RemoveExtraWhitespaces, m.ByteFallback);
    }

    /// <summary>
    /// Builds the tokenizer from GGUF-style arrays (<c>tokenizer.ggml.tokens/scores/token_type</c>, pieces spelled with
    /// U+2581) with Llama 2's settings: dummy prefix, no whitespace cleanup, byte fallback when byte pieces exist.
    /// </summary>
    public static SentencePieceBpeTokenizer FromVocabulary(string[] pieces, float[] scores, int[] tokenTypes, int bosId, int eosId, int unkId)
    {
        if (scores.Length != pieces.Length || tokenTypes.Length != pieces.Length)
            throw new ArgumentException($"{pieces.Length} pieces but {scores.Length} scores and {tokenTypes.Length} token types");
        bool byteFallback = tokenTypes.Contains(Byte);
        return new SentencePieceBpeTokenizer((string[])pieces.Clone(), (float[])scores.Clone(), (int[])tokenTypes.Clone(),
            bosId, eosId, unkId, addDummyPrefix: true, removeExtraWhitespaces: false, byteFallback);
    }

    public int[] Encode(string text, bool addBos)
    {
        var ids = new List<int>();
        if (addBos && BosId >= 0) ids.Add(BosId);
        string s = Normalize(Utf8Text.Sanitize(text));
        if (s.Length == 0) return ids.ToArray();

        var (lengths, frozen) = InitialSymbols(s);
        var symbols = BpeMerger.Merge(lengths, (int start, int l, int r, out float score) =>
        {
            bool found = _mergeable.TryGetValue(s.AsSpan(start, l + r), out int id);
            score = found ? _scores[id] : 0;
            return found;
        }, frozen);

        bool previousUnknown = false;
        foreach (var (start, length) in symbols)
        {
            var span = s.AsSpan(start, length);
            // SentencePiece's PieceToId looks in the reserved pieces first.
            int id = _reserved.TryGetValue(span, out int r) ? r : _mergeable.TryGetValue(span, out int m) ? m : _unkId;
            if (id == _unkId && _byteFallback)
            {
                foreach (byte b in Encoding.UTF8.GetBytes(span.ToArray()))
                    ids.Add(_byteIds[b] >= 0 ? _byteIds[b] : _unkId);
                continue;
            }
            // Without byte fallback, SentencePiece folds a run of unknown characters into one unknown token.
            if (id == _unkId && previousUnknown) continue;
            previousUnknown = id == _unkId;
            ids.Add(id);
        }
        return ids.ToArray();
    }

    /// <summary>SentencePiece's identity normaliser: optional whitespace cleanup, the dummy prefix, spaces to U+2581.</summary>
    string Normalize(string text)
    {
        if (_removeExtraWhitespaces)
        {
            var sb = new StringBuilder(text.Length);
            foreach (char c in text)
                if (c != ' ' || (sb.Length > 0 && sb[^1] != ' ')) sb.Append(c);
            if (sb.Length > 0 && sb[^1] == ' ') sb.Length--;
            text = sb.ToString();
        }
        if (text.Length == 0) return "";
        if (_addDummyPrefix) text = " " + text;
        return text.Replace(' ', Whitespace);
    }

    /// <summary>One symbol per code point, except that user-defined pieces are taken whole and never merge.</summary>
    (List<int> Lengths, bool[]? Frozen) InitialSymbols(string s)
    {
        if (_userDefined.Length == 0) return (Utf8Text.CodePointLengths(s), null);
        var lengths = new List<int>();
        var frozen = new List<bool>();
        for (int i = 0; i < s.Length; i += lengths[^1])
        {
            string? match = _userDefined.FirstOrDefault(p => s.AsSpan(i).StartsWith(p, StringComparison.Ordinal));
            lengths.Add(match?.Length ?? (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? 2 : 1));
            frozen.Add(match is not null);
        }
        return (lengths, frozen.ToArray());
    }

    /// <summary>
    /// The exact bytes of <paramref name="token"/> when streamed after <paramref name="previous"/>: byte pieces give
    /// their byte, control pieces nothing, "▁" a space, and the leading space after BOS is dropped.
    /// </summary>
    public byte[] DecodeBytes(int previous, int token) => DecodeBytes(token, stripLeadingSpace: previous == BosId && BosId >= 0);

    byte[] DecodeBytes(int token, bool stripLeadingSpace)
    {
        switch (_types[token])
        {
            case Byte when Utf8Text.TryParseByteToken(_pieces[token], out byte b): return [b];
            case Control: return [];
            case Unknown: return Encoding.UTF8.GetBytes(UnknownSurface);
        }
        string text = _pieces[token].Replace(Whitespace, ' ');
        if (stripLeadingSpace && text.StartsWith(' ')) text = text[1..];
        return Encoding.UTF8.GetBytes(text);
    }

    /// <summary>The text of one token as streamed; bytes of a character split across tokens print nothing (use <see cref="DecodeBytes(int, int)"/> with a UTF-8 decoder for those).</summary>
    public string Decode(int previous, int token) => Utf8Text.DecodeDropping(DecodeBytes(previous, token));

    /// <summary>Decodes a sequence as SentencePiece does: control pieces (BOS/EOS included) vanish and the dummy-prefix space is dropped.</summary>
    public string Decode(IReadOnlyList<int> ids)
    {
        var bytes = new List<byte>();
        bool first = true;
        foreach (int id in ids)
        {
            if (_types[id] == Control || id == BosId || id == EosId) continue;
            bytes.AddRange(DecodeBytes(id, stripLeadingSpace: first && _addDummyPrefix));
            first = false;
        }
        return Utf8Text.DecodeReplacing(bytes.ToArray());
    }

    /// <summary>The vocabulary piece as stored (U+2581 for space, <c>&lt;0xXX&gt;</c> for bytes).</summary>
    public string Piece(int id) => _pieces[id];

    public float Score(int id) => _scores[id];
    public int TokenType(int id) => _types[id];
}
