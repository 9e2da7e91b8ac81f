using System.Text;
using System.Text.Json;
using NeuronTrace.Formats.Tokenizers;

namespace NeuronTrace.Formats.Tests;

/// <summary>Small tokenizer files written by the tests, with hand-checked expected ids.</summary>
public static class TinyTokenizerFiles
{
    /// <summary>
    /// A SentencePiece-BPE vocabulary: 0 &lt;unk&gt;, 1 &lt;s&gt;, 2 &lt;/s&gt;, 3..258 bytes, 259 "▁", 260 "a",
    /// 261 "b", 262 "▁a" (score -1), 263 "ab" (-2), 264 "▁ab" (-3).
    /// </summary>
    public static (string Piece, float Score, int Type)[] SentencePieceVocab()
    {
        var v = new List<(string, float, int)> { ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3) };
        for (int b = 0; b < 256; b++) v.Add(($"<0x{b:X2}>", 0, 6));
        v.AddRange([("\u2581", 0, 1), ("a", 0, 1), ("b", 0, 1), ("\u2581a", -1, 1), ("ab", -2, 1), ("\u2581ab", -3, 1)]);
        return v.ToArray();
    }

    /// <summary>Writes the vocabulary above as a SentencePiece ModelProto (BPE, byte fallback, identity normalizer).</summary>
    public static byte[] SentencePieceModel(int modelType = 2, bool removeExtraWhitespaces = false)
    {
        var model = new MemoryStream();
        foreach (var (piece, score, type) in SentencePieceVocab())
        {
            var p = new MemoryStream();
            WriteBytes(p, 1, Encoding.UTF8.GetBytes(piece));
            WriteTag(p, 2, 5);
            p.Write(BitConverter.GetBytes(score));
            WriteTag(p, 3, 0);
            WriteVarint(p, (ulong)type);
            WriteBytes(model, 1, p.ToArray());
        }
        var trainer = new MemoryStream();
        WriteTag(trainer, 3, 0); WriteVarint(trainer, (ulong)modelType);
        WriteTag(trainer, 35, 0); WriteVarint(trainer, 1);
        WriteTag(trainer, 43, 0); WriteVarint(trainer, unchecked((ulong)-1L)); // pad_id -1: a 10-byte varint
        WriteBytes(model, 2, trainer.ToArray());
        var normalizer = new MemoryStream();
        WriteBytes(normalizer, 1, "identity"u8.ToArray());
        WriteTag(normalizer, 3, 0); WriteVarint(normalizer, 1);
        WriteTag(normalizer, 4, 0); WriteVarint(normalizer, removeExtraWhitespaces ? 1UL : 0UL);
        WriteBytes(model, 3, normalizer.ToArray());
        return model.ToArray();
    }

    /// <summary>The same vocabulary as a Llama 2 style tokenizer.json (merges in score order, byte fallback).</summary>
    public static string SentencePieceJson()
    {
        var vocab = SentencePieceVocab().Select((p, id) => (p.Piece, id)).ToDictionary(p => p.Piece, p => p.id);
        return JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["version"] = "1.0",
            ["added_tokens"] = new[] { ("<unk>", 0), ("<s>", 1), ("</s>", 2) }
                .Select(a => new Dictionary<string, object> { ["id"] = a.Item2, ["content"] = a.Item1, ["special"] = true }),
            ["normalizer"] = new Dictionary<string, object> { ["type"] = "Sequence", ["normalizers"] = Array.Empty<object>() },
            ["model"] = new Dictionary<string, object>
            {
                ["type"] = "BPE", ["byte_fallback"] = true, ["unk_token"] = "<unk>", ["vocab"] = vocab,
                ["merges"] = new[] { "\u2581 a", "a b", "\u2581a b" },
            },
        });
    }

    /// <summary>
    /// A byte-level tokenizer.json: byte b has id b; merges (h,e)→257 "he", (l,l)→259 "ll", (he,ll)→260 "hell",
    /// (Ġ,hell)→261 "Ġhell"; 262 "the" has no merge; added tokens 263 &lt;|begin_of_text|&gt;, 264
    /// &lt;|end_of_text|&gt;, 265 &lt;|eot_id|&gt;. The split regex is Llama 3's.
    /// </summary>
    public static string ByteLevelJson(bool ignoreMerges)
    {
        var vocab = new Dictionary<string, int>();
        for (int b = 0; b < 256; b++) vocab[ByteChar(b).ToString()] = b;
        vocab["he"] = 257; vocab["ll"] = 259; vocab["hell"] = 260; vocab["\u0120hell"] = 261; vocab["the"] = 262;
        return JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["version"] = "1.0",
            ["added_tokens"] = new[] { ("<|begin_of_text|>", 263), ("<|end_of_text|>", 264), ("<|eot_id|>", 265) }
                .Select(a => new Dictionary<string, object> { ["id"] = a.Item2, ["content"] = a.Item1, ["special"] = true }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = Llama3PreTokenizer(),
            ["model"] = new Dictionary<string, object>
            {
                ["type"] = "BPE", ["ignore_merges"] = ignoreMerges, ["byte_fallback"] = false, ["vocab"] = vocab,
                ["merges"] = new object[] { "h e", new[] { "l", "l" }, "he ll", "\u0120 hell" },
            },
        });
    }

    public static object Llama3PreTokenizer() => new Dictionary<string, object>
    {
        ["type"] = "Sequence",
        ["pretokenizers"] = new object[]
        {
            new Dictionary<string, object>
            {
                ["type"] = "Split", ["pattern"] = new Dictionary<string, string> { ["Regex"] = NeuronTrace.Formats.Tokenizers.Llama3Tokenizer.Pattern },
                ["behavior"] = "Isolated", ["invert"] = false,
            },
            new Dictionary<string, object> { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false },
        },
    };

    /// <summary>A tiktoken rank file: the 256 bytes at their own rank, then "he" 256 and "ll" 257.</summary>
    public static string TiktokenRanks()
    {
        var sb = new StringBuilder();
        for (int b = 0; b < 256; b++) sb.Append(Convert.ToBase64String([(byte)b])).Append(' ').Append(b).Append('\n');
        sb.Append(Convert.ToBase64String("he"u8)).Append(" 256\n");
        sb.Append(Convert.ToBase64String("ll"u8)).Append(" 257\n");
        return sb.ToString();
    }

    /// <summary>GPT-2's byte-to-character table, written out again here so the test does not lean on the product's.</summary>
    public static char ByteChar(int b) => ByteChars[b];

    static readonly char[] ByteChars = BuildByteChars();

    static char[] BuildByteChars()
    {
        // Printable Latin-1 bytes stand for themselves; the others take U+0100, U+0101, ... in byte order.
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
            table[b] = b is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 and <= 255 ? (char)b : (char)next++;
        return table;
    }

    static void WriteTag(Stream s, int field, int wire) => WriteVarint(s, (ulong)(field << 3 | wire));

    static void WriteVarint(Stream s, ulong v)
    {
        for (; v >= 0x80; v >>= 7) s.WriteByte((byte)(v | 0x80));
        s.WriteByte((byte)v);
    }

    static void WriteBytes(Stream s, int field, byte[] bytes)
    {
        WriteTag(s, field, 2);
        WriteVarint(s, (ulong)bytes.Length);
        s.Write(bytes);
    }
}
