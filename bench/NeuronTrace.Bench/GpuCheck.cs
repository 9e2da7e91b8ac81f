using System.Diagnostics;
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
/// gradients at every site — and exits 1 past the tolerances; <c>gpu-bench MODEL</c> times attribution passes and
/// ablated sweep forwards on the GPU.
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

    public static int Check(string[] models)
    {
        using var cuda = CudaBackend.TryCreate(out string why) ?? throw new InvalidOperationException("gpu-check: " + why);
        bool ok = true;
        foreach (var path in models)
        {
            var loaded = ModelLoader.Load(path);
            using var cpu = new Llama(loaded.Weights, CpuBackend.Instance);
            using var gpu = new Llama(loaded.Weights, cuda);
            var prompts = Enumerable.Range(0, 4).Select(b => Enumerable.Range(0, 9 + 3 * b).Select(t => t == 0 ? 1 : (t * 37 + b * 11) % (loaded.Config.VocabSize - 3) + 3).ToArray()).ToList();
            var batch = new TokenBatch(prompts);
            // The metric is a real logit difference: each prompt's own top-1 minus top-2 token on the CPU. A fixed pair
            // of rarely used tokens (5 and 7, as before) has near-identical embedding rows whose difference (~1e-4)
            // is below the TF32/bf16 rounding of the rows themselves, so every reduced-precision gradient looked wrong.
            int v = loaded.Config.VocabSize;
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
                    Console.WriteLine($"{(pass ? "PASS" : "FAIL")} {Path.GetFileName(path.TrimEnd('/'))} {precision} {rules.Norm}/{rules.Attention}/{rules.Gate}: logits {logitErr:E2}, worst site gradient {gradErr:E2} (tolerance {tolerance:E0} of max |value|)");
                }
                cuda.Precision = GemmPrecision.Fp32;
            }
        }
        return ok ? 0 : 1;
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

    /// <summary>
    /// Attribution pairs/s and sweep prompt-forwards/s (device mean ablation) with exact fp32, TF32 and bf16 products,
    /// on one model upload; one JSON line each, with the achieved matrix-product TFLOP/s and the card's dense peak for
    /// that precision where known. Short on purpose (the GPU call is time-limited): one warm-up, then
    /// two attribution passes and one sweep of four masks timed.
    /// </summary>
    public static int Bench(string model, int batch, int seq)
    {
        using var cuda = CudaBackend.TryCreate(out string why) ?? throw new InvalidOperationException("gpu-bench: " + why);
        var loaded = ModelLoader.Load(model);
        var c = loaded.Config;
        using var llama = new Llama(loaded.Weights, cuda);
        var rng = new Random(0);
        var pairs = Enumerable.Range(0, batch).Select(i =>
        {
            var clean = Enumerable.Range(0, seq).Select(t => t == 0 ? 1 : rng.Next(3, c.VocabSize)).ToArray();
            var p = (int[])clean.Clone(); p[seq / 2] = (p[seq / 2] + 1) % (c.VocabSize - 3) + 3;
            return new PromptPair(i + 1, clean, p, 5, 7);
        }).ToList();
        var task = new PromptTask("random", pairs);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, BatchSize = batch };
        var means = SiteMeans.Compute(llama, pairs.Select(p => p.PatchIds!).ToList(), [NodeSite.MlpAct]);
        // Random keep-masks over every node (half kept), made once from random bytes: 4 × layers·seq·d_ff values.
        var masks = Enumerable.Range(0, 4).Select(_ =>
        {
            var bytes = new byte[c.Layers * seq * c.HiddenDim];
            rng.NextBytes(bytes);
            return Array.ConvertAll(bytes, b => b < 128);
        }).ToList();
        double flopsPerToken = 2.0 * (c.Layers * ((double)c.Dim * c.Dim * 2 + 2.0 * c.KvDim * c.Dim + 3.0 * c.Dim * c.HiddenDim));
        string device = cuda.Device.Name;
        foreach (var precision in new[] { GemmPrecision.Fp32, GemmPrecision.Tf32, GemmPrecision.Bf16 })
        {
            cuda.Precision = precision;
            Attributor.Score(llama, task, options);
            var w = Stopwatch.StartNew();
            const int iters = 2;
            for (int i = 0; i < iters; i++) Attributor.Score(llama, task, options);
            double pairsPerS = batch * iters / w.Elapsed.TotalSeconds;
            var eval = new SiteMeanAblation(llama, task, NodeSite.MlpAct, means, Metric.CleanMinusPatch, seq) { MasksPerForward = 4 };
            eval.Evaluate(masks);
            w.Restart();
            eval.Evaluate(masks);
            double fwdPerS = batch * masks.Count / w.Elapsed.TotalSeconds;
            // forward + patch forward + backward (≈ 2 forwards) per pair.
            double tflops = pairsPerS * seq * flopsPerToken * 4 / 1e12;
            double? peak = DensePeakTflops(device, precision);
            if (Environment.GetEnvironmentVariable("NEURONTRACE_CUDA_PROFILE") == "1")
            {
                PrintOpProfile(cuda, () => Attributor.Score(llama, task, options), $"attribution {precision}");
                PrintOpProfile(cuda, () => eval.Evaluate(masks), $"sweep {precision}");
            }
            Console.WriteLine($"{{\"model\": \"{Path.GetFileName(model.TrimEnd('/'))}\", \"device\": \"{device}\", \"math\": \"{precision.ToString().ToLowerInvariant()}\", \"attribution_pairs_per_s\": {pairsPerS:F2}, \"sweep_prompt_forwards_per_s\": {fwdPerS:F2}, \"attribution_tflops\": {tflops:F2}, \"peak_tflops\": {(peak is { } p ? p.ToString("F0") : "null")}}}");
        }
        return 0;
    }

    /// <summary>One more run of <paramref name="work"/> with the per-op profile on; the ops by total time.</summary>
    static void PrintOpProfile(CudaBackend cuda, Action work, string label)
    {
        cuda.OpProfile = [];
        var w = Stopwatch.StartNew();
        work();
        double total = w.Elapsed.TotalMilliseconds;
        var profile = cuda.OpProfile;
        cuda.OpProfile = null;
        Console.WriteLine($"op profile, {label}: {total:F0} ms wall with a wait around every op; in ops {profile.Values.Sum(v => v.Milliseconds):F0} ms");
        foreach (var (name, (calls, ms)) in profile.OrderByDescending(kv => kv.Value.Milliseconds).Take(12))
            Console.WriteLine($"  {name,-22} {calls,6} calls {ms,9:F1} ms");
    }

    /// <summary>NVIDIA's published dense peaks of the H100 SXM (FP32 CUDA cores; TF32 and BF16 tensor cores, no sparsity).</summary>
    static double? DensePeakTflops(string device, GemmPrecision precision) =>
        !device.Contains("H100", StringComparison.OrdinalIgnoreCase) ? null
        : precision switch { GemmPrecision.Fp32 => 67, GemmPrecision.Tf32 => 495, GemmPrecision.Bf16 => 989, _ => null };
}
