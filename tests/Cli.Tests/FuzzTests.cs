using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests;

/// <summary>The fuzz tests run alone (after the parallel tests): each mutant's peak memory is read from the process's.</summary>
[CollectionDefinition("fuzz", DisableParallelization = true)]
public class FuzzCollection;

/// <summary>
/// Seeded mutation fuzzing of the parsers through the CLI (in process: a child per mutant would take minutes): bit flips,
/// interesting integers, truncation, insertion and duplication over the bundled GGUF, HF folder (safetensors header and
/// config.json), llama2.c .bin and task files, 300 mutants each. Every mutant must end in exit 0, 1 or 2, never an
/// internal error, with one printable stderr line on failure, nothing left behind, and a peak resident set at most
/// <see cref="MutantMemoryBoundMiB"/> above the process's before it (Linux peak RSS, reset per mutant).
/// A model mutant that loads (exit 0) must still give the bundled golden logits exactly (bit for bit the unmutated
/// file's, which match upstream's within 1e-4): flips and integers go to the header only (tensor data has no checksum
/// to catch them), so the accepted mutants are changes the format allows to bytes that do not reach the weights (a
/// metadata string, alignment padding). The one other outcome allowed is a valid different model: a hyperparameter
/// that is not a shape (rope theta, norm eps, context length, BOS/EOS ids) changed to another legal value, with the
/// same weights; the test names the field.
/// </summary>
[Collection("fuzz")]
public class FuzzTests
{
    const int MutantsPerFormat = 300;
    /// <summary>A mutant may raise the peak resident set this much (loading the 1 MB model and two steps take a few MB).</summary>
    const long MutantMemoryBoundMiB = 200;
    static readonly long[] Interesting = [0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, int.MaxValue, uint.MaxValue, long.MaxValue, 1L << 40, 31, 32, 33];

    static byte[] Mutate(byte[] file, int headerEnd, Random rng, out int kind)
    {
        var b = file.ToList();
        switch (kind = rng.Next(6))
        {
            case 0: // bit flips in the header
                for (int i = 0, n = 1 + rng.Next(4); i < n; i++) { int at = rng.Next(headerEnd); b[at] ^= (byte)(1 << rng.Next(8)); }
                break;
            case 1: // an interesting integer over 1, 2, 4 or 8 header bytes
            {
                int width = 1 << rng.Next(4), at = rng.Next(Math.Max(1, headerEnd - width));
                var v = new byte[8];
                BinaryPrimitives.WriteInt64LittleEndian(v, Interesting[rng.Next(Interesting.Length)]);
                for (int i = 0; i < width && at + i < b.Count; i++) b[at + i] = v[i];
                break;
            }
            case 2: // truncation
            {
                int cut = rng.Next(b.Count);
                b.RemoveRange(cut, b.Count - cut);
            }
                break;
            case 3: // insertion of random bytes
            {
                var junk = new byte[1 + rng.Next(64)];
                rng.NextBytes(junk);
                b.InsertRange(rng.Next(b.Count), junk);
                break;
            }
            case 4: // duplication of a span
            {
                int at = rng.Next(b.Count), len = Math.Min(1 + rng.Next(256), b.Count - at);
                b.InsertRange(rng.Next(b.Count), b.GetRange(at, len));
                break;
            }
            default: // header bytes replaced by random ones
            {
                int at = rng.Next(headerEnd), len = Math.Min(1 + rng.Next(16), headerEnd - at);
                for (int i = 0; i < len; i++) b[at + i] = (byte)rng.Next(256);
                break;
            }
        }
        return b.ToArray();
    }

    static void AssertContract((int Exit, string Out, string Err) r, string what)
    {
        Assert.True(r.Exit is 0 or 1 or 2, $"{what}: exit {r.Exit}: {r.Err}");
        Assert.DoesNotContain("internal error", r.Err);
        Assert.False(r.Err.Any(c => char.IsControl(c) && c is not '\n' and not '\r'), $"{what}: control characters on stderr");
        if (r.Exit != 0) Assert.True(r.Err.Trim().Split('\n').Length == 1 && r.Err.Length < 2000, $"{what}: stderr is not one short line: {r.Err}");
    }

    /// <summary>Runs the CLI once with the process's peak resident set reset first; returns its result and the peak's rise in MiB.</summary>
    static ((int Exit, string Out, string Err) Result, long RiseMiB) RunMeasured(params string[] args) => Measured(() => CliHarness.Run(args));

