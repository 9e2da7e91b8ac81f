using NeuronTrace.TestSupport;
using Xunit;
using static NeuronTrace.Formats.Tests.FormatTestHelpers;
using NeuronTrace.Formats;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tests;

public sealed class GgufFormatTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("ggufmodel");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string P(string name) => Path.Combine(_dir, name);

    static bool IsMatrix(string name) => !name.Contains("norm");

    [Fact]
    public void EveryTensorEqualsTheBinBitForBit()
    {
        var (w, _) = GgufFormat.Load(RepoPaths.Stories260KGguf);
        var c = w.Config;
        Assert.Equal((64, 172, 5, 8, 4, 512, 2048), (c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.VocabSize, c.MaxSeqLen));
        Assert.Equal(RopeLayout.Interleaved, c.RopeLayout);
        Assert.Equal((1e-5f, 10000f, 1, 2), (c.NormEps, c.RopeTheta, c.BosId, c.EosId));
        Assert.False(c.TiedEmbeddings); // the file has an explicit output.weight (a copy of the embedding)
        AssertSameArrays(Stories, w);
    }

    [Fact]
    public void ReadsTheVocabulary()
    {
        var (_, v) = GgufFormat.Load(RepoPaths.Stories260KGguf);
        Assert.NotNull(v);
        Assert.Equal("llama", v.Model);
        Assert.Equal(512, v.Pieces.Length);
        Assert.Equal((1, 2, 0), (v.BosId, v.EosId, v.UnkId));
        Assert.Equal("<unk>", v.Pieces[0]);
        Assert.Equal("<0x00>", v.Pieces[3]);
        Assert.Equal([2, 3, 3, 6], v.TokenTypes[..4]);
        Assert.Equal(1, v.TokenTypes[259]);
        Assert.Equal(0f, v.Scores[259]);
        Assert.Equal(-(511 - 259), v.Scores[511]);
        Assert.Equal("▁Once", v.Pieces[403]);
        Assert.Null(v.Merges);
    }

    [Theory]
    [InlineData(nameof(GgufTensorType.F16))]
    [InlineData(nameof(GgufTensorType.BF16))]
    public void SixteenBitVariantsLoadWithinTheFormatsRounding(string typeName) // by name: GgufTensorType is internal
    {
        var type = Enum.Parse<GgufTensorType>(typeName);
        var (original, vocab) = GgufFormat.Load(RepoPaths.Stories260KGguf);
        string path = P($"stories260K.{type}.gguf");
        GgufFormat.Write(original, path, type, vocab);
        Assert.True(new FileInfo(path).Length < new FileInfo(RepoPaths.Stories260KGguf).Length * 0.6);

        using (var g = GgufFile.Open(path))
        {
            Assert.Equal((uint)type, g.FindTensor("blk.0.attn_q.weight")!.TypeId);
            Assert.Equal((uint)GgufTensorType.F32, g.FindTensor("blk.0.attn_norm.weight")!.TypeId);
        }
        var (back, vocabBack) = GgufFormat.Load(path);
        Func<float, float> round = type == GgufTensorType.F16
            ? x => (float)(Half)x
            : x => Float16.Bf16ToFloat(Float16.FloatToBf16(x));
        // Matrices are rounded exactly as the conversion helper rounds; norms stay F32.
        AssertSameArrays(original, back, round, IsMatrix);
        float tolerance = type == GgufTensorType.F16 ? 1f / 2048 : 1f / 256; // half an ulp, relative
        foreach (var ((name, a), (_, b)) in Arrays(original).Zip(Arrays(back)))
            for (int i = 0; i < a.Length; i++)
                if (!(Math.Abs(a[i] - b[i]) <= tolerance * Math.Abs(a[i]) + 1e-7f))
                    Assert.Fail($"{name}[{i}]: {a[i]} vs {b[i]}");
        Assert.Equal(original.Config, back.Config);
        Assert.Equal(vocab!.Pieces, vocabBack!.Pieces);
        Assert.Equal(vocab.Scores, vocabBack.Scores);
        Assert.Equal(vocab.TokenTypes, vocabBack.TokenTypes);
    }

    [Fact]
    public void TiedWeightsAreWrittenWithoutOutputAndLoadTied()
    {
        Assert.True(Stories.Config.TiedEmbeddings);
        GgufFormat.Write(Stories, P("tied.gguf"));
        using (var g = GgufFile.Open(P("tied.gguf"))) Assert.Null(g.FindTensor("output.weight"));
        var (w, v) = GgufFormat.Load(P("tied.gguf"));
        Assert.Null(v);
        Assert.True(w.Config.TiedEmbeddings);
        Assert.Same(w.TokenEmbedding, w.Classifier);
        Assert.Equal(Stories.Config with { MaxSeqLen = 512 }, w.Config);
        AssertSameArrays(Stories, w);
    }

    [Fact]
    public void RotateHalfWeightsAreWrittenInterleaved()
    {
        GgufFormat.Write(QkPermutation.ToLayout(Stories, RopeLayout.RotateHalf), P("hf.gguf"));
        AssertSameArrays(Stories, GgufFormat.Load(P("hf.gguf")).Weights);
    }

    [Fact]
    public void Llama3RopeScalingRoundTripsThroughRopeFreqs()
    {
        var s = Stories;
        var scaling = new Llama3RopeScaling(8f, 1f, 4f, 8192);
        var w = new LlamaWeights
        {
            Config = s.Config with { RopeTheta = 500000f, RopeScaling = scaling },
            TokenEmbedding = s.TokenEmbedding, FinalNorm = s.FinalNorm, Layers = s.Layers, Classifier = s.Classifier,
        };
        GgufFormat.Write(w, P("llama3.gguf"));
        using (var g = GgufFile.Open(P("llama3.gguf")))
            Assert.Equal(GgufFormat.Llama3FrequencyFactors(scaling, 8, 500000), g.ReadTensor("rope_freqs.weight"));
        var back = GgufFormat.Load(P("llama3.gguf")).Weights;
        Assert.Equal(scaling, back.Config.RopeScaling);
        Assert.Equal(500000f, back.Config.RopeTheta);

        // Theta 10000 with head size 8 keeps the lowest frequency inside the blend band: the factor is solved from it.
        var w2 = new LlamaWeights { Config = s.Config with { RopeScaling = scaling }, TokenEmbedding = s.TokenEmbedding, FinalNorm = s.FinalNorm, Layers = s.Layers, Classifier = s.Classifier };
        GgufFormat.Write(w2, P("blend.gguf"));
        var back2 = GgufFormat.Load(P("blend.gguf")).Weights.Config.RopeScaling!;
        Assert.Equal(8f, back2.Factor, 1e-3f);
    }

    [Fact]
    public void UnrecognisedRopeFreqsAreRefused()
    {
        CopyGguf(RepoPaths.Stories260KGguf, P("freqs.gguf"), (t, data, w) =>
        {
            if (t.Name == "output.weight") w.AddTensor("rope_freqs.weight", [1f, 2f, 3f, 4f], [4]);
            return false;
        });
        AssertFormatError(() => GgufFormat.Load(P("freqs.gguf")), P("freqs.gguf"), "rope_freqs.weight", "is not Llama 3 RoPE scaling");
    }

    [Fact]
    public void QuantizedModelTensorIsRefusedByNameAndType()
    {
        CopyGguf(RepoPaths.Stories260KGguf, P("q4.gguf"), (t, data, w) =>
        {
            if (t.Name != "blk.0.attn_q.weight") return false;
            w.AddRawTensor(t.Name, t.Dims, (uint)GgufTensorType.Q4_0, new byte[64 * 64 / 32 * 18]);
            return true;
        });
        AssertFormatError(() => GgufFormat.Load(P("q4.gguf")), P("q4.gguf"),
            "tensor blk.0.attn_q.weight", "quantized type Q4_0 (2) is not supported");
    }

    [Fact]
    public void MissingOrMisshapenTensorsAreRefused()
    {
        CopyGguf(RepoPaths.Stories260KGguf, P("missing.gguf"), (t, _, _) => t.Name == "blk.3.ffn_up.weight");
        AssertFormatError(() => GgufFormat.Load(P("missing.gguf")), P("missing.gguf"), "tensor blk.3.ffn_up.weight is missing");

        CopyGguf(RepoPaths.Stories260KGguf, P("shape.gguf"), (t, data, w) =>
        {
            if (t.Name != "blk.1.attn_k.weight") return false;
            w.AddTensor(t.Name, data, [32, 64]); // transposed
            return true;
        });
        AssertFormatError(() => GgufFormat.Load(P("shape.gguf")), P("shape.gguf"), "tensor blk.1.attn_k.weight has dims [32, 64], expected [64, 32]");
    }

    [Fact]
    public void OtherArchitecturesAndMissingKeysAreRefused()
    {
        CopyGguf(RepoPaths.Stories260KGguf, P("qwen.gguf"), (_, _, w) => { w.Set("general.architecture", GgufValue.From("qwen2")); return false; });
        AssertFormatError(() => GgufFormat.Load(P("qwen.gguf")), P("qwen.gguf"), "general.architecture is \"qwen2\"");

        using (var g = GgufFile.Open(RepoPaths.Stories260KGguf))
        {
            var w = new GgufWriter();
            foreach (var k in g.MetadataKeys.Where(k => k != "llama.block_count")) w.Set(k, g.Metadata[k]);
            w.Write(P("nokey.gguf"));
        }
        AssertFormatError(() => GgufFormat.Load(P("nokey.gguf")), P("nokey.gguf"), "missing metadata key llama.block_count");

        CopyGguf(RepoPaths.Stories260KGguf, P("moe.gguf"), (_, _, w) => { w.Set("llama.expert_count", GgufValue.From(8u)); return false; });
        AssertFormatError(() => GgufFormat.Load(P("moe.gguf")), P("moe.gguf"), "mixture-of-experts");
    }
}
