using System.Text;
using System.Text.RegularExpressions;

namespace NeuronTrace.Formats.Tokenizers;

/// <summary>
/// Hugging Face's byte-level BPE model (GPT-2 style, as Llama 3's <c>tokenizer.json</c> uses it): each regex chunk
/// becomes UTF-8 bytes, each byte one printable character (<see cref="ToChar"/>), then the adjacent pair with the
/// lowest merge rank merges first, leftmost on ties. With <c>ignore_merges</c> a chunk that is a whole vocabulary
/// entry is taken as is, which is what makes Llama 3's tokenizer.json agree with tiktoken.
/// </summary>
internal sealed class ByteLevelBpe
{
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocab;
    readonly Dictionary<(int Left, int Right), int> _mergeRanks;
    readonly Regex _split;
    readonly bool _ignoreMerges, _addPrefixSpace;

    public ByteLevelBpe(Dictionary<string, int> vocab, Dictionary<(int, int), int> mergeRanks, Regex split, bool ignoreMerges, bool addPrefixSpace)
    {
        _vocab = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _mergeRanks = mergeRanks;
        _split = split;
        _ignoreMerges = ignoreMerges;
        _addPrefixSpace = addPrefixSpace;
    }

    /// <summary>
    /// Builds a Llama 3 style tokenizer from a byte-level vocab (GPT-2 spelling), merges in priority order and the
    /// special tokens. Throws <see cref="FormatException"/> for a vocab that lacks a byte or a merge of unknown tokens.
    /// </summary>
    public static Llama3Tokenizer CreateTokenizer(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges,
        IReadOnlyDictionary<string, int> specials, string pattern, bool ignoreMerges, bool addPrefixSpace, int? bosId = null, int? eosId = null)
    {
        for (int b = 0; b < 256; b++)
            if (!vocab.ContainsKey(ToChar[b].ToString())) throw new FormatException($"byte-level vocab lacks byte 0x{b:X2}");
        var ranks = new Dictionary<(int, int), int>();
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (l, r) = merges[rank];
            if (!vocab.TryGetValue(l, out int li) || !vocab.TryGetValue(r, out int ri) || !vocab.ContainsKey(l + r))
                throw new FormatException($"merge {rank} ('{l}' '{r}') uses a token missing from the vocab");
            ranks.TryAdd((li, ri), rank);
        }
        int size = Math.Max(vocab.Values.DefaultIfEmpty(-1).Max(), specials.Values.DefaultIfEmpty(-1).Max()) + 1;
        var bytes = new byte[]?[size];
        foreach (var (piece, id) in vocab) bytes[id] = Unmap(piece);
        var bpe = new ByteLevelBpe(vocab, ranks, new Regex(pattern, RegexOptions.Compiled), ignoreMerges, addPrefixSpace);
        return new Llama3Tokenizer(bytes, specials, bpe.Encode, bosId, eosId);
    }

    /// <summary>A vocab entry's bytes; an entry outside the byte alphabet (an added token kept in the vocab) is taken as UTF-8 text.</summary>
    static byte[] Unmap(string piece)
    {
        var bytes = new byte[piece.Length];
        for (int i = 0; i < piece.Length; i++)
        {
            int b = ToByte(piece[i]);
            if (b < 0) return Encoding.UTF8.GetBytes(piece);
            bytes[i] = (byte)b;
        }
        return bytes;
    }

    public List<int> Encode(string text)
    {
        var ids = new List<int>();
        if (_addPrefixSpace && text.Length > 0 && text[0] != ' ') text = " " + text;
        foreach (var m in _split.EnumerateMatches(text))
            EncodeChunk(Map(text.AsSpan(m.Index, m.Length)), ids);
        return ids;
    }

    void EncodeChunk(string word, List<int> ids)
    {
        if (_ignoreMerges && _vocab.TryGetValue(word, out int whole)) { ids.Add(whole); return; }
        var symbols = BpeMerger.Merge(Enumerable.Repeat(1, word.Length).ToArray(), (int start, int l, int r, out float score) =>
        {
            score = 0;
            if (!_vocab.TryGetValue(word.AsSpan(start, l), out int left) || !_vocab.TryGetValue(word.AsSpan(start + l, r), out int right)
                || !_mergeRanks.TryGetValue((left, right), out int rank)) return false;
            score = -rank; // exact in float: ranks stay far below 2^24
            return true;
        });
        foreach (var (start, length) in symbols) ids.Add(_vocab[word.AsSpan(start, length)]); // every byte is in the vocab (checked at load)
    }

    static string Map(ReadOnlySpan<char> chunk)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(chunk.ToArray());
        return string.Create(utf8.Length, utf8, (span, bytes) =>
        {
            for (int i = 0; i < bytes.Length; i++) span[i] = ToChar[bytes[i]];
        });
    }

    /// <summary>GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100 onwards.</summary>
    public static readonly char[] ToChar = BuildByteTable();

    /// <summary>The inverse of <see cref="ToChar"/>; -1 for characters outside the table.</summary>
    public static int ToByte(char c) => c < FromChar.Length ? FromChar[c] : -1;

    static readonly int[] FromChar = BuildInverse();

    static char[] BuildByteTable()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }

    static int[] BuildInverse()
    {
        var inverse = new int[512];
        Array.Fill(inverse, -1);
        for (int b = 0; b < 256; b++) inverse[ToChar[b]] = b;
        return inverse;
    }
}
