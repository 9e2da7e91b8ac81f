using System.Buffers.Binary;
using System.Runtime.InteropServices;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// Seeded mutation fuzzing of the parsers through the CLI (in process): bit flips, interesting integers, truncation,
/// insertion and duplication over the bundled GGUF, HF folder (safetensors header and config.json), llama2.c .bin and
/// task files. Every mutant must end in exit 0, 1 or 2, never an internal error, with one printable stderr line on
/// failure and nothing left behind. A model mutant that loads (exit 0) must be the same weights: flips and integers go
/// to the header only (tensor data has no checksum to catch them), so equal weights with equal config are the
/// harmless changes the format allows (a metadata string, unused padding), and a different config is a valid
/// different model (counted and printed, e.g. a changed rope theta).
/// </summary>
[Collection("console")]
public class FuzzTests
{
    const int MutantsPerFormat = 300;
    static readonly long[] Interesting = [0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, int.MaxValue, uint.MaxValue, long.MaxValue, 1L << 40, 31, 32, 33];

    /// <summary>One mutant of <paramref name="file"/>: structural edits anywhere, value edits below <paramref name="headerEnd"/>.</summary>
    static byte[] Mutate(byte[] file, int headerEnd, Random rng) => Mutate(file, headerEnd, rng, out _);

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

    /// <summary>Fuzzes one model file: <paramref name="place"/> writes the mutant where the model is loaded from.</summary>
    static void FuzzModel(string name, byte[] original, int headerEnd, string modelPath, Action<byte[]> place, int seed)
    {
        var reference = ModelLoader.Load(modelPath);
        var rng = new Random(seed);
        int loaded = 0, differentConfig = 0;
        for (int i = 0; i < MutantsPerFormat; i++)
        {
            var mutant = Mutate(original, headerEnd, rng, out int kind);
            place(mutant);
            // generate, not info: info reads only the headers of some formats, and every mutant must meet the loader whole.
            var r = CliHarness.Run("generate", "--model", modelPath, "--steps", "2");
            AssertContract(r, $"{name} mutant {i} (seed {seed})");
            if (r.Exit != 0) continue;
            loaded++;
            var m = ModelLoader.Load(modelPath);
            if (m.Config != reference.Config) { differentConfig++; continue; }
            Assert.True(SameWeights(reference.Weights, m.Weights), $"{name} mutant {i} (seed {seed}, mutation {kind}, {mutant.Length - original.Length:+0;-0} bytes) loads with the same config but different weights");
        }
        place(original);
        Console.Error.Flush();
        // Visible in the test log: how many mutants were accepted, and how many of them as a valid different model.
        Assert.True(loaded < MutantsPerFormat, $"{name}: every mutant loaded");
        TestContextOutput.Add($"{name}: {MutantsPerFormat} mutants, {loaded} loaded ({differentConfig} as a different valid config)");
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
        string dir = RepoPaths.TempDir("fuzz-task"), path = Path.Combine(dir, "t.jsonl");
        var lines = File.ReadLines(Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl")).Take(4).ToArray();
        byte[] file = System.Text.Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n");
        var rng = new Random(19);
        for (int i = 0; i < 100; i++)
        {
            File.WriteAllBytes(path, Mutate(file, file.Length, rng));
            string outDir = Path.Combine(dir, "out" + i);
            var r = CliHarness.Run("attribute", "--task", path, "--limit", "2", "--sites", "mlp_act", "--out", outDir);
            AssertContract(r, $"task mutant {i}");
            if (r.Exit != 0) Assert.False(Directory.Exists(outDir), $"task mutant {i} left {outDir}");
            Assert.Empty(Directory.GetFileSystemEntries(dir, ".*")); // no temporaries left
        }
    }
}

/// <summary>Lines the fuzz tests report (xUnit has no console of its own here; they go to the test's stdout at the end).</summary>
static class TestContextOutput
{
    public static void Add(string line) => Console.Out.WriteLine("fuzz: " + line);
}
