using System.Buffers.Binary;
using System.Text;
using NeuronTrace.TestSupport;
using Xunit;
using static NeuronTrace.Formats.Tests.FormatTestHelpers;
using NeuronTrace.Formats;

namespace NeuronTrace.Formats.Tests;

public sealed class SafetensorsFileTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("safetensors");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string P(string name) => Path.Combine(_dir, name);

    /// <summary>A hand-made file: 8-byte length, the JSON text as given, then the data bytes.</summary>
    static void WriteRaw(string path, string json, byte[] data)
    {
        var header = Encoding.UTF8.GetBytes(json);
        var bytes = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        File.WriteAllBytes(path, bytes);
    }

    [Fact]
    public void WriterOutputReadsBackInEveryFloatType()
    {
        float[] a = [1f, -2.5f, 3.25f, 1e-3f, 70000f, 0f];
        new SafetensorsWriter()
            .Add("f32", a, [2, 3])
            .Add("f16", a, [6], FloatEncoding.F16)
            .Add("bf16", a, [3, 2], FloatEncoding.BF16)
            .Write(P("t.safetensors"));

        var bytes = File.ReadAllBytes(P("t.safetensors"));
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, (8 + headerLength) % 8);

        using var f = SafetensorsFile.Open(P("t.safetensors"));
        Assert.Equal("pt", f.Metadata["format"]);
        Assert.Equal(3, f.Tensors.Count);
        Assert.Equal([2L, 3L], f.Tensors["f32"].Shape);
        Assert.Equal("BF16", f.Tensors["bf16"].DType);
        Assert.Equal(a, f.ReadTensor("f32"));
        Assert.Equal(a.Select(x => (float)(Half)x), f.ReadTensor("f16"));
        Assert.Equal(a.Select(x => Float16.Bf16ToFloat(Float16.FloatToBf16(x))), f.ReadTensor("bf16"));
        Assert.Equal(24 + 12 + 12, f.DataLength);
    }

    [Fact]
    public void HeaderThatLiesAboutOffsetsIsRefused()
    {
        WriteRaw(P("lie.safetensors"), """{"w":{"dtype":"F32","shape":[250],"data_offsets":[0,1000]}}""", new byte[16]);
        AssertFormatError(() => SafetensorsFile.Open(P("lie.safetensors")), P("lie.safetensors"),
            "header says tensor w spans bytes 0..1000 but the data section has 16 bytes");
    }

    [Fact]
    public void OffsetsThatDisagreeWithTheShapeAreRefused()
    {
        WriteRaw(P("size.safetensors"), """{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}""", new byte[16]);
        AssertFormatError(() => SafetensorsFile.Open(P("size.safetensors")), P("size.safetensors"),
            "tensor w spans bytes 0..12 (12 bytes) but F32 [2, 2] needs 16");

        WriteRaw(P("rev.safetensors"), """{"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}""", new byte[16]);
        AssertFormatError(() => SafetensorsFile.Open(P("rev.safetensors")), P("rev.safetensors"), "spans bytes 8..4");
    }

    [Theory]
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":["0","8"]}}""", "header entry for tensor w has bad data_offsets [\"0\",\"8\"]")]
    [InlineData("""{"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}""", "header entry for tensor w has a bad dimension \"2\" in its shape")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}}""", "header entry for tensor w has bad data_offsets [0,8.5]")]
    [InlineData("""{"w":{"dtype":"F32","shape":[null],"data_offsets":[0,8]}}""", "header entry for tensor w has a bad dimension null in its shape")]
    public void NonNumericShapesAndOffsetsAreFormatErrors(string header, string message)
    {
        WriteRaw(P("str.safetensors"), header, new byte[8]);
        AssertFormatError(() => SafetensorsFile.Open(P("str.safetensors")), P("str.safetensors"), message);
    }

    [Fact]
    public void TensorsMustTileTheDataSectionExactly()
    {
        // Two tensors pointing at the same bytes: the header is the only thing that lies.
        WriteRaw(P("overlap.safetensors"), """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", new byte[12]);
        AssertFormatError(() => SafetensorsFile.Open(P("overlap.safetensors")), P("overlap.safetensors"),
            "tensor b starts at byte 4, inside tensor a (bytes 0..8)");
        WriteRaw(P("same.safetensors"), """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", new byte[8]);
        AssertFormatError(() => SafetensorsFile.Open(P("same.safetensors")), P("same.safetensors"), "starts at byte 0, inside tensor");

        WriteRaw(P("gap.safetensors"), """{"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", new byte[12]);
        AssertFormatError(() => SafetensorsFile.Open(P("gap.safetensors")), P("gap.safetensors"), "leaves bytes 4..8 unused between tensors a and b");

        WriteRaw(P("start.safetensors"), """{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", new byte[8]);
        AssertFormatError(() => SafetensorsFile.Open(P("start.safetensors")), P("start.safetensors"), "the first tensor, a, starts at byte 4");

        WriteRaw(P("tail.safetensors"), """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", new byte[11]);
        AssertFormatError(() => SafetensorsFile.Open(P("tail.safetensors")), P("tail.safetensors"), "3 bytes after the last tensor, b (ends at byte 8 of 11)");

        WriteRaw(P("none.safetensors"), """{"__metadata__":{"format":"pt"}}""", new byte[4]);
        AssertFormatError(() => SafetensorsFile.Open(P("none.safetensors")), P("none.safetensors"), "lists no tensors but the data section has 4 bytes");

        // Listed out of order, with an empty tensor between two others: still an exact tiling, so it opens.
        WriteRaw(P("ok.safetensors"), """{"z":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""",
            [0, 0, 0x80, 0x3F, 0, 0, 0, 0x40]);
        using var f = SafetensorsFile.Open(P("ok.safetensors"));
        Assert.Equal([1f], f.ReadTensor("a"));
        Assert.Equal([2f], f.ReadTensor("z"));
        Assert.Empty(f.ReadTensor("e"));
    }

    [Fact]
    public void OurWriterLeavesNoGapsSoItsFilesPassTheTilingCheck()
    {
        // Mixed element sizes, an odd byte count and an empty tensor: the writer packs them back to back, no padding.
        new SafetensorsWriter()
            .Add("f16", [1f, 2f, 3f], [3], FloatEncoding.F16)
            .Add("empty", [], [0, 4])
            .Add("f32", [4f, 5f], [2])
            .AddRaw("u8", "U8", [3], [7, 8, 9])
            .Write(P("packed.safetensors"));
        using var f = SafetensorsFile.Open(P("packed.safetensors"));
        Assert.Equal([(0L, 6L), (6L, 6L), (6L, 14L), (14L, 17L)],
            new[] { "f16", "empty", "f32", "u8" }.Select(n => (f.Tensors[n].Begin, f.Tensors[n].End)));
        Assert.Equal(17, f.DataLength);
        Assert.Equal([4f, 5f], f.ReadTensor("f32"));
    }

    [Theory]
    [InlineData("I8", 1)]
    [InlineData("F64", 8)]
    [InlineData("F8_E4M3", 1)]
    public void UnsupportedDTypesAreRefusedByNameAndDType(string dtype, int size)
    {
        WriteRaw(P("d.safetensors"), $$$"""{"__metadata__":{"format":"pt"},"q":{"dtype":"{{{dtype}}}","shape":[4],"data_offsets":[0,{{{4 * size}}}]}}""", new byte[4 * size]);
        using var f = SafetensorsFile.Open(P("d.safetensors"));
        AssertFormatError(() => f.ReadTensor("q"), P("d.safetensors"), $"tensor q: dtype {dtype} is not supported");
    }

    [Fact]
    public void MalformedHeadersAreRefused()
    {
        File.WriteAllBytes(P("short.safetensors"), new byte[5]);
        AssertFormatError(() => SafetensorsFile.Open(P("short.safetensors")), P("short.safetensors"), "truncated");

        var bytes = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 1000);
        File.WriteAllBytes(P("len.safetensors"), bytes);
        AssertFormatError(() => SafetensorsFile.Open(P("len.safetensors")), P("len.safetensors"), "header length 1000");

        WriteRaw(P("json.safetensors"), "{not json", []);
        AssertFormatError(() => SafetensorsFile.Open(P("json.safetensors")), P("json.safetensors"), "header is not valid JSON");

        WriteRaw(P("noshape.safetensors"), """{"w":{"dtype":"F32","data_offsets":[0,4]}}""", new byte[4]);
        AssertFormatError(() => SafetensorsFile.Open(P("noshape.safetensors")), P("noshape.safetensors"), "tensor w", "\"shape\"");

        WriteRaw(P("neg.safetensors"), """{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", new byte[4]);
        AssertFormatError(() => SafetensorsFile.Open(P("neg.safetensors")), P("neg.safetensors"), "tensor w", "bad dimension -1");

        WriteRaw(P("dup.safetensors"), """{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", new byte[4]);
        AssertFormatError(() => SafetensorsFile.Open(P("dup.safetensors")), P("dup.safetensors"), "tensor w twice");
    }
}
