using NeuronTrace.Model;
namespace NeuronTrace.Formats.Tokenizers;

/// <summary>
/// The tokenizer of llama2.c's <c>tok512.bin</c> (and its other <c>tokenizer.bin</c> exports), with llama2.c's
/// <c>encode</c>/<c>decode</c> semantics: pieces hold a literal space (not U+2581), ids 0–2 are <c>&lt;unk&gt;</c>,
/// <c>"\n&lt;s&gt;\n"</c> and <c>"\n&lt;/s&gt;\n"</c>, and <c>&lt;0xXX&gt;</c> pieces stand for raw bytes.
/// </summary>
internal sealed class Llama2cTokenizer : ITextTokenizer
{
    readonly byte[][] _pieces;
    readonly float[] _scores;
    readonly Dictionary<string, int> _ids;
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;

    Llama2cTokenizer(byte[][] pieces, float[] scores)
    {
        _pieces = pieces;
        _scores = scores;
        _ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int id = 0; id < pieces.Length; id++)
            if (Utf8Text.TryDecodeStrict(pieces[id]) is { } text)
                _ids.TryAdd(text, id); // llama2.c's binary search finds one of equal pieces; the first is as good
        _lookup = _ids.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    public int VocabSize => _pieces.Length;
    public int BosId => 1;
    public int EosId => 2;

    /// <summary>Reads a llama2.c tokenizer file: int32 max_token_length, then per id float32 score, int32 length, bytes.</summary>
    /// <param name="tok512Path">the file</param>
    /// <param name="vocabSize">the model's vocabulary size when known (the file does not store it): the file must hold exactly that many pieces</param>
    public static Llama2cTokenizer Load(string tok512Path, int? vocabSize = null)
    {
        byte[] data;
        try { data = InputFiles.ReadAllBytes(tok512Path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFormatException(tok512Path, $"cannot read llama2.c tokenizer: {e.Message}");
        }
        if (data.Length < 4) throw new ModelFormatException(tok512Path, $"truncated: {data.Length} bytes, no header");
        int maxTokenLength = BitConverter.ToInt32(data, 0);
        if (maxTokenLength <= 0 || maxTokenLength > 1024)
            throw new ModelFormatException(tok512Path, $"corrupt header: max_token_length {maxTokenLength}");

        var pieces = new List<byte[]>();
        var scores = new List<float>();
        int pos = 4;
        while (pos < data.Length && (vocabSize is null || pieces.Count < vocabSize))
        {
            int id = pieces.Count;
            if (data.Length - pos < 8) throw new ModelFormatException(tok512Path, $"truncated in the entry of id {id} at byte {pos}");
            float score = BitConverter.ToSingle(data, pos);
            int len = BitConverter.ToInt32(data, pos + 4);
            pos += 8;
            if (len < 0 || len > maxTokenLength)
                throw new ModelFormatException(tok512Path, $"corrupt entry of id {id}: length {len} outside 0..{maxTokenLength}");
            if (data.Length - pos < len) throw new ModelFormatException(tok512Path, $"truncated in the piece of id {id} at byte {pos}");
            pieces.Add(data.AsSpan(pos, len).ToArray());
            scores.Add(score);
            pos += len;
        }
        if (vocabSize is { } expected && pieces.Count != expected)
            throw new ModelFormatException(tok512Path, $"truncated: {pieces.Count} pieces, the model needs {expected}");
        if (pos != data.Length) throw new ModelFormatException(tok512Path, $"{data.Length - pos} bytes after the last of {pieces.Count} pieces");
        if (pieces.Count < 259) throw new ModelFormatException(tok512Path, $"only {pieces.Count} pieces; ids 0-258 (specials and bytes) are required");
        return new Llama2cTokenizer(pieces.ToArray(), scores.ToArray());
    }

    public int[] Encode(string text, bool addBos)
    {
        var ids = new List<int>();
        if (addBos) ids.Add(BosId);
        if (text.Length == 0) return ids.ToArray();

        // llama2.c looks the dummy prefix " " up as one more piece; it then merges like any other.
        string s = " " + Utf8Text.Sanitize(text);
        var lengths = Utf8Text.CodePointLengths(s);
        // A code point that is not a piece becomes byte tokens at once in llama2.c; concatenations with "<0xXX>"
        // are never pieces, so those symbols simply never merge.
        var frozen = new bool[lengths.Count];
        for (int i = 0, offset = 0; i < lengths.Count; offset += lengths[i], i++)
            frozen[i] = !_lookup.ContainsKey(s.AsSpan(offset, lengths[i]));

        var symbols = BpeMerger.Merge(lengths, (int start, int l, int r, out float score) =>
        {
            bool found = _lookup.TryGetValue(s.AsSpan(start, l + r), out int id);
            score = found ? _scores[id] : 0;
            return found;
        }, frozen);

        Span<byte> utf8 = stackalloc byte[8];
        foreach (var (start, length) in symbols)
        {
            var span = s.AsSpan(start, length);
            if (_lookup.TryGetValue(span, out int id)) { ids.Add(id); continue; }
            int n = System.Text.Encoding.UTF8.GetBytes(span, utf8);
            foreach (byte b in utf8[..n]) ids.Add(b + 3); // llama2.c's byte fallback: ids 3..258 are <0x00>..<0xFF>
        }
        return ids.ToArray();
    }

    /// <summary>The exact bytes llama2.c's <c>decode</c> gives for <paramref name="token"/> after <paramref name="previous"/>.</summary>
    public byte[] DecodeBytes(int previous, int token)
    {
        byte[] piece = _pieces[token];
        // After BOS, the SentencePiece decoder strips the dummy-prefix space.
        if (previous == BosId && piece.Length > 0 && piece[0] == (byte)' ') return piece[1..];
        if (piece.Length == 6 && Utf8Text.TryParseByteToken(System.Text.Encoding.ASCII.GetString(piece), out byte b)) return [b];
        return piece;
    }

    /// <summary>
    /// What llama2.c's <c>safe_printf</c> prints: a single byte that is neither printable ASCII nor whitespace (a
    /// control byte, or one byte of a multi-byte character) prints nothing. Use <see cref="DecodeBytes"/> with a
    /// UTF-8 decoder to stream such characters whole.
    /// </summary>
    public string Decode(int previous, int token)
    {
        byte[] bytes = DecodeBytes(previous, token);
        bool printable = bytes.Length != 1 || bytes[0] is >= 0x20 and <= 0x7E or >= 0x09 and <= 0x0D; // isprint || isspace
        if (!printable) return "";
        return Utf8Text.DecodeDropping(bytes);
    }

    /// <summary>
    /// Decodes a whole sequence: BOS and EOS are dropped, byte tokens give raw bytes, and the first piece loses its
    /// dummy-prefix space (with or without a BOS before it), so <c>Decode(Encode(text, b)) == text</c>.
    /// </summary>
    public string Decode(IReadOnlyList<int> ids)
    {
        var bytes = new List<byte>();
        bool first = true;
        foreach (int id in ids)
        {
            if (id == BosId || id == EosId) continue;
            bytes.AddRange(DecodeBytes(first ? BosId : -1, id));
            first = false;
        }
        return Utf8Text.DecodeReplacing(bytes.ToArray());
    }

    /// <summary>The raw vocabulary piece (literal spaces and newlines, <c>&lt;0xXX&gt;</c> for byte tokens).</summary>
    public string Piece(int id) => Utf8Text.Readable(_pieces[id]);

    /// <summary>The piece's score in the file (the merge priority).</summary>
    public float Score(int id) => _scores[id];
}
