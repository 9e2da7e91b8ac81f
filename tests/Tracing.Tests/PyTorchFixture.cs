using System.Text.Json;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests;

/// <summary>Reads tests/fixtures/stories260K_attribution.{json,f32}, written by make_fixtures.py (float64 PyTorch autograd).</summary>
sealed class PyTorchFixture
{
    readonly Dictionary<string, (int[] Shape, long Offset)> _arrays = new();
    readonly byte[] _data;

    public static PyTorchFixture Instance { get; } = new();

    PyTorchFixture()
    {
        var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Fixtures, "stories260K_attribution.json"))).RootElement;
        _data = File.ReadAllBytes(Path.Combine(RepoPaths.Fixtures, index.GetProperty("binary").GetString()!));
        foreach (var a in index.GetProperty("arrays").EnumerateArray())
            _arrays[a.GetProperty("name").GetString()!] = (a.GetProperty("shape").EnumerateArray().Select(x => x.GetInt32()).ToArray(), a.GetProperty("offset").GetInt64());
        Pairs = index.GetProperty("pairs").EnumerateArray().Select(p => new PromptPair(
            p.GetProperty("line").GetInt32(),
            Ints(p.GetProperty("clean_ids")), Ints(p.GetProperty("patch_ids")),
            p.GetProperty("clean_answer_id").GetInt32(), p.GetProperty("patch_answer_id").GetInt32(),
            p.GetProperty("task").GetString())).ToList();
        MetricClean = index.GetProperty("pairs").EnumerateArray().Select(p => p.GetProperty("metric_clean").GetDouble()).ToArray();
    }

    public IReadOnlyList<PromptPair> Pairs { get; }
    public double[] MetricClean { get; }

    public float[] Get(string name)
    {
        var (shape, offset) = _arrays.TryGetValue(name, out var a) ? a : throw new KeyNotFoundException($"fixture has no array {name}");
        var f = new float[shape.Aggregate(1, (x, y) => x * y)];
        Buffer.BlockCopy(_data, (int)offset, f, 0, f.Length * 4);
        return f;
    }

    static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();
}