    static (T Result, long RiseMiB) Measured<T>(Func<T> run)
    {
        // A blocking collection first, so that garbage of earlier tests is not collected (and its pages returned) mid-measure.
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        long before = ProcStatusKib("VmRSS");
        File.WriteAllText("/proc/self/clear_refs", "5");   // resets VmHWM to the current resident set
        var r = run();
        return (r, (ProcStatusKib("VmHWM") - before) >> 10);
    }

    [Fact]
    public void ThePeakMeasureSeesAnAllocationOverTheBound()
    {
        if (!MemoryMeasurable(out string why)) { Assert.Fail(why); return; }
        // Native memory, not a managed array: the GC may place an array in pages an earlier test left resident, which
        // raises no peak (seen once in a full run); a fresh allocation this large is new pages from the kernel.
        // The GC returns freed regions to the kernel gradually, so in a full run the resident set can fall between the
        // measure's start and the allocation (this failed once in CI): the allocation's own rise is the peak over the
        // resident set just before it, which the reset peak must show whatever the GC returned before.
        long rssBefore = 0;
        var (touched, _) = Measured(() =>
        {
            long size = (MutantMemoryBoundMiB + 50) << 20;
            rssBefore = ProcStatusKib("VmRSS");
            nint a = System.Runtime.InteropServices.Marshal.AllocHGlobal((nint)size);
            try
            {
                for (long i = 0; i < size; i += 4096) System.Runtime.InteropServices.Marshal.WriteByte(a + (nint)i, 1);   // resident only once touched
                return size;
            }
            finally { System.Runtime.InteropServices.Marshal.FreeHGlobal(a); }
        });
        long rise = (ProcStatusKib("VmHWM") - rssBefore) >> 10;
        Assert.True(rise > MutantMemoryBoundMiB, $"a {touched >> 20} MiB native allocation raised the measured peak by {rise} MiB only");
    }

    static long ProcStatusKib(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        throw new InvalidOperationException($"/proc/self/status has no {field}");
    }

    static bool MemoryMeasurable(out string why)
    {
        why = "not run: the per-mutant peak memory is read from Linux's /proc/self (VmHWM, clear_refs)";
        return OperatingSystem.IsLinux() && File.Exists("/proc/self/clear_refs");
    }

    static bool SameWeights(LlamaWeights a, LlamaWeights b)
    {
        static bool Eq(float[] x, float[] y) => MemoryMarshal.AsBytes(x.AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(y.AsSpan()));
        if (!Eq(a.TokenEmbedding, b.TokenEmbedding) || !Eq(a.FinalNorm, b.FinalNorm) || !Eq(a.Classifier, b.Classifier) || a.Layers.Length != b.Layers.Length) return false;
        for (int l = 0; l < a.Layers.Length; l++)
        {
            var (x, y) = (a.Layers[l], b.Layers[l]);
            if (!(Eq(x.AttnNorm, y.AttnNorm) && Eq(x.Wq, y.Wq) && Eq(x.Wk, y.Wk) && Eq(x.Wv, y.Wv) && Eq(x.Wo, y.Wo)
                && Eq(x.FfnNorm, y.FfnNorm) && Eq(x.W1, y.W1) && Eq(x.W2, y.W2) && Eq(x.W3, y.W3))) return false;
        }
        return true;
    }

