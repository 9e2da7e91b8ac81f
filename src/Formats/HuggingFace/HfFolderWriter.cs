using System.Text.Json;
using NeuronTrace.Model;

namespace NeuronTrace.Formats;

/// <summary>
/// Writes weights as a Hugging Face <c>LlamaForCausalLM</c> folder (config.json + safetensors) that transformers can
/// load. Interleaved-layout Q/K (llama2.c, GGUF) are permuted per head for rotate_half; RotateHalf weights are written
/// as they are. The folder is built beside the target and renamed into place, so a failure leaves nothing partial.
/// </summary>
internal static class HfFolderWriter
{
    /// <param name="w">The model.</param>
    /// <param name="dir">The folder to create. It must not exist or be empty unless <paramref name="overwrite"/>.</param>
    /// <param name="tokenizerFileToCopy">A tokenizer file (e.g. tok512.bin, tokenizer.json) copied into the folder under its own name.</param>
    /// <param name="dtype">Storage type of every tensor.</param>
    /// <param name="shards">1 for a single model.safetensors; more for model-0000k-of-0000n.safetensors plus an index.</param>
    /// <param name="overwrite">Replace an existing non-empty folder, whatever it holds: the caller decides what may be
    /// replaced (<c>convert --force</c> only allows an empty folder or one holding only files convert writes).</param>
    public static void Write(LlamaWeights w, string dir, string? tokenizerFileToCopy,
        FloatEncoding dtype = FloatEncoding.F32, int shards = 1, bool overwrite = false)
    {
        w.Validate(dir);
        if (tokenizerFileToCopy is not null && !File.Exists(tokenizerFileToCopy))
            throw new ModelFormatException(tokenizerFileToCopy, "file not found");
        var tensors = Tensors(QkPermutation.ToLayout(w, RopeLayout.RotateHalf));
        if (shards < 1 || shards > tensors.Count)
            throw new ArgumentOutOfRangeException(nameof(shards), $"{shards} shards for {tensors.Count} tensors");
        string full = Path.GetFullPath(dir);
        CheckTarget(full, overwrite);

        string tmp = OutputFiles.TempPathBeside(full, "tmp");
        try
        {
            Directory.CreateDirectory(tmp);
            HfConfig.Write(w.Config with { RopeLayout = RopeLayout.RotateHalf }, Path.Combine(tmp, HfConfig.FileName), dtype);
            if (shards == 1)
                WriteShard(tensors, dtype, Path.Combine(tmp, HfFolderFormat.SingleFileName));
            else
                WriteShards(tensors, dtype, shards, tmp);
            if (tokenizerFileToCopy is not null)
                File.Copy(tokenizerFileToCopy, Path.Combine(tmp, Path.GetFileName(tokenizerFileToCopy)));
            MoveIntoPlace(tmp, full, overwrite);
        }
        catch (Exception e)
        {
            OutputFiles.TryDelete(tmp);
            if (OutputFiles.NamingUserPath(e, tmp, full) is { } named) throw named;
            throw;
        }
    }

    sealed record Entry(string Name, float[] Data, long[] Shape);

    /// <summary>HF tensor names and shapes, in checkpoint order.</summary>
    static List<Entry> Tensors(LlamaWeights w)
    {
        var c = w.Config;
        long d = c.Dim, h = c.HiddenDim, kv = c.KvDim, v = c.VocabSize;
        var list = new List<Entry> { new("model.embed_tokens.weight", w.TokenEmbedding, [v, d]) };
        for (int l = 0; l < c.Layers; l++)
        {
            var L = w.Layers[l];
            string p = $"model.layers.{l}.";
            list.Add(new(p + "input_layernorm.weight", L.AttnNorm, [d]));
            list.Add(new(p + "self_attn.q_proj.weight", L.Wq, [d, d]));
            list.Add(new(p + "self_attn.k_proj.weight", L.Wk, [kv, d]));
            list.Add(new(p + "self_attn.v_proj.weight", L.Wv, [kv, d]));
            list.Add(new(p + "self_attn.o_proj.weight", L.Wo, [d, d]));
            list.Add(new(p + "post_attention_layernorm.weight", L.FfnNorm, [d]));
            list.Add(new(p + "mlp.gate_proj.weight", L.W1, [h, d]));
            list.Add(new(p + "mlp.up_proj.weight", L.W3, [h, d]));
            list.Add(new(p + "mlp.down_proj.weight", L.W2, [d, h]));
        }
        list.Add(new("model.norm.weight", w.FinalNorm, [d]));
        if (!c.TiedEmbeddings) list.Add(new("lm_head.weight", w.Classifier, [v, d]));
        return list;
    }

    static long WriteShard(IEnumerable<Entry> tensors, FloatEncoding dtype, string path)
    {
        var sw = new SafetensorsWriter();
        foreach (var t in tensors) sw.Add(t.Name, t.Data, t.Shape, dtype);
        sw.Write(path);
        return sw.DataBytes;
    }

    static void WriteShards(List<Entry> tensors, FloatEncoding dtype, int shards, string folder)
    {
        int size = Float16.SizeOf(dtype);
        long remaining = tensors.Sum(t => t.Data.LongLength * size);
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        long total = 0;
        int next = 0;
        for (int k = 0; k < shards; k++)
        {
            // Fill each shard to an equal share of what is left, keeping at least one tensor for every later shard.
            long target = remaining / (shards - k);
            var group = new List<Entry>();
            long bytes = 0;
            while (next < tensors.Count - (shards - k - 1) && (group.Count == 0 || bytes < target || k == shards - 1))
            {
                group.Add(tensors[next]);
                bytes += tensors[next].Data.LongLength * size;
                next++;
            }
            remaining -= bytes;
            string name = $"model-{k + 1:D5}-of-{shards:D5}.safetensors";
            total += WriteShard(group, dtype, Path.Combine(folder, name));
            foreach (var t in group) weightMap[t.Name] = name;
        }

        OutputFiles.WriteAtomically(Path.Combine(folder, HfFolderFormat.IndexFileName), s =>
        {
            using var w = new Utf8JsonWriter(s, new JsonWriterOptions { Indented = true });
            w.WriteStartObject();
            w.WriteStartObject("metadata");
            w.WriteNumber("total_size", total);
            w.WriteEndObject();
            w.WriteStartObject("weight_map");
            foreach (var (tensor, file) in weightMap) w.WriteString(tensor, file);
            w.WriteEndObject();
            w.WriteEndObject();
        });
    }

    static void CheckTarget(string dir, bool overwrite)
    {
        if (File.Exists(dir)) throw new IOException($"{dir}: exists and is a file");
        if (!overwrite && Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any())
            throw new IOException($"{dir}: already exists and is not empty");
    }

    static void MoveIntoPlace(string tmp, string dir, bool overwrite)
    {
        CheckTarget(dir, overwrite);
        if (!Directory.Exists(dir))
        {
            Directory.Move(tmp, dir);
            return;
        }
        // Directory.Move cannot replace a folder: park the old one, move the new one in, then drop the old one.
        string old = OutputFiles.TempPathBeside(dir, "old");
        Directory.Move(dir, old);
        try
        {
            Directory.Move(tmp, dir);
        }
        catch
        {
            Directory.Move(old, dir);
            throw;
        }
        OutputFiles.TryDelete(old);
    }
}
