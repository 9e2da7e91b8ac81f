using System.Buffers.Binary;
using NeuronTrace.TestSupport;
using Xunit;
using static NeuronTrace.Formats.Tests.FormatTestHelpers;
using NeuronTrace.Formats;

namespace NeuronTrace.Formats.Tests;

public sealed class GgufFileTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("gguf");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string P(string name) => Path.Combine(_dir, name);

    [Fact]
    public void ReadsTheStories260KHeader()
    {
        using var g = GgufFile.Open(RepoPaths.Stories260KGguf);
        Assert.Equal(3u, g.Version);
        Assert.Equal(32, g.Alignment);
        Assert.Equal(0, g.DataOffset % 32);
        Assert.Equal(19, g.Metadata.Count);
        Assert.Equal(19, g.MetadataKeys.Count);
        Assert.Equal(48, g.Tensors.Count);
        Assert.All(g.Tensors, t => Assert.Equal((uint)GgufTensorType.F32, t.TypeId));
        Assert.Equal("llama", g.GetString("general.architecture"));
        Assert.Equal(64, g.GetInt32("llama.embedding_length"));
        Assert.Equal(2048, g.GetInt32("llama.context_length"));
        Assert.Equal(1e-5f, (float)g.GetRealOrNull("llama.attention.layer_norm_rms_epsilon")!.Value);
        Assert.Null(g.GetRealOrNull("llama.rope.freq_base"));
        var emb = g.FindTensor("token_embd.weight")!;
        Assert.Equal([64UL, 512UL], emb.Dims);
        Assert.Equal(512L * 64, emb.ElementCount);
        Assert.Equal(512, g.GetArrayOrNull<string>("tokenizer.ggml.tokens")!.Length);
        Assert.Equal(g.DataOffset + (long)emb.Offset, emb.FileOffset);
    }

    [Fact]
    public void EveryMetadataTypeRoundTrips()
    {
        var w = new GgufWriter()
            .Set("u8", GgufValue.From((byte)200)).Set("i8", GgufValue.From((sbyte)-5))
            .Set("u16", GgufValue.From((ushort)60000)).Set("i16", GgufValue.From((short)-30000))
            .Set("u32", GgufValue.From(4_000_000_000u)).Set("i32", GgufValue.From(-2_000_000_000))
            .Set("f32", GgufValue.From(1.5f)).Set("bool", GgufValue.From(true))
            .Set("str", GgufValue.From("héllo ▁world")).Set("u64", GgufValue.From(ulong.MaxValue))
            .Set("i64", GgufValue.From(long.MinValue)).Set("f64", GgufValue.From(Math.PI))
            .Set("a.str", GgufValue.From(["a", "", "▁b"])).Set("a.f32", GgufValue.From([1f, -2f]))
            .Set("a.i32", GgufValue.From([1, 2, 3])).Set("a.bool", GgufValue.From([true, false]))
            .Set("a.u8", GgufValue.From(new byte[] { 1, 2 })).Set("a.f64", GgufValue.From([0.25]))
            .Set("a.nested", GgufValue.From([GgufValue.From([1, 2]), GgufValue.From(["x"])]))
            .Set("general.alignment", GgufValue.From(64u))
            .AddTensor("t", [1f, 2f, 3f], [3]);
        w.Write(P("types.gguf"));

        using var g = GgufFile.Open(P("types.gguf"));
        Assert.Equal(64, g.Alignment);
        Assert.Equal(0, g.DataOffset % 64);
        Assert.Equal((byte)200, g.Metadata["u8"].Value);
        Assert.Equal((sbyte)-5, g.Metadata["i8"].Value);
        Assert.Equal((ushort)60000, g.Metadata["u16"].Value);
        Assert.Equal((short)-30000, g.Metadata["i16"].Value);
        Assert.Equal(4_000_000_000L, g.GetInteger("u32"));
        Assert.Equal(-2_000_000_000, g.GetInt32("i32"));
        Assert.Equal(1.5, g.GetRealOrNull("f32"));
        Assert.Equal(true, g.Metadata["bool"].Value);
        Assert.Equal("héllo ▁world", g.GetString("str"));
        Assert.Equal(ulong.MaxValue, g.Metadata["u64"].Value);
        Assert.Equal(long.MinValue, g.GetInteger("i64"));
        Assert.Equal(Math.PI, g.GetRealOrNull("f64"));
        Assert.Equal(["a", "", "▁b"], g.GetArrayOrNull<string>("a.str")!);
        Assert.Equal([1f, -2f], g.GetArrayOrNull<float>("a.f32")!);
        Assert.Equal([1, 2, 3], g.GetInt32ArrayOrNull("a.i32")!);
        Assert.Equal([true, false], g.GetArrayOrNull<bool>("a.bool")!);
        Assert.Equal([1, 2], g.GetInt32ArrayOrNull("a.u8")!);
        Assert.Equal([0.25], g.GetArrayOrNull<double>("a.f64")!);
        var nested = g.GetArrayOrNull<GgufValue>("a.nested")!;
        Assert.Equal([1, 2], (int[])nested[0].Value);
        Assert.Equal(["x"], (string[])nested[1].Value);
        Assert.Equal([1f, 2f, 3f], g.ReadTensor("t"));
        Assert.Equal(new[] { "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "u64", "i64", "f64",
            "a.str", "a.f32", "a.i32", "a.bool", "a.u8", "a.f64", "a.nested", "general.alignment" }, g.MetadataKeys.ToArray());

        // Wrong-type access names the key.
        AssertFormatError(() => g.GetString("u8"), P("types.gguf"), "metadata u8", "expected a string");
        AssertFormatError(() => g.GetInt32("u64"), P("types.gguf"), "metadata u64", "expected an integer");
        AssertFormatError(() => g.GetString("absent"), P("types.gguf"), "missing metadata key absent");
    }

    [Fact]
    public void ReadsVersion2()
    {
        new GgufWriter { Version = 2 }.Set("general.architecture", GgufValue.From("llama")).AddTensor("t", [5f], [1]).Write(P("v2.gguf"));
        using var g = GgufFile.Open(P("v2.gguf"));
        Assert.Equal(2u, g.Version);
        Assert.Equal([5f], g.ReadTensor("t"));
    }

    [Fact]
    public void BadMagicIsRefused()
    {
        var bytes = File.ReadAllBytes(RepoPaths.Stories260KGguf);
        "GGML"u8.CopyTo(bytes);
        File.WriteAllBytes(P("magic.gguf"), bytes);
        AssertFormatError(() => GgufFile.Open(P("magic.gguf")), P("magic.gguf"), "bad magic", "\"GGML\"", "not a GGUF file");
        AssertFormatError(() => GgufFormat.Load(P("magic.gguf")), P("magic.gguf"), "bad magic");
    }

    [Fact]
    public void UnsupportedVersionsAreRefused()
    {
        var bytes = File.ReadAllBytes(RepoPaths.Stories260KGguf);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(4), 1);
        File.WriteAllBytes(P("v1.gguf"), bytes);
        AssertFormatError(() => GgufFile.Open(P("v1.gguf")), P("v1.gguf"), "unsupported GGUF version 1");
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(4), 3);
        File.WriteAllBytes(P("be.gguf"), bytes);
        AssertFormatError(() => GgufFile.Open(P("be.gguf")), P("be.gguf"), "big-endian");
    }

    [Theory]
    [InlineData(2)]
    [InlineData(10)]
    [InlineData(100)]
    [InlineData(5000)]
    public void TruncatedHeaderIsRefused(int length)
    {
        File.WriteAllBytes(P("cut.gguf"), File.ReadAllBytes(RepoPaths.Stories260KGguf)[..length]);
        AssertFormatError(() => GgufFile.Open(P("cut.gguf")), P("cut.gguf"), "truncated header");
    }

    [Fact]
    public void TensorDataPastTheEndOfTheFileIsRefused()
    {
        var bytes = File.ReadAllBytes(RepoPaths.Stories260KGguf);
        File.WriteAllBytes(P("short.gguf"), bytes[..(bytes.Length - 100)]);
        var ex = AssertFormatError(() => GgufFile.Open(P("short.gguf")), P("short.gguf"), "runs past the end of the file", $"({bytes.Length - 100} bytes)");
        Assert.Matches(@"tensor [\w.]+ data \(bytes \d+\.\.\d+\)", ex.Message);
        AssertFormatError(() => GgufFormat.Load(P("short.gguf")), P("short.gguf"), "runs past the end of the file");
    }

    [Fact]
    public void TensorOffsetBeyondTheFileIsRefused()
    {
        new GgufWriter().AddTensor("a", [1f, 2f], [2]).Write(P("off.gguf"));
        var bytes = File.ReadAllBytes(P("off.gguf"));
        // The tensor's offset field is the last 8 bytes of the header, just before the padding.
        int infoEnd = 4 + 4 + 8 + 8 + (8 + 1) + 4 + 8 + 4 + 8;
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(infoEnd - 8), 1UL << 40);
        File.WriteAllBytes(P("off.gguf"), bytes);
        AssertFormatError(() => GgufFile.Open(P("off.gguf")), P("off.gguf"), "tensor a data", "runs past the end of the file");
    }

    [Fact]
    public void DimsWhoseProductOverflowsAreRefused()
    {
        new GgufWriter().AddRawTensor("huge", [1UL << 40, 1UL << 40], (uint)GgufTensorType.F32, []).Write(P("dims.gguf"));
        AssertFormatError(() => GgufFile.Open(P("dims.gguf")), P("dims.gguf"), "tensor huge", "overflow");
    }

    [Fact]
    public void QuantizedTensorIsRefusedByNameAndType()
    {
        new GgufWriter().AddRawTensor("blk.0.attn_q.weight", [32], (uint)GgufTensorType.Q4_0, new byte[18]).Write(P("q.gguf"));
        using var g = GgufFile.Open(P("q.gguf")); // opening is fine: metadata of quantized files stays readable
        AssertFormatError(() => g.ReadTensor("blk.0.attn_q.weight"), P("q.gguf"),
            "tensor blk.0.attn_q.weight", "quantized type Q4_0 (2)", "not supported");
        Assert.Equal("type 99", GgufTensorInfo.TypeNameOf(99));
    }

    [Fact]
    public void UnknownAndIntegerTensorTypesAreNamedOnce()
    {
        new GgufWriter()
            .AddRawTensor("odd", [4], 99, new byte[32])
            .AddRawTensor("ints", [4], (uint)GgufTensorType.I32, new byte[16])
            .Write(P("types.gguf"));
        using var g = GgufFile.Open(P("types.gguf"));
        var odd = AssertFormatError(() => g.ReadTensor("odd"), P("types.gguf"), "tensor odd: unknown type 99 is not supported");
        Assert.DoesNotContain("quantized", odd.Message);
        AssertFormatError(() => g.ReadTensor("ints"), P("types.gguf"), "tensor ints: type I32 (26) is not supported");
    }

    [Fact]
    public void HugeArrayCountsAreRefusedBeforeAllocating()
    {
        new GgufWriter().Set("a", GgufValue.From([1, 2, 3])).Write(P("arr.gguf"));
        var bytes = File.ReadAllBytes(P("arr.gguf"));
        // magic, version, counts, key "a" (8+1), value type, element type, then the element count.
        int countAt = 4 + 4 + 8 + 8 + 9 + 4 + 4;
        Assert.Equal(3UL, BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(countAt)));
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(countAt), 1UL << 60);
        File.WriteAllBytes(P("arr.gguf"), bytes);
        AssertFormatError(() => GgufFile.Open(P("arr.gguf")), P("arr.gguf"), "truncated header", "array a claims");
    }

    [Fact]
    public void MisalignedTensorOffsetIsRefused()
    {
        new GgufWriter().AddTensor("a", [1f], [1]).AddTensor("b", [2f], [1]).Write(P("align.gguf"));
        var bytes = File.ReadAllBytes(P("align.gguf"));
        using (var g = GgufFile.Open(P("align.gguf"))) Assert.Equal(32UL, g.FindTensor("b")!.Offset);
        int bOffsetAt = 4 + 4 + 8 + 8 + (9 + 4 + 8 + 4 + 8) + (9 + 4 + 8 + 4);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(bOffsetAt), 4);
        File.WriteAllBytes(P("align.gguf"), bytes);
        AssertFormatError(() => GgufFile.Open(P("align.gguf")), P("align.gguf"), "tensor b offset 4 is not a multiple of the alignment 32");
    }
}
