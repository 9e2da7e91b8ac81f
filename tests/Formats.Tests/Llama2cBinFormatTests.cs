using System.Buffers.Binary;
using NeuronTrace.TestSupport;
using Xunit;
using static NeuronTrace.Formats.Tests.FormatTestHelpers;
using NeuronTrace.Formats;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tests;

public sealed class Llama2cBinFormatTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("bin");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void LoadsStories260KWithItsHeaderConfig()
    {
        var w = Stories;
        var c = w.Config;
        Assert.Equal((64, 172, 5, 8, 4, 512, 512), (c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.VocabSize, c.MaxSeqLen));
        Assert.True(c.TiedEmbeddings);
        Assert.Same(w.TokenEmbedding, w.Classifier);
        Assert.Equal(RopeLayout.Interleaved, c.RopeLayout);
        Assert.Equal((1e-5f, 10000f, 1, 2), (c.NormEps, c.RopeTheta, c.BosId, c.EosId));
        Assert.Null(c.RopeScaling);

        // The first embedding float sits right after the 28-byte header; the final norm right before the RoPE table.
        var bytes = File.ReadAllBytes(RepoPaths.Stories260KBin);
        Assert.Equal(BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(28)), w.TokenEmbedding[0]);
        long finalNorm = 28 + 4L * (264_128 - 2 * 512 * 4 - 64);
        Assert.Equal(BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan((int)finalNorm)), w.FinalNorm[0]);
        Assert.Equal(BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan((int)finalNorm + 63 * 4)), w.FinalNorm[63]);
    }

    [Fact]
    public void WriteReproducesTheOriginalFileByteForByte()
    {
        // The writer recomputes the RoPE table; llama2.c's export wrote the same cos/sin values in float32.
        string path = Path.Combine(_dir, "copy.bin");
        Llama2cBinFormat.Write(Stories, path);
        var original = File.ReadAllBytes(RepoPaths.Stories260KBin);
        var copy = File.ReadAllBytes(path);
        Assert.Equal(original.Length, copy.Length);
        int tableStart = 28 + 4 * (264_128 - 2 * 512 * 4);
        Assert.True(original.AsSpan(0, tableStart).SequenceEqual(copy.AsSpan(0, tableStart)));
        // The table may differ in the last bit of a few entries (float64 vs float32 trigonometry): compare as floats.
        for (int i = tableStart; i < original.Length; i += 4)
            Assert.Equal(BinaryPrimitives.ReadSingleLittleEndian(original.AsSpan(i)), BinaryPrimitives.ReadSingleLittleEndian(copy.AsSpan(i)), 1e-5f);
    }

    [Fact]
    public void UntiedModelRoundTripsWithANegativeVocabSize()
    {
        var s = Stories;
        var untiedClassifier = s.TokenEmbedding.ToFloats().Select(x => x * 0.5f + 1f).ToArray();
        var untied = new LlamaWeights
        {
            Config = s.Config with { TiedEmbeddings = false },
            TokenEmbedding = s.TokenEmbedding, FinalNorm = s.FinalNorm, Layers = s.Layers, Classifier = untiedClassifier,
        };
        string path = Path.Combine(_dir, "untied.bin");
        Llama2cBinFormat.Write(untied, path);

        Assert.Equal(-512, BinaryPrimitives.ReadInt32LittleEndian(File.ReadAllBytes(path).AsSpan(20)));
        Assert.Equal(new FileInfo(RepoPaths.Stories260KBin).Length + 512 * 64 * 4, new FileInfo(path).Length);
        var back = Llama2cBinFormat.Load(path);
        Assert.False(back.Config.TiedEmbeddings);
        Assert.Equal(512, back.Config.VocabSize);
        Assert.NotSame(back.TokenEmbedding, back.Classifier);
        AssertSameArrays(untied, back);
    }

    [Fact]
    public void WritingRotateHalfWeightsStoresThemInterleaved()
    {
        string path = Path.Combine(_dir, "from-hf.bin");
        Llama2cBinFormat.Write(QkPermutation.ToLayout(Stories, RopeLayout.RotateHalf), path);
        AssertSameArrays(Stories, Llama2cBinFormat.Load(path));
    }

    [Fact]
    public void TruncatedFileIsReportedWithBothSizes()
    {
        string path = Path.Combine(_dir, "short.bin");
        File.WriteAllBytes(path, File.ReadAllBytes(RepoPaths.Stories260KBin)[..1_000_000]);
        AssertFormatError(() => Llama2cBinFormat.Load(path), path, "truncated: 1000000 bytes, expected 1056540");
    }

    [Fact]
    public void FileShorterThanTheHeaderIsTruncated()
    {
        string path = Path.Combine(_dir, "tiny.bin");
        File.WriteAllBytes(path, new byte[10]);
        AssertFormatError(() => Llama2cBinFormat.Load(path), path, "truncated: 10 bytes");
        File.WriteAllBytes(path, []);   // refused before it is opened: empty looks like a FIFO or device to stat
        AssertFormatError(() => Llama2cBinFormat.Load(path), path, "is empty or not a regular file");
    }

    [Fact]
    public void ExtraClassifierWithAPositiveVocabIsExplained()
    {
        string path = Path.Combine(_dir, "long.bin");
        var bytes = File.ReadAllBytes(RepoPaths.Stories260KBin);
        File.WriteAllBytes(path, [.. bytes, .. new byte[512 * 64 * 4]]);
        AssertFormatError(() => Llama2cBinFormat.Load(path), path, "expected 1056540", "131072 unexpected trailing bytes", "negative vocab_size");
        File.WriteAllBytes(path, [.. bytes, 1, 2, 3]);
        AssertFormatError(() => Llama2cBinFormat.Load(path), path, "3 unexpected trailing bytes");
    }

    [Fact]
    public void BadHeadersAreRefused()
    {
        string path = Path.Combine(_dir, "bad.bin");
        var bytes = File.ReadAllBytes(RepoPaths.Stories260KBin);

        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(12), 7); // 7 heads do not divide dim 64
        File.WriteAllBytes(path, bytes);
        AssertFormatError(() => Llama2cBinFormat.Load(path), path, "dim 64 is not a multiple of heads 7");

        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(12), 8);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(0), 1 << 30); // absurd dim: no overflow, a clear refusal
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8), 1 << 30);
        File.WriteAllBytes(path, bytes);
        AssertFormatError(() => Llama2cBinFormat.Load(path), path, "impossibly large");

        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(0), 0x616b3432);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4), 2);
        File.WriteAllBytes(path, bytes);
        AssertFormatError(() => Llama2cBinFormat.Load(path), path, "version 2", "not supported");
    }

    [Fact]
    public void MissingFileIsAFormatError() =>
        AssertFormatError(() => Llama2cBinFormat.Load(Path.Combine(_dir, "nope.bin")), Path.Combine(_dir, "nope.bin"), "file not found");

    [Fact]
    public void WriterRefusesSettingsTheFormatCannotRecord()
    {
        var s = Stories;
        var w = new LlamaWeights
        {
            Config = s.Config with { RopeTheta = 500000f },
            TokenEmbedding = s.TokenEmbedding, FinalNorm = s.FinalNorm, Layers = s.Layers, Classifier = s.Classifier,
        };
        string path = Path.Combine(_dir, "theta.bin");
        Assert.Throws<NotSupportedException>(() => Llama2cBinFormat.Write(w, path));
        Assert.Empty(Directory.GetFiles(_dir)); // nothing half-written
    }
}
