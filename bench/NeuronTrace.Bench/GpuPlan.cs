using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Bench;

/// <summary>
/// <c>bench gpu-plan [--shape llama3-8b] [--batch N] [--seq T] [--layers L] [--math bf16|tf32|fp32] [--graphs on|off]</c>: one RelP
/// attribution pass (all sites, one batch of N pairs of T tokens) run by <see cref="CudaBackend"/> on a
/// <see cref="RecordingDeviceRuntime"/>, which executes nothing: prints the per-op launch ledger (calls, declared
/// GFLOP and GB moved, roofline ms at the H100's 989 TFLOP/s bf16 and 3.35 TB/s), host syncs and copy bytes per
/// pass, the device memory high-water mark, and a modelled H100 time (two streams: the copy stream's downloads
/// overlap the compute after them; the time hidden and the time exposed are printed). A model, not a measurement: the roofline is a
/// lower bound per launch; the modelled time adds the assumed per-launch and per-sync costs below.
/// </summary>
static class GpuPlan
{
    /// <summary>Assumed costs the roofline leaves out (not measured here): a kernel launch's fixed time on an idle
    /// stream, one host round trip, and device→host copy bandwidth into pageable and into page-locked memory.</summary>
    const double LaunchSeconds = 4e-6, SyncSeconds = 20e-6, PageableBytesPerSecond = 12e9, PinnedBytesPerSecond = 25e9;
    /// <summary>Assumed device-side cost of one node inside a CUDA graph (no host launch; not measured here).</summary>
    const double GraphNodeSeconds = 1e-6;
    /// <summary>The k of the ledger's library section (the top-k selected on the device).</summary>
    const int LibraryTopK = 100;

    internal static readonly Dictionary<string, LlamaConfig> Shapes = new()
    {
        ["llama3-8b"] = new LlamaConfig
        {
            Dim = 4096, HiddenDim = 14336, Layers = 32, Heads = 32, KvHeads = 8, VocabSize = 128256, MaxSeqLen = 8192,
            RopeTheta = 500000f, RopeLayout = RopeLayout.RotateHalf, NormEps = 1e-5f,
        },
    };

    /// <summary>The named model shape (<c>--shape</c>), or a one-line error naming the known ones.</summary>
    public static LlamaConfig Shape(string name) => Shapes.TryGetValue(name, out var config) ? config
        : throw new ArgumentException($"--shape '{Short(name)}': expected {string.Join(" or ", Shapes.Keys)}");

    public static int Run(string[] args)
    {
        string shapeName = Option(args, "--shape") ?? "llama3-8b";
        var config = Shape(shapeName);
        int batch = IntOption(args, "--batch", 8, 1, 256);
        int seq = IntOption(args, "--seq", 64, 2, config.MaxSeqLen);
        int layers = IntOption(args, "--layers", config.Layers, 1, 256);
        config = config with { Layers = layers };
        var precision = Precision(args);
        bool graphs = (Option(args, "--graphs") ?? "on") switch
        {
            "on" => true, "off" => false,
            var g => throw new ArgumentException($"--graphs '{Short(g)}': expected on or off"),
        };
        var ledger = Measure(config, batch, seq, precision, graphs: false, out long weightBytes);
        Print(Console.Out, ledger, $"{shapeName} ({layers} layers), RelP attribution pass, batch {batch} x {seq}, all sites, {precision}, op by op", weightBytes);
        if (graphs)
        {
            Console.WriteLine();
            var replayed = Measure(config, batch, seq, precision, graphs: true, out weightBytes);
            Print(Console.Out, replayed, $"{shapeName} ({layers} layers), same pass replayed as CUDA graphs (GraphReplayRuntime, steady state)", weightBytes);
        }
        Console.WriteLine();
        var top = Measure(config, batch, seq, precision, graphs: false, out weightBytes, topK: LibraryTopK);
        Print(Console.Out, top, $"{shapeName} ({layers} layers), same pass for a library caller taking the top {LibraryTopK} mlp_act nodes on the device (TracedModel.AttributeTop: no score slab download)", weightBytes);
        return 0;
    }

