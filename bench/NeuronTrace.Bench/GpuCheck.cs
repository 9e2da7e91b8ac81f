using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Bench;

/// <summary>
/// The GPU machine's checks (it has no dotnet, so they run from this self-contained executable):
/// <c>gpu-check MODEL...</c> compares the CUDA backend with the CPU backend on whole models — logits, and RelP/exact
/// gradients at every site — and exits 1 past the tolerances (the benchmark is <see cref="GpuBench"/>).
/// </summary>
static class GpuCheck
{
    // Relative to the array's max |value|. fp32 on both sides: summation order only.
    const double Fp32Tolerance = 2e-3;
    // TF32 rounds every GEMM factor to an 11-bit significand (≤ 2^-11 ≈ 4.9e-4 relative each, ~1e-3 per product).
    // Dot products average those errors, but they compound through the chain: a forward is ~7 GEMMs per layer and the
    // backward as many again, over 5 (stories260K) to 8 (synthetic) layers, through softmax and RMSNorm. 2e-2 of the
    // largest value is ten times the per-product bound: loose enough for that compounding, tight enough to catch a
    // wrong transpose or leading dimension in the GemmEx path (which gives O(1) errors).
    const double Tf32Tolerance = 2e-2;
    // bf16 keeps an 8-bit significand: 2^-9 ≈ 2e-3 relative per factor, four times TF32's, so four times its tolerance.
    // Still an order of magnitude under the O(1) errors of a wrong operand type, transpose or stale weight copy.
    const double Bf16Tolerance = 8e-2;

