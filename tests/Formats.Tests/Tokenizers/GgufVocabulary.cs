using Xunit;
using System.Text;
using NeuronTrace.Formats;

namespace NeuronTrace.Formats.Tests;

/// <summary>
/// A test-only reader of the tokenizer arrays in a GGUF v3 header, to build <c>SentencePieceBpeTokenizer</c> from
/// the stories260K GGUF independently of the product's GGUF reader.
/// </summary>
public sealed record GgufVocabulary(string[] Tokens, float[] Scores, int[] TokenTypes, int BosId, int EosId, int UnkId)
{
    public static GgufVocabulary Read(string path)
    {
        using var r = new BinaryReader(File.OpenRead(path));
        if (r.ReadUInt32() != 0x46554747) throw new InvalidDataException("not GGUF");
        if (r.ReadUInt32() != 3) throw new InvalidDataException("not GGUF v3");
        r.ReadUInt64(); // tensor count
        ulong kvCount = r.ReadUInt64();
        var values = new Dictionary<string, object>();
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = ReadString(r);
            values[key] = ReadValue(r, r.ReadUInt32());
        }
        object[] tokens = (object[])values["tokenizer.ggml.tokens"];
        return new GgufVocabulary(
            tokens.Cast<string>().ToArray(),
            ((object[])values["tokenizer.ggml.scores"]).Cast<float>().ToArray(),
            ((object[])values["tokenizer.ggml.token_type"]).Cast<int>().ToArray(),
            Convert.ToInt32(values["tokenizer.ggml.bos_token_id"]),
            Convert.ToInt32(values["tokenizer.ggml.eos_token_id"]),
            Convert.ToInt32(values["tokenizer.ggml.unknown_token_id"]));
    }

    static string ReadString(BinaryReader r) => Encoding.UTF8.GetString(r.ReadBytes(checked((int)r.ReadUInt64())));

    static object ReadValue(BinaryReader r, uint type) => type switch
    {
        0 => r.ReadByte(), 1 => r.ReadSByte(), 2 => r.ReadUInt16(), 3 => r.ReadInt16(),
        4 => r.ReadUInt32(), 5 => r.ReadInt32(), 6 => r.ReadSingle(), 7 => r.ReadByte() != 0,
        8 => ReadString(r),
        9 => ReadArray(r),
        10 => r.ReadUInt64(), 11 => r.ReadInt64(), 12 => r.ReadDouble(),
        _ => throw new InvalidDataException($"GGUF value type {type}"),
    };

    static object[] ReadArray(BinaryReader r)
    {
        uint itemType = r.ReadUInt32();
        var items = new object[checked((int)r.ReadUInt64())];
        for (int i = 0; i < items.Length; i++) items[i] = ReadValue(r, itemType);
        return items;
    }
}