    /// <summary>
    /// The ledger of a steady pass: after one warm-up pass (which also makes the one-time bf16 weight copies), or with
    /// <paramref name="graphs"/> four (the first two differ in the pool blocks the bf16 shadows get, then seen,
    /// captured, replayed).
    /// </summary>
    /// <param name="topK">When set, the pass leaves its scores on the device and takes the top k mlp_act nodes there
    /// (<see cref="Attributor.ScoreOnDevice"/>, what <c>TracedModel.AttributeTop</c> runs) instead of downloading them.</param>
    public static RecordingDeviceRuntime Measure(LlamaConfig config, int batch, int seq, GemmPrecision precision, bool graphs, out long weightBytes, int? topK = null)
    {
        var device = new RecordingDeviceRuntime();
        IDeviceRuntime runtime = graphs ? new GraphReplayRuntime(device, device.Pool, ownsInner: false) : device;
        var backend = new CudaBackend(runtime, ownsDevice: false, precision);
        var llama = Llama.WithUninitializedWeights(config, backend);
        weightBytes = device.Pool.UsedBytes;
        var rng = new Random(0);
        var pairs = Enumerable.Range(0, batch).Select(i =>
        {
            var clean = Enumerable.Range(0, seq).Select(t => t == 0 ? 1 : rng.Next(3, config.VocabSize)).ToArray();
            var patch = (int[])clean.Clone();
            patch[seq / 2] = (patch[seq / 2] + 1) % (config.VocabSize - 3) + 3;
            return new PromptPair(i + 1, clean, patch, 5, 7);
        }).ToList();
        var task = new PromptTask("random", pairs);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, BatchSize = batch };
        void Pass()
        {
            if (topK is not { } k) { Attributor.Score(llama, task, options); return; }
            using var scores = Attributor.ScoreOnDevice(llama, task, options);
            scores.TopK(NodeSite.MlpAct, k);
        }
        for (int pass = 0; pass < (graphs ? 4 : 1); pass++) Pass();
        device.Reset();
        Pass();
        return device;
    }

    public static void Print(TextWriter o, RecordingDeviceRuntime r, string title, long weightBytes)
    {
        o.WriteLine($"gpu-plan: {title}");
        o.WriteLine("Nothing here ran on a GPU: declared work per launch, on the recording device runtime.");
        o.WriteLine($"{"op",-22} {"calls",7} {"GFLOP",10} {"GB moved",9} {"roofline ms",12} {"% pass",7}");
        double total = r.Ops.Values.Sum(v => v.RooflineSeconds);
        foreach (var (name, op) in r.Ops.OrderByDescending(kv => kv.Value.RooflineSeconds))
            o.WriteLine($"{name,-22} {op.Calls,7} {op.Flops / 1e9,10:F1} {op.Bytes / 1e9,9:F3} {op.RooflineSeconds * 1e3,12:F3} {100 * op.RooflineSeconds / Math.Max(total, 1e-30),6:F1}%");
        double flops = r.Ops.Values.Sum(v => v.Flops), bytes = r.Ops.Values.Sum(v => v.Bytes);
        o.WriteLine($"{"total",-22} {r.Launches,7} {flops / 1e9,10:F1} {bytes / 1e9,9:F3} {total * 1e3,12:F3}");
        o.WriteLine($"per pass: {r.Launches} launches ({r.GraphLaunches} of them graph launches running {r.OpsInGraphs} ops), {r.HostSyncs} host syncs, {r.Downloads} downloads ({r.BytesToHost / 1e6:F1} MB; {r.PinnedDownloads} of them pinned and asynchronous, {r.PinnedBytesToHost / 1e6:F1} MB, {r.CopyStreamDownloads} of those on the copy stream, {r.CopyStreamBytesToHost / 1e6:F1} MB), {r.Uploads} uploads ({r.BytesToDevice / 1e6:F2} MB)");
        o.WriteLine($"device memory: weights {weightBytes / 1e9:F2} GB, high-water mark {r.Pool.PeakUsedBytes / 1e9:F2} GB");
        var m = r.Model(Assumed);
        o.WriteLine($"modelled H100 pass: roofline {total * 1e3:F1} ms + launches {m.Launch * 1e3:F1} ms ({LaunchSeconds * 1e6:F0} us per host launch, {GraphNodeSeconds * 1e6:F0} us per graph node, assumed)"
            + $" + syncs {m.Sync * 1e3:F1} ms ({SyncSeconds * 1e6:F0} us each, assumed) + downloads on the compute stream {m.ComputeStreamCopy * 1e3:F1} ms ({PageableBytesPerSecond / 1e9:F0} GB/s pageable, {PinnedBytesPerSecond / 1e9:F0} GB/s pinned, assumed)"
            + $" + copy stream exposed {m.CopyStreamExposed * 1e3:F1} ms = {m.Total * 1e3:F1} ms");
        o.WriteLine($"copy stream: {r.CopyStreamDownloads} downloads, {m.CopyStream * 1e3:F1} ms of copies ({PinnedBytesPerSecond / 1e9:F0} GB/s pinned, assumed), {m.CopyStreamHidden * 1e3:F1} ms hidden under the compute that follows each, {m.CopyStreamExposed * 1e3:F1} ms exposed (the host waits for them)");
    }

    /// <summary>--math bf16|tf32|fp32 (default bf16), as gpu-plan and ksweep-ledger read it.</summary>
    internal static GemmPrecision Precision(string[] args) => (Option(args, "--math") ?? "bf16") switch
    {
        "bf16" => GemmPrecision.Bf16, "tf32" => GemmPrecision.Tf32, "fp32" => GemmPrecision.Fp32,
        var m => throw new ArgumentException($"--math '{Short(m)}': expected bf16, tf32 or fp32"),
    };

    /// <summary>The modelled H100 time of what <paramref name="r"/> recorded (<see cref="RecordingDeviceRuntime.Model"/>).</summary>
    internal static double ModelledSeconds(RecordingDeviceRuntime r) => r.Model(Assumed).Total;

    static readonly RecordingDeviceRuntime.TimingAssumptions Assumed = new(LaunchSeconds, GraphNodeSeconds, SyncSeconds, PageableBytesPerSecond, PinnedBytesPerSecond);

    /// <summary>The value after <paramref name="name"/>, or null (the bench's gpu-plan and gpu-bench parse the same way).</summary>
    internal static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        if (i < 0) return null;
        if (i + 1 >= args.Length) throw new ArgumentException($"{name} needs a value");
        return args[i + 1];
    }

    internal static int IntOption(string[] args, string name, int fallback, int min, int max)
    {
        string? s = Option(args, name);
        if (s is null) return fallback;
        if (!int.TryParse(s, out int v) || v < min || v > max) throw new ArgumentException($"{name} '{Short(s)}': expected an integer in [{min}, {max}]");
        return v;
    }

    static string Short(string s) => s.Length <= 40 ? s : s[..40] + "...";
}
