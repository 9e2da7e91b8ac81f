using System.Runtime.InteropServices;
using NeuronTrace.TestSupport;
using Xunit;
using NeuronTrace.Formats;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tests;

/// <summary>Shared fixtures for the format tests: the bundled stories260K and assertion helpers.</summary>
internal static class FormatTestHelpers
{
    static readonly Lazy<LlamaWeights> s_bin = new(() => Llama2cBinFormat.Load(RepoPaths.Stories260KBin));

    /// <summary>stories260K loaded once from the .bin (treat as read-only).</summary>
    public static LlamaWeights Stories => s_bin.Value;

    /// <summary>Every named array of the model, in a fixed order, for tensor-by-tensor comparisons.</summary>
    public static IEnumerable<(string Name, float[] Data)> Arrays(LlamaWeights w)
    {
        yield return ("token embedding", w.TokenEmbedding);
        yield return ("final norm", w.FinalNorm);
        yield return ("classifier", w.Classifier);
        for (int l = 0; l < w.Layers.Length; l++)
        {
            var L = w.Layers[l];
            yield return ($"layer {l} attn norm", L.AttnNorm);
            yield return ($"layer {l} wq", L.Wq);
            yield return ($"layer {l} wk", L.Wk);
            yield return ($"layer {l} wv", L.Wv);
            yield return ($"layer {l} wo", L.Wo);
            yield return ($"layer {l} ffn norm", L.FfnNorm);
            yield return ($"layer {l} w1", L.W1);
            yield return ($"layer {l} w2", L.W2);
            yield return ($"layer {l} w3", L.W3);
        }
    }

    public static bool BitEqual(float[] a, float[] b) =>
        MemoryMarshal.AsBytes(a.AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(b.AsSpan()));

    /// <summary>Asserts every array of <paramref name="actual"/> equals <paramref name="expected"/>'s after <paramref name="map"/>, bit for bit.</summary>
    public static void AssertSameArrays(LlamaWeights expected, LlamaWeights actual, Func<float, float>? map = null, Func<string, bool>? mapOnly = null)
    {
        var e = Arrays(expected).ToList();
        var a = Arrays(actual).ToList();
        Assert.Equal(e.Count, a.Count);
        for (int i = 0; i < e.Count; i++)
        {
            Assert.Equal(e[i].Name, a[i].Name);
            var want = map is not null && (mapOnly is null || mapOnly(e[i].Name)) ? e[i].Data.Select(map).ToArray() : e[i].Data;
            Assert.True(BitEqual(want, a[i].Data), $"{e[i].Name} differs");
        }
    }

    /// <summary>Runs <paramref name="load"/> and checks the ModelFormatException names <paramref name="file"/> and contains every fragment.</summary>
    public static ModelFormatException AssertFormatError(Action load, string file, params string[] fragments)
    {
        var ex = Assert.Throws<ModelFormatException>(load);
        Assert.Equal(Path.GetFullPath(file), Path.GetFullPath(ex.File));
        Assert.StartsWith(ex.File + ": ", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
        foreach (var f in fragments) Assert.Contains(f, ex.Message);
        return ex;
    }

    /// <summary>Re-writes a GGUF with the same metadata and tensors, letting the caller replace tensors on the way.</summary>
    public static void CopyGguf(string from, string to, Func<GgufTensorInfo, float[], GgufWriter, bool>? replace = null)
    {
        using var g = GgufFile.Open(from);
        var w = new GgufWriter { Version = g.Version };
        foreach (var key in g.MetadataKeys) w.Set(key, g.Metadata[key]);
        foreach (var t in g.Tensors)
        {
            var data = g.ReadTensor(t);
            if (replace is not null && replace(t, data, w)) continue;
            w.AddTensor(t.Name, data, t.Dims, (GgufTensorType)t.TypeId);
        }
        w.Write(to);
    }
}
