using System.Text.Json;
using System.Text.Json.Nodes;
using NeuronTrace.TestSupport;
using Xunit;
using static NeuronTrace.Formats.Tests.FormatTestHelpers;
using NeuronTrace.Formats;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tests;

public sealed class HfFolderTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("hf");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string P(string name) => Path.Combine(_dir, name);

    [Fact]
    public void RoundTripPermutesQkAndUnpermutesExactly()
    {
        string dir = P("stories260K-hf");
        HfFolderWriter.Write(Stories, dir, RepoPaths.Tok512);

        Assert.True(File.ReadAllBytes(RepoPaths.Tok512).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir, "tok512.bin"))));
        Assert.True(File.Exists(Path.Combine(dir, "model.safetensors")));
        Assert.DoesNotContain(Directory.GetFileSystemEntries(_dir), e => Path.GetFileName(e).StartsWith('.')); // no temp left

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
        Assert.Equal("LlamaForCausalLM", (string)config["architectures"]![0]!);
        Assert.Equal(64, (int)config["hidden_size"]!);
        Assert.Equal(1e-5, (double)config["rms_norm_eps"]!);
        Assert.True((bool)config["tie_word_embeddings"]!);
        Assert.Equal("float32", (string)config["torch_dtype"]!);

        using (var st = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors")))
        {
            Assert.Null(st.Find("lm_head.weight"));
            Assert.Equal([32L, 64L], st.Find("model.layers.0.self_attn.k_proj.weight")!.Shape);
            Assert.Equal([64L, 172L], st.Find("model.layers.0.mlp.down_proj.weight")!.Shape);
        }

        var hf = HfFolderFormat.Load(dir);
        Assert.Equal(RopeLayout.RotateHalf, hf.Config.RopeLayout);
        Assert.Equal(Stories.Config with { RopeLayout = RopeLayout.RotateHalf }, hf.Config);
        Assert.Same(hf.TokenEmbedding, hf.Classifier);
        // Q/K really were permuted on the way out (so the test can tell layouts apart) ...
        Assert.False(BitEqual(Stories.Layers[0].Wq, hf.Layers[0].Wq));
        Assert.False(BitEqual(Stories.Layers[0].Wk, hf.Layers[0].Wk));
        Assert.True(BitEqual(QkPermutation.ToRotateHalf(Stories.Layers[2].Wk, 4, 32, 64), hf.Layers[2].Wk));
        // ... and un-permuting gives back the .bin weights exactly.
        AssertSameArrays(Stories, QkPermutation.ToLayout(hf, RopeLayout.Interleaved));
    }

    [Fact]
    public void RotateHalfWeightsAreWrittenAsTheyAre()
    {
        var hf = QkPermutation.ToLayout(Stories, RopeLayout.RotateHalf);
        HfFolderWriter.Write(hf, P("again"), null);
        AssertSameArrays(hf, HfFolderFormat.Load(P("again")));
    }

    [Fact]
    public void ShardedBf16FolderLoads()
    {
        string dir = P("sharded");
        HfFolderWriter.Write(Stories, dir, null, FloatEncoding.BF16, shards: 3);

        var shards = Directory.GetFiles(dir, "*.safetensors").Select(f => Path.GetFileName(f)).Order().ToArray();
        Assert.Equal(["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"], shards);
        Assert.False(File.Exists(Path.Combine(dir, "model.safetensors")));
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "model.safetensors.index.json")))!;
        var map = index["weight_map"]!.AsObject();
        Assert.Equal(2 + 5 * 9, map.Count);
        Assert.Equal(3, map.Select(kv => (string)kv.Value!).Distinct().Count());
        Assert.Equal(264_128L - 4096, (long)index["metadata"]!["total_size"]! / 2);
        Assert.Equal("bfloat16", (string)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!["torch_dtype"]!);

        var back = QkPermutation.ToLayout(HfFolderFormat.Load(dir), RopeLayout.Interleaved);
        AssertSameArrays(Stories, back, x => Float16.Bf16ToFloat(Float16.FloatToBf16(x)));
    }

    [Fact]
    public void ShardedF16UntiedFolderLoads()
    {
        var s = Stories;
        var untied = new LlamaWeights
        {
            Config = s.Config with { TiedEmbeddings = false },
            TokenEmbedding = s.TokenEmbedding, FinalNorm = s.FinalNorm, Layers = s.Layers,
            Classifier = s.TokenEmbedding.ToFloats().Select(x => -x).ToArray(),
        };
        HfFolderWriter.Write(untied, P("f16"), null, FloatEncoding.F16, shards: 2);
        var back = HfFolderFormat.Load(P("f16"));
        Assert.False(back.Config.TiedEmbeddings);
        AssertSameArrays(untied, QkPermutation.ToLayout(back, RopeLayout.Interleaved), x => (float)(Half)x);
    }

    [Fact]
    public void Llama3RopeScalingIsParsedFromAHandWrittenConfig()
    {
        string path = P("config.json");
        File.WriteAllText(path, """
            {
              "architectures": ["LlamaForCausalLM"],
              "model_type": "llama",
              "hidden_size": 2048,
              "intermediate_size": 8192,
              "num_hidden_layers": 16,
              "num_attention_heads": 32,
              "num_key_value_heads": 8,
              "head_dim": 64,
              "vocab_size": 128256,
              "max_position_embeddings": 131072,
              "rms_norm_eps": 1e-05,
              "rope_theta": 500000.0,
              "rope_scaling": {
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3"
              },
              "tie_word_embeddings": true,
              "bos_token_id": 128000,
              "eos_token_id": [128001, 128008, 128009],
              "hidden_act": "silu",
              "torch_dtype": "bfloat16"
            }
            """);
        var c = HfConfig.Load(path);
        Assert.Equal(new Llama3RopeScaling(32f, 1f, 4f, 8192), c.RopeScaling);
        Assert.Equal((2048, 8192, 16, 32, 8, 128256, 131072), (c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.VocabSize, c.MaxSeqLen));
        Assert.Equal((1e-5f, 500000f, true, 128000, 128001), (c.NormEps, c.RopeTheta, c.TiedEmbeddings, c.BosId, c.EosId));
        Assert.Equal(RopeLayout.RotateHalf, c.RopeLayout);

        // Writing it back keeps every field.
        HfConfig.Write(c, P("written.json"), FloatEncoding.BF16);
        Assert.Equal(c, HfConfig.Load(P("written.json")));
    }

    [Fact]
    public void DefaultsApplyToOptionalFields()
    {
        string path = P("config.json");
        File.WriteAllText(path, """{"hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,"num_attention_heads":8,"vocab_size":512,"max_position_embeddings":512,"rms_norm_eps":1e-5,"rope_scaling":null,"bos_token_id":null}""");
        var c = HfConfig.Load(path);
        Assert.Equal(8, c.KvHeads);
        Assert.Equal(10000f, c.RopeTheta);
        Assert.False(c.TiedEmbeddings);
        Assert.Null(c.RopeScaling);
        Assert.Equal((1, 2), (c.BosId, c.EosId));
    }

    [Theory]
    [InlineData("hidden_size", "missing field \"hidden_size\"")]
    [InlineData("intermediate_size", "missing field \"intermediate_size\"")]
    [InlineData("vocab_size", "missing field \"vocab_size\"")]
    [InlineData("rms_norm_eps", "missing field \"rms_norm_eps\"")]
    public void MissingConfigFieldIsNamed(string field, string message)
    {
        string dir = P("missing");
        HfFolderWriter.Write(Stories, dir, null);
        string cfg = Path.Combine(dir, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(cfg))!.AsObject();
        json.Remove(field);
        File.WriteAllText(cfg, json.ToJsonString());
        AssertFormatError(() => HfFolderFormat.Load(dir), cfg, message);
    }

    [Theory]
    [InlineData("rope_scaling", """{"rope_type":"yarn","factor":4.0}""", "rope_scaling type \"yarn\" is not supported")]
    [InlineData("rope_scaling", """{"type":"linear","factor":2.0}""", "rope_scaling type \"linear\" is not supported")]
    [InlineData("rope_scaling", """{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0}""", "missing field \"rope_scaling.original_max_position_embeddings\"")]
    [InlineData("head_dim", "16", "head_dim is 16")]
    [InlineData("hidden_size", "\"64\"", "field \"hidden_size\" is \"64\", expected an integer")]
    [InlineData("architectures", """["Qwen2ForCausalLM"]""", "only LlamaForCausalLM is supported")]
    [InlineData("attention_bias", "true", "attention_bias is true")]
    [InlineData("hidden_act", "\"gelu\"", "hidden_act is \"gelu\"")]
    [InlineData("num_key_value_heads", "3", "heads 8 is not a multiple of kv heads 3")]
    [InlineData("bos_token_id", "512", "bos_token_id = 512 is outside the vocabulary of 512 tokens")]
    [InlineData("bos_token_id", "-1", "bos_token_id = -1 is outside the vocabulary of 512 tokens")]
    [InlineData("eos_token_id", "[600, 2]", "eos_token_id = 600 is outside the vocabulary of 512 tokens")]
    public void UnsupportedConfigsAreRefused(string field, string value, string message)
    {
        string dir = P("bad");
        HfFolderWriter.Write(Stories, dir, null);
        string cfg = Path.Combine(dir, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(cfg))!.AsObject();
        json[field] = JsonNode.Parse(value);
        File.WriteAllText(cfg, json.ToJsonString());
        AssertFormatError(() => HfFolderFormat.Load(dir), cfg, message);
    }

    [Fact]
    public void MissingLmHeadIsAnErrorUnlessTieWordEmbeddingsIsTrue()
    {
        string dir = P("tie");
        HfFolderWriter.Write(Stories, dir, null); // stories260K is tied: no lm_head.weight in the checkpoint
        string cfg = Path.Combine(dir, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(cfg))!.AsObject();
        Assert.True((bool)json["tie_word_embeddings"]!);
        var tied = HfFolderFormat.Load(dir);
        Assert.True(tied.Config.TiedEmbeddings);
        Assert.Same(tied.TokenEmbedding, tied.Classifier);

        // false, or absent (transformers' LlamaConfig default is false): the classifier must be in the checkpoint.
        json["tie_word_embeddings"] = false;
        File.WriteAllText(cfg, json.ToJsonString());
        AssertFormatError(() => HfFolderFormat.Load(dir), dir, "tensor lm_head.weight is missing", "does not set tie_word_embeddings to true");
        json.Remove("tie_word_embeddings");
        File.WriteAllText(cfg, json.ToJsonString());
        AssertFormatError(() => HfFolderFormat.Load(dir), dir, "tensor lm_head.weight is missing");
    }

    [Fact]
    public void UnknownDTypeInTheCheckpointIsRefusedByNameAndDType()
    {
        string dir = P("f64");
        HfFolderWriter.Write(Stories, dir, null);
        string model = Path.Combine(dir, "model.safetensors");
        var w = new SafetensorsWriter();
        using (var st = SafetensorsFile.Open(model))
            foreach (var t in st.Tensors.Values.OrderBy(t => t.Begin))
            {
                var data = st.ReadTensor(t);
                if (t.Name == "model.layers.1.mlp.up_proj.weight")
                    w.AddRaw(t.Name, "F64", t.Shape, data.SelectMany(x => BitConverter.GetBytes((double)x)).ToArray());
                else
                    w.Add(t.Name, data, t.Shape);
            }
        w.Write(model);
        AssertFormatError(() => HfFolderFormat.Load(dir), model, "tensor model.layers.1.mlp.up_proj.weight: dtype F64 is not supported");
    }

    [Fact]
    public void MissingOrMisshapenTensorsAreRefused()
    {
        string dir = P("tensors");
        HfFolderWriter.Write(Stories, dir, null);
        string model = Path.Combine(dir, "model.safetensors");
        var original = File.ReadAllBytes(model);

        Rewrite(model, (t, data, w) => t.Name == "model.layers.4.self_attn.o_proj.weight");
        AssertFormatError(() => HfFolderFormat.Load(dir), model, "tensor model.layers.4.self_attn.o_proj.weight is missing");

        File.WriteAllBytes(model, original);
        Rewrite(model, (t, data, w) =>
        {
            if (t.Name != "model.layers.0.self_attn.k_proj.weight") return false;
            w.Add(t.Name, data, [64, 32]);
            return true;
        });
        AssertFormatError(() => HfFolderFormat.Load(dir), model, "tensor model.layers.0.self_attn.k_proj.weight has shape [64, 32], expected [32, 64]");
    }

    static void Rewrite(string model, Func<SafetensorsTensorInfo, float[], SafetensorsWriter, bool> replace)
    {
        var w = new SafetensorsWriter();
        using (var st = SafetensorsFile.Open(model))
            foreach (var t in st.Tensors.Values.OrderBy(t => t.Begin))
            {
                var data = st.ReadTensor(t);
                if (!replace(t, data, w)) w.Add(t.Name, data, t.Shape);
            }
        w.Write(model);
    }

    [Fact]
    public void BrokenShardIndexesAreRefused()
    {
        string dir = P("idx");
        HfFolderWriter.Write(Stories, dir, null, shards: 2);
        string index = Path.Combine(dir, "model.safetensors.index.json");
        var json = JsonNode.Parse(File.ReadAllText(index))!;
        json["weight_map"]!.AsObject().Remove("model.norm.weight");
        File.WriteAllText(index, json.ToJsonString());
        AssertFormatError(() => HfFolderFormat.Load(dir), index, "weight_map has no entry for tensor model.norm.weight");

        json["weight_map"]!["model.norm.weight"] = "../elsewhere.safetensors";
        File.WriteAllText(index, json.ToJsonString());
        AssertFormatError(() => HfFolderFormat.Load(dir), index, "expected a file name in the same folder");

        File.Delete(Path.Combine(dir, "model-00002-of-00002.safetensors"));
        json["weight_map"]!["model.norm.weight"] = "model-00002-of-00002.safetensors";
        File.WriteAllText(index, json.ToJsonString());
        AssertFormatError(() => HfFolderFormat.Load(dir), Path.Combine(dir, "model-00002-of-00002.safetensors"), "shard not found");
    }

    [Fact]
    public void FolderWithoutWeightsIsRefused()
    {
        string dir = P("empty");
        Directory.CreateDirectory(dir);
        AssertFormatError(() => HfFolderFormat.Load(dir), Path.Combine(dir, "config.json"), "file not found");
        HfConfig.Write(Stories.Config, Path.Combine(dir, "config.json"), FloatEncoding.F32);
        File.WriteAllBytes(Path.Combine(dir, "pytorch_model.bin"), [0]);
        AssertFormatError(() => HfFolderFormat.Load(dir), dir, "neither model.safetensors nor", "PyTorch .bin");
        AssertFormatError(() => HfFolderFormat.Load(P("nowhere")), P("nowhere"), "folder not found");
    }

    [Fact]
    public void FailedWriteLeavesNothingBehind()
    {
        string dir = P("atomic");
        // A missing tokenizer is detected before anything is written.
        Assert.Throws<ModelFormatException>(() => HfFolderWriter.Write(Stories, dir, P("no-tokenizer.bin")));
        Assert.Empty(Directory.GetFileSystemEntries(_dir));

        // An existing non-empty folder is not clobbered unless asked.
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "keep.txt"), "x");
        Assert.Throws<IOException>(() => HfFolderWriter.Write(Stories, dir, null));
        Assert.Equal(["keep.txt"], Directory.GetFiles(dir).Select(Path.GetFileName));
        Assert.Single(Directory.GetFileSystemEntries(_dir));

        HfFolderWriter.Write(Stories, dir, null, overwrite: true);
        Assert.False(File.Exists(Path.Combine(dir, "keep.txt")));
        Assert.Single(Directory.GetFileSystemEntries(_dir));
        AssertSameArrays(Stories, QkPermutation.ToLayout(HfFolderFormat.Load(dir), RopeLayout.Interleaved));
    }
}
