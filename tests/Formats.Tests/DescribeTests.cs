using NeuronTrace.TestSupport;
using static NeuronTrace.Formats.Tests.FormatTestHelpers;
using NeuronTrace.Formats;

namespace NeuronTrace.Formats.Tests;

/// <summary>
/// <see cref="ModelLoader.Describe"/> (<c>info</c>, <c>plan</c>) reads headers only: the llama2.c header is exactly the
/// bytes read (counted through the stream), and a GGUF file describes from its metadata and tensor table whatever its
/// tensor bytes hold (a load of the same file reads them and refuses them). Each description equals what a full load reports.
/// </summary>
public sealed class DescribeTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("describe");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Llama2cConfigComesFromTheHeaderAlone()
    {
        using var fs = File.OpenRead(RepoPaths.Stories260KBin);
        var counting = new CountingStream(fs);
        var config = Llama2cBinFormat.ReadConfig(counting, RepoPaths.Stories260KBin);
        Assert.Equal(Llama2cBinFormat.HeaderBytes, counting.BytesRead);
        Assert.True(fs.Length > 1000 * counting.BytesRead);
        Assert.Equal(ModelLoader.Load(RepoPaths.Stories260KBin).Config, config);

        var described = ModelLoader.Describe(RepoPaths.Stories260KBin);
        Assert.Equal(("llama2.c", config), (described.Format, described.Config));
        Assert.Equal(512, described.Tokenizer!.VocabSize);
    }

    [Fact]
    public void Llama2cSizeIsStillCheckedAgainstTheHeader()
    {
        // The header alone says how long the file must be: a truncated file fails as it does at load, in one line.
        string cut = Path.Combine(_dir, "cut.bin");
        var bytes = File.ReadAllBytes(RepoPaths.Stories260KBin);
        File.WriteAllBytes(cut, bytes.AsSpan(0, bytes.Length - 4).ToArray());
        var atLoad = AssertFormatError(() => ModelLoader.Load(cut), cut, "truncated");
        var atDescribe = AssertFormatError(() => ModelLoader.Describe(cut), cut, "truncated");
        Assert.Equal(atLoad.Message, atDescribe.Message);
        File.WriteAllBytes(cut, bytes.AsSpan(0, 20).ToArray());
        AssertFormatError(() => ModelLoader.Describe(cut), cut, "truncated", "28-byte header");
    }

    [Fact]
    public void GgufDescribesFromItsHeaderWhateverItsTensorsHold()
    {
        var loaded = ModelLoader.Load(RepoPaths.Stories260KGguf);
        var described = ModelLoader.Describe(RepoPaths.Stories260KGguf);
        Assert.Equal(("gguf", loaded.Config), (described.Format, described.Config));
        Assert.Equal(loaded.Tokenizer!.VocabSize, described.Tokenizer!.VocabSize);

        // Every tensor byte overwritten (0xFF: NaN in F32 and F16): the description is unchanged, the weights are not.
        string scrambled = Path.Combine(_dir, "scrambled.gguf");
        File.Copy(RepoPaths.Stories260KGguf, scrambled);
        long dataOffset;
        using (var g = GgufFile.Open(scrambled)) dataOffset = g.DataOffset;
        using (var fs = new FileStream(scrambled, FileMode.Open, FileAccess.ReadWrite))
        {
            Assert.True(fs.Length - dataOffset > 10 * dataOffset, "the tensor data must dwarf the header");
            fs.Position = dataOffset;
            var ones = new byte[fs.Length - dataOffset];
            Array.Fill(ones, (byte)0xFF);
            fs.Write(ones);
        }
        var scrambledDescription = ModelLoader.Describe(scrambled);
        Assert.Equal(described.Config, scrambledDescription.Config);
        Assert.Equal(described.Tokenizer.VocabSize, scrambledDescription.Tokenizer!.VocabSize);
        // A load reads the tensors, and refuses them.
        AssertFormatError(() => ModelLoader.Load(scrambled), scrambled, "non-finite");
        GC.Collect(); GC.WaitForPendingFinalizers();   // mapped weights hold the file until finalized
    }

    /// <summary>A read-only stream that counts the bytes read through it.</summary>
    sealed class CountingStream(Stream inner) : Stream
    {
        public long BytesRead { get; private set; }
        public override bool CanRead => true;
        public override bool CanSeek => inner.CanSeek;
        public override bool CanWrite => false;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => inner.Position = value; }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));
        public override int Read(Span<byte> buffer) => Count(inner.Read(buffer));
        public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        int Count(int n) { BytesRead += n; return n; }
    }
}