    /// <summary><c>gpu-check [MODEL...] [--shape llama3-8b --layers L]</c>: the files, and a model of that shape with random bf16 weights made here.</summary>
    public static int Check(string[] args)
    {
        var models = new List<(string Name, Func<LlamaWeights> Weights)>();
        string? shape = null;
        int layers = 2;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--shape" && i + 1 < args.Length) shape = args[++i];
            else if (args[i] == "--layers" && i + 1 < args.Length)
            {
                if (!int.TryParse(args[++i], out layers) || layers is < 1 or > 256) throw new ArgumentException($"--layers '{args[i]}': expected an integer in [1, 256]");
            }
            else if (args[i].StartsWith("--")) throw new ArgumentException($"gpu-check: unknown option '{args[i]}'");
            else { string path = args[i]; models.Add((Path.GetFileName(path.TrimEnd('/')), () => ModelLoader.Load(path).Weights)); }
        }
        if (shape is not null)
        {
            var config = GpuPlan.Shape(shape) with { Layers = layers };
            models.Add(($"{shape}-{layers}-layers-random", () => RandomWeights.Bf16(config, seed: 1)));
        }
        using var cuda = CudaBackend.TryCreate(out string why) ?? throw new InvalidOperationException("gpu-check: no GPU: " + why);
        bool ok = true;
        foreach (var (name, makeWeights) in models)
        {
            var weights = makeWeights();
            using var cpu = new Llama(weights, CpuBackend.Instance);
            using var gpu = new Llama(weights, cuda);
            var prompts = Enumerable.Range(0, 4).Select(b => Enumerable.Range(0, 9 + 3 * b).Select(t => t == 0 ? 1 : (t * 37 + b * 11) % (weights.Config.VocabSize - 3) + 3).ToArray()).ToList();
            var batch = new TokenBatch(prompts);
            // The metric is a real logit difference: each prompt's own top-1 minus top-2 token on the CPU. A fixed pair
            // of rarely used tokens (5 and 7, as before) has near-identical embedding rows whose difference (~1e-4)
            // is below the TF32/bf16 rounding of the rows themselves, so every reduced-precision gradient looked wrong.
            int v = weights.Config.VocabSize;
            float[] clean;
            using (var pass = cpu.Forward(batch, LogitRows.Last)) clean = pass.HostLogits();
            var answers = Enumerable.Range(0, batch.Size)
                .Select(b => Enumerable.Range(0, v).OrderByDescending(i => clean[b * v + i]).Take(2).ToArray()).ToArray();
            foreach (var rules in new[] { BackwardRules.Exact, BackwardRules.RelP, BackwardRules.RelPFrozenAttention })
            {
                var (lc, gc) = Run(cpu, batch, rules, answers);
                foreach (var (precision, tolerance) in new[] { (GemmPrecision.Fp32, Fp32Tolerance), (GemmPrecision.Tf32, Tf32Tolerance), (GemmPrecision.Bf16, Bf16Tolerance) })
                {
                    cuda.Precision = precision;
                    var (lg, gg) = Run(gpu, batch, rules, answers);
                    double logitErr = RelErr(lc, lg);
                    double gradErr = gc.Keys.Max(k => RelErr(gc[k], gg[k]));
                    bool pass = logitErr <= tolerance && gradErr <= tolerance;
                    ok &= pass;
                    Console.WriteLine($"{(pass ? "PASS" : "FAIL")} {name} {precision} {rules.Norm}/{rules.Attention}/{rules.Gate}: logits {logitErr:E2}, worst site gradient {gradErr:E2} (tolerance {tolerance:E0} of max |value|)");
                }
                cuda.Precision = GemmPrecision.Fp32;
            }
            ok &= CheckScores(name, cpu, gpu, cuda, prompts);
        }
        return ok ? 0 : 1;
    }

    /// <summary>
    /// Whole-pass RelP node scores (the task's per-position means at every site, read back at its end) on the GPU
    /// against the CPU backend's, per site and layer relative to the array's max |value|.
    /// </summary>
    static bool CheckScores(string name, Llama cpu, Llama gpu, CudaBackend cuda, List<int[]> prompts)
    {
        int seq = prompts.Min(p => p.Length), v = cpu.Config.VocabSize;
        var pairs = prompts.Select((p, i) =>
        {
            var clean = p[..seq];
            var patch = (int[])clean.Clone();
            patch[seq / 2] = (patch[seq / 2] + 7) % (v - 3) + 3;
            return new PromptPair(i + 1, clean, patch, (i * 13 + 5) % v, (i * 29 + 11) % v);
        }).ToList();
        var task = new PromptTask("check", pairs);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, BatchSize = pairs.Count };
        var expected = Attributor.Score(cpu, task, options);
        bool ok = true;
        foreach (var (precision, tolerance) in new[] { (GemmPrecision.Fp32, Fp32Tolerance), (GemmPrecision.Bf16, Bf16Tolerance) })
        {
            cuda.Precision = precision;
            var got = Attributor.Score(gpu, task, options);
            double err = expected.Sites.Max(s => Enumerable.Range(0, cpu.Config.Layers).Max(l => RelErr(expected.Get(s, l), got.Get(s, l))));
            bool pass = err <= tolerance;
            ok &= pass;
            Console.WriteLine($"{(pass ? "PASS" : "FAIL")} {name} {precision} RelP whole-pass scores: worst site {err:E2} (tolerance {tolerance:E0} of max |value|)");
            ok &= CheckReadoutAndTopK(name, precision, gpu, task, options, got);
        }
        cuda.Precision = GemmPrecision.Fp32;
        return ok;
    }

    /// <summary>
    /// The scores read back beside the backward on the copy stream (<paramref name="beside"/>) against the same task's
    /// sums left on the device and read back at its end (a race between the copy and the backward would show as a
    /// gross difference; the two runs agree to rounding or exactly), and the top-100 of every site selected on the
    /// device (topk.cu) against NodeRanking's top-100 of those downloaded scores: the same nodes, scores and order.
    /// </summary>
    static bool CheckReadoutAndTopK(string name, GemmPrecision precision, Llama gpu, PromptTask task, AttributionOptions options, NodeScores beside)
    {
        using var onDevice = Attributor.ScoreOnDevice(gpu, task, options);
        var atEnd = onDevice.Download();
        double err = atEnd.Sites.Max(s => Enumerable.Range(0, gpu.Config.Layers).Max(l => RelErr(atEnd.Get(s, l), beside.Get(s, l))));
        bool ok = err <= 1e-6;
        Console.WriteLine($"{(ok ? "PASS" : "FAIL")} {name} {precision} scores read beside the backward vs at the end: worst site {err:E2} (tolerance 1E-06 of max |value|)");
        foreach (var s in atEnd.Sites)
        {
            var ranking = new NeuronTrace.Tracing.Circuits.NodeRanking(atEnd, s);
            var top = onDevice.TopK(s, 100);
            var want = ranking.Order.Take(100).Select(ranking.Node).ToList();
            bool same = top.Select(t => t.Node).SequenceEqual(want) && top.All(t => t.Score == atEnd[t.Node]);
            ok &= same;
            Console.WriteLine($"{(same ? "PASS" : "FAIL")} {name} {precision} top-100 {s.Name()} on the device vs NodeRanking of the downloaded scores");
        }
        return ok;
    }

    static (float[] Logits, Dictionary<(NodeSite, int), float[]> Grads) Run(Llama m, TokenBatch batch, BackwardRules rules, int[][] answers)
    {
        using var pass = m.Forward(batch, LogitRows.Last);
        var logits = pass.HostLogits();
        int v = m.Config.VocabSize;
        var g = new float[logits.Length];
        for (int b = 0; b < batch.Size; b++) { g[b * v + answers[b][0]] = 1; g[b * v + answers[b][1]] = -1; }
        using var dl = m.Backend.Upload(g, batch.Size, v);
        using var grads = m.Backward(pass, dl, rules, NodeSites.All);
        var d = new Dictionary<(NodeSite, int), float[]>();
        foreach (var s in NodeSites.All)
            for (int l = 0; l < m.Config.Layers; l++) d[(s, l)] = grads.Host(s, l);
        return (logits, d);
    }

    static double RelErr(float[] a, float[] b)
    {
        double max = 1e-12, err = 0;
        for (int i = 0; i < a.Length; i++) { max = Math.Max(max, Math.Abs(a[i])); err = Math.Max(err, Math.Abs(a[i] - b[i])); }
        return err / max;
    }
}