    static readonly JsonElement GoldenPrompt = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Golden, "golden.json")))
        .RootElement.GetProperty("prompts")[0];
    static readonly int[] GoldenIds = GoldenPrompt.GetProperty("tokens").EnumerateArray().Select(x => x.GetInt32()).ToArray();

    static float[] GoldenPromptLogits(LlamaWeights weights)
    {
        using var model = new Llama(weights, CpuBackend.Instance);
        using var pass = model.Forward(new TokenBatch([GoldenIds]), LogitRows.All);
        return pass.HostLogits();
    }

    static bool SamePieces(NeuronTrace.Formats.Tokenizers.ITextTokenizer? a, NeuronTrace.Formats.Tokenizers.ITextTokenizer? b) =>
        a is null ? b is null : b is not null && a.VocabSize == b.VocabSize && Enumerable.Range(0, a.VocabSize).All(i => a.Piece(i) == b.Piece(i));

    /// <summary>The hyperparameters that are not shapes: another legal value makes another valid model of the same weights.</summary>
    static IEnumerable<string> ChangedFields(LlamaConfig a, LlamaConfig b) =>
        typeof(LlamaConfig).GetProperties().Where(p => p.GetIndexParameters().Length == 0 && !Equals(p.GetValue(a), p.GetValue(b))).Select(p => p.Name);

    static readonly HashSet<string> ValueFields = ["NormEps", "RopeTheta", "RopeScaling", "MaxSeqLen", "BosId", "EosId"];

    /// <summary>Fuzzes one model file: <paramref name="place"/> writes the mutant where the model is loaded from.</summary>
    static void FuzzModel(string name, byte[] original, int headerEnd, string modelPath, Action<byte[]> place, int seed)
    {
        if (!MemoryMeasurable(out string why)) { Assert.Fail(why); return; }
        var watch = Stopwatch.StartNew();
        var reference = ModelLoader.Load(modelPath);
        var referenceLogits = GoldenPromptLogits(reference.Weights);
        // the golden file is little-endian float32, as this host
        var golden = MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(Path.Combine(RepoPaths.Golden, GoldenPrompt.GetProperty("logits_file").GetString()!))).ToArray();
        Assert.Equal(golden.Length, referenceLogits.Length);
        for (int i = 0; i < golden.Length; i++)
            Assert.True(Math.Abs(referenceLogits[i] - golden[i]) <= 1e-4, $"{name}: the unmutated file's logit {i} is {referenceLogits[i]}, upstream's {golden[i]}");
        var rng = new Random(seed);
        int loaded = 0, noOp = 0, unread = 0, otherVocabulary = 0;
        long worstRise = 0;
        var differentModels = new List<string>();
        for (int i = 0; i < MutantsPerFormat; i++)
        {
            var mutant = Mutate(original, headerEnd, rng, out int kind);
            string what = $"{name} mutant {i} (seed {seed}, mutation {kind}, {mutant.Length - original.Length:+0;-0} bytes)";
            place(mutant);
            // generate, not info: info reads only the headers of some formats, and every mutant must meet the loader whole.
            var (r, rise) = RunMeasured("generate", "--model", modelPath, "--steps", "2");
            AssertContract(r, what);
            worstRise = Math.Max(worstRise, rise);
            Assert.True(rise <= MutantMemoryBoundMiB, $"{what}: peak resident set rose {rise} MiB (bound {MutantMemoryBoundMiB})");
            if (r.Exit != 0) continue;
            loaded++;
            var m = ModelLoader.Load(modelPath);
            var changed = ChangedFields(reference.Config, m.Config).ToList();
            Assert.True(SameWeights(reference.Weights, m.Weights), $"{what} loads with different weights (config fields changed: {string.Join(", ", changed)})");
            if (changed.Count == 0)
            {
                Assert.True(MemoryMarshal.AsBytes(GoldenPromptLogits(m.Weights).AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(referenceLogits.AsSpan())),
                    $"{what} loads with the same config and weights but other logits");
                // The tokenizer is the other thing a model file carries: a changed piece (GGUF vocabulary) is a valid
                // different vocabulary, an unchanged one means the mutant hit bytes the loader does not read.
                if (mutant.AsSpan().SequenceEqual(original)) noOp++;   // e.g. an interesting integer written over the same bytes
                else if (SamePieces(reference.Tokenizer, m.Tokenizer)) unread++;
                else otherVocabulary++;
                continue;
            }
            Assert.True(changed.All(ValueFields.Contains), $"{what} loads as a model of another shape: {string.Join(", ", changed)}");
            differentModels.Add(string.Join("+", changed));
        }
        place(original);
        Assert.True(loaded < MutantsPerFormat, $"{name}: every mutant loaded");
        // Visible in the test log: how many mutants were accepted, which valid hyperparameter changes, the worst memory rise and the time.
        string others = string.Join(", ", differentModels.GroupBy(f => f).Select(g => $"{g.Key} ×{g.Count()}"));
        TestContextOutput.Add($"{name}: {MutantsPerFormat} mutants in {watch.Elapsed.TotalSeconds:F1} s, {loaded} loaded: " +
                              $"{noOp + unread + otherVocabulary} with the golden logits exactly ({noOp} no-op mutations; {unread} changed but with every " +
                              $"tokenizer piece too: bytes the loader does not read, an unread metadata value or padding; {otherVocabulary} with a changed vocabulary piece), " +
                              $"{differentModels.Count} as a valid different model ({others}); peak RSS rose at most {worstRise} MiB");
    }

    [Fact]
    public void Gguf()
    {
        string dir = RepoPaths.TempDir("fuzz-gguf"), path = Path.Combine(dir, "m.gguf");
        byte[] file = File.ReadAllBytes(RepoPaths.Stories260KGguf);
        File.WriteAllBytes(path, file);
        long dataOffset; using (var g = GgufFile.Open(path)) dataOffset = g.DataOffset;
        FuzzModel("gguf", file, (int)dataOffset, path, b => File.WriteAllBytes(path, b), seed: 15);
    }

    [Fact]
    public void Llama2cBin()
    {
        string dir = RepoPaths.TempDir("fuzz-bin"), path = Path.Combine(dir, "m.bin");
        File.Copy(RepoPaths.Tok512, Path.Combine(dir, "tok512.bin"));
        byte[] file = File.ReadAllBytes(RepoPaths.Stories260KBin);
        File.WriteAllBytes(path, file);
        FuzzModel("llama2c", file, 28, path, b => File.WriteAllBytes(path, b), seed: 16);
    }

    [Fact]
    public void SafetensorsHeader()
    {
        string dir = Path.Combine(RepoPaths.TempDir("fuzz-hf"), "hf");
        HfFolderWriter.Write(ModelLoader.Load(RepoPaths.Stories260KBin).Weights, dir, RepoPaths.Tok512);
        string st = Path.Combine(dir, HfFolderFormat.SingleFileName);
        byte[] file = File.ReadAllBytes(st);
        int headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(file);
        FuzzModel("safetensors", file, headerEnd, dir, b => File.WriteAllBytes(st, b), seed: 17);
    }

    [Fact]
    public void HfConfigJson()
    {
        string dir = Path.Combine(RepoPaths.TempDir("fuzz-hfc"), "hf");
        HfFolderWriter.Write(ModelLoader.Load(RepoPaths.Stories260KBin).Weights, dir, RepoPaths.Tok512);
        string config = Path.Combine(dir, "config.json");
        byte[] file = File.ReadAllBytes(config);
        FuzzModel("config.json", file, file.Length, dir, b => File.WriteAllBytes(config, b), seed: 18);
    }

    [Fact]
    public void TaskFile()
    {
        if (!MemoryMeasurable(out string why)) { Assert.Fail(why); return; }
        var watch = Stopwatch.StartNew();
        string dir = RepoPaths.TempDir("fuzz-task"), path = Path.Combine(dir, "t.jsonl");
        var lines = File.ReadLines(Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl")).Take(4).ToArray();
        byte[] file = System.Text.Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n");
        var rng = new Random(19);
        int accepted = 0;
        long worstRise = 0;
        for (int i = 0; i < MutantsPerFormat; i++)
        {
            File.WriteAllBytes(path, Mutate(file, file.Length, rng, out int kind));
            string outDir = Path.Combine(dir, "out" + i), what = $"task mutant {i} (seed 19, mutation {kind})";
            // AtP on one site: the cheapest attribution that parses, tokenizes and checks the whole task.
            var (r, rise) = RunMeasured("attribute", "--task", path, "--limit", "2", "--method", "atp", "--sites", "mlp_act", "--out", outDir);
            AssertContract(r, what);
            worstRise = Math.Max(worstRise, rise);
            Assert.True(rise <= MutantMemoryBoundMiB, $"{what}: peak resident set rose {rise} MiB (bound {MutantMemoryBoundMiB})");
            if (r.Exit != 0) Assert.False(Directory.Exists(outDir), $"{what} left {outDir}");
            else { accepted++; Assert.True(File.Exists(Path.Combine(outDir, "scores.json")), $"{what}: exit 0 without scores.json"); }
            Assert.Empty(Directory.GetFileSystemEntries(dir, ".*")); // no temporaries left
        }
        TestContextOutput.Add($"task: {MutantsPerFormat} mutants in {watch.Elapsed.TotalSeconds:F1} s, {accepted} accepted; peak RSS rose at most {worstRise} MiB");
    }
}

/// <summary>Lines the fuzz tests report (xUnit has no console of its own here; they go to the test's stdout at the end).</summary>
static class TestContextOutput
{
    public static void Add(string line) => Console.Out.WriteLine("fuzz: " + line);
}
