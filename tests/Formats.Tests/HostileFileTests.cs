using NeuronTrace.Runtime;
using System.Buffers.Binary;
using System.Text;
using NeuronTrace.Model;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.TestSupport;
using Xunit;
using static NeuronTrace.Formats.Tests.FormatTestHelpers;

namespace NeuronTrace.Formats.Tests;

/// <summary>
/// Issue 15's file-level failures, each reproduced on a damaged copy of the bundled stories260K files: GGUF layout
/// checked end to end, tensors that the layer count leaves unused, invalid UTF-8 in JSON, untrusted names escaped.
/// </summary>
public class HostileFileTests
{
    static readonly string Dir = RepoPaths.TempDir("hostile-files");
    static string P(string name) => Path.Combine(Dir, name);
    static byte[] Gguf => File.ReadAllBytes(RepoPaths.Stories260KGguf);

    static long DataOffset() { using var g = GgufFile.Open(RepoPaths.Stories260KGguf); return g.DataOffset; }

    /// <summary>File position of a GGUF tensor's u64 offset field: after its name, dimension count, dims and type.</summary>
    static int OffsetField(byte[] file, string tensor)
    {
        byte[] name = Encoding.UTF8.GetBytes(tensor);
        var prefix = new byte[8 + name.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)name.Length);
        name.CopyTo(prefix, 8);
        int at = file.AsSpan().IndexOf(prefix);
        Assert.True(at > 0, tensor);
        int p = at + prefix.Length;
        uint dims = BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(p));
        return p + 4 + 8 * (int)dims + 4;
    }

    [Fact]
    public void GgufWithBytesInsertedAtTheDataStartIsRefused()
    {
        var b = Gguf.ToList();
        b.InsertRange((int)DataOffset(), new byte[32]);
        File.WriteAllBytes(P("inserted.gguf"), b.ToArray());
        AssertFormatError(() => GgufFile.Open(P("inserted.gguf")), P("inserted.gguf"), "32 bytes after the last tensor");
    }

    [Fact]
    public void GgufWithTrailingJunkIsRefused()
    {
        File.WriteAllBytes(P("junk.gguf"), [.. Gguf, .. new byte[1 << 20]]);
        AssertFormatError(() => GgufFile.Open(P("junk.gguf")), P("junk.gguf"), $"{1 << 20} bytes after the last tensor");
    }

    [Fact]
    public void GgufWithOverlappingTensorsIsRefused()
    {
        var b = Gguf;
        // attn_output and attn_q are both dim x dim: pointing one at the other aliases their data.
        ulong q = BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(OffsetField(b, "blk.0.attn_q.weight")));
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(OffsetField(b, "blk.0.attn_output.weight")), q);
        File.WriteAllBytes(P("overlap.gguf"), b);
        AssertFormatError(() => GgufFile.Open(P("overlap.gguf")), P("overlap.gguf"), "overlaps tensor");
    }

    [Fact]
    public void TheBundledGgufTilesItsDataSection()
    {
        using var g = GgufFile.Open(RepoPaths.Stories260KGguf); // the check accepts a file written by our writer
        Assert.Equal(g.Tensors.Count, g.Tensors.Select(t => t.Offset).Distinct().Count());
    }

    [Fact]
    public void GgufBlockCountBelowTheTensorsIsAnErrorNamingTheUnusedTensors()
    {
        var b = Gguf;
        byte[] key = Encoding.UTF8.GetBytes("llama.block_count");
        int at = b.AsSpan().IndexOf(key) + key.Length;
        Assert.Equal(4u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(at))); // value type uint32
        Assert.Equal(5u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(at + 4)));
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(at + 4), 3);
        File.WriteAllBytes(P("layers.gguf"), b);
        AssertFormatError(() => GgufFormat.Load(P("layers.gguf")), P("layers.gguf"), "not used by a 3-layer llama", "blk.3.");
    }

    [Fact]
    public void HfNumHiddenLayersBelowTheTensorsIsAnErrorNamingTheUnusedTensors()
    {
        string dir = Path.Combine(Dir, "hf-layers");
        HfFolderWriter.Write(Stories, dir, null);
        string config = Path.Combine(dir, "config.json");
        string text = File.ReadAllText(config);
        Assert.Contains("\"num_hidden_layers\": 5", text);
        File.WriteAllText(config, text.Replace("\"num_hidden_layers\": 5", "\"num_hidden_layers\": 3"));
        AssertFormatError(() => HfFolderFormat.Load(dir), dir, "not used by a 3-layer llama", "model.layers.3.");
    }

    [Fact]
    public void LoneSurrogateInConfigJsonIsOneLineNamingTheFile()
    {
        string dir = Path.Combine(Dir, "hf-utf8");
        HfFolderWriter.Write(Stories, dir, null);
        string config = Path.Combine(dir, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"model_type\": \"llama\"", "\"model_type\": \"llama\", \"note\": \"\\ud800\""));
        AssertFormatError(() => HfFolderFormat.Load(dir), config, "invalid UTF-8 or a lone surrogate", "$.note");
    }

    [Fact]
    public void InvalidUtf8BytesInConfigJsonAreOneLineNamingTheFileAndKey()
    {
        string dir = Path.Combine(Dir, "hf-utf8-bytes");
        HfFolderWriter.Write(Stories, dir, null);
        string config = Path.Combine(dir, "config.json");
        var bytes = File.ReadAllBytes(config).ToList();
        bytes.Insert(bytes.IndexOf((byte)'l', bytes.IndexOf((byte)':', Encoding.UTF8.GetString(bytes.ToArray()).IndexOf("\"model_type\"", StringComparison.Ordinal))), 0xFF);
        File.WriteAllBytes(config, bytes.ToArray());
        AssertFormatError(() => HfFolderFormat.Load(dir), config, "invalid UTF-8", "$.model_type");
    }

    [Fact]
    public void AHostileModelTypeIsQuotedEscapedAndCut()
    {
        // Every message that shows text from a file or a user goes through ErrorText.Quote (one rule, no local copies).
        string dir = Path.Combine(Dir, "hf-model-type");
        HfFolderWriter.Write(Stories, dir, null);
        string config = Path.Combine(dir, "config.json");
        string hostile = "\\u001b[2J" + new string('m', 500);
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"model_type\": \"llama\"", $"\"model_type\": \"{hostile}\""));
        var e = Assert.Throws<ModelFormatException>(() => HfFolderFormat.Load(dir));
        Assert.Contains("model_type is \"\\x1b[2Jmmm", e.Message);
        Assert.Contains("(504 characters); only \"llama\" is supported", e.Message);
        Assert.DoesNotContain(e.Message, c => char.IsControl(c));
        Assert.True(e.Message.Length < 400, e.Message);
    }

    [Fact]
    public void HostileNamesOfSitesMethodsAndTemplatesAreQuotedAndCut()
    {
        string hostile = "\u001b]0;owned\u0007" + new string('s', 300);
        foreach (var message in new[]
        {
            Assert.Throws<FormatException>(() => NodeSites.ParseList(hostile)).Message,
            Assert.Throws<FormatException>(() => NodeId.Parse(hostile)).Message,
            Assert.Throws<FormatException>(() => ChatTemplate.Named(hostile)).Message,
        })
        {
            Assert.Contains("\"\\x1b]0;owned\\x07sss", message);
            Assert.Contains("(310 characters)", message);
            Assert.DoesNotContain(message, c => char.IsControl(c));
        }
    }

    [Fact]
    public void InvalidUtf8BytesInASafetensorsHeaderAreOneLineNamingTheFile()
    {
        byte[] header = Encoding.UTF8.GetBytes("""{"__metadata__":{"a":"xx"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""");
        header[Array.IndexOf(header, (byte)'x')] = 0xC3;   // a lead byte followed by 'x': not UTF-8
        var bytes = new byte[8 + header.Length + 8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(P("utf8-bytes.safetensors"), bytes);
        AssertFormatError(() => SafetensorsFile.Open(P("utf8-bytes.safetensors")), P("utf8-bytes.safetensors"), "header: invalid UTF-8");
    }

    [Fact]
    public void LoneSurrogateInASafetensorsHeaderIsOneLineNamingTheFile()
    {
        byte[] header = Encoding.UTF8.GetBytes("""{"__metadata__":{"a":"\ud800"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""");
        var bytes = new byte[8 + header.Length + 8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(P("utf8.safetensors"), bytes);
        AssertFormatError(() => SafetensorsFile.Open(P("utf8.safetensors")), P("utf8.safetensors"), "header: invalid UTF-8", "$.__metadata__.a");
    }

    [Fact]
    public void EmptyTokenizerJsonNamesTheMissingKey()
    {
        File.WriteAllText(P("tokenizer.json"), "{}");
        AssertFormatError(() => Tokenizers.TokenizerFiles.Load(P("tokenizer.json")), P("tokenizer.json"), "has no field \"model\"");
    }

    [Fact]
    public void AHugeGgufKeyGivesAShortPrintableError()
    {
        // A metadata key of 100k bytes of NULs and terminal escapes, with a bogus value type after it.
        var key = Enumerable.Range(0, 100_000).Select(i => (byte)(i % 3 == 0 ? 0x1b : i % 3 == 1 ? 0 : (byte)'[')).ToArray();
        var b = new List<byte>();
        b.AddRange(BitConverter.GetBytes(GgufFile.Magic)); b.AddRange(BitConverter.GetBytes(3u));
        b.AddRange(BitConverter.GetBytes(0UL)); b.AddRange(BitConverter.GetBytes(1UL));
        b.AddRange(BitConverter.GetBytes((ulong)key.Length)); b.AddRange(key); b.AddRange(BitConverter.GetBytes(999u));
        b.AddRange(new byte[64]);
        File.WriteAllBytes(P("key.gguf"), b.ToArray());
        var e = AssertFormatError(() => GgufFile.Open(P("key.gguf")), P("key.gguf"), "unknown value type 999");
        Assert.True(e.Message.Length < 400, e.Message);
        Assert.DoesNotContain(e.Message, c => char.IsControl(c));
    }

    [Theory]
    [InlineData("plain.name_0", "plain.name_0")]
    [InlineData("a b", "\"a b\"")]
    [InlineData("\u001b[31mred\0", "\"\\x1b[31mred\\x00\"")]
    public void ErrorTextEscapesUntrustedNames(string name, string shown) => Assert.Equal(shown, ErrorText.Name(name));

    [Fact]
    public void ErrorTextEscapesALoneSurrogate() => Assert.Equal("\"\\ud800x\"", ErrorText.Name(new string([(char)0xD800, 'x'])));

    [Fact]
    public void ErrorTextCutsLongTextToEightyCharacters()
    {
        string q = ErrorText.Quote(new string('x', 10_000));
        Assert.StartsWith("\"" + new string('x', 80) + "\"…", q);
        Assert.Contains("10000 characters", q);
    }
}
