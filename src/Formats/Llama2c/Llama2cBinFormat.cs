using System.Buffers.Binary;
using NeuronTrace.Model;

namespace NeuronTrace.Formats;

/// <summary>
/// llama2.c's legacy checkpoint (<c>run.c</c> "version 0"): a 7×int32 header then float32 arrays back to back.
/// See models/stories260K/NOTICE.md for the layout. The format records no RoPE theta, norm epsilon or token ids,
/// so llama2.c's fixed values (10000, 1e-5, BOS 1, EOS 2) apply.
/// </summary>
internal static class Llama2cBinFormat
{
    public const int HeaderBytes = 7 * 4;
    // Newer llama2.c exports (version 1/2) start with this magic ("ak42") instead of the dim.
    const uint NewFormatMagic = 0x616b3432;

    public static LlamaWeights Load(string path)
    {
        using var file = MappedFile.Open(path);
        var config = ParseHeader(file.Length < HeaderBytes ? [] : file.Span(0, HeaderBytes), file.Length, path);
        int dim = config.Dim, hidden = config.HiddenDim, layers = config.Layers;

        long pos = HeaderBytes;
        float[] Next(long count)
        {
            if (count > Array.MaxLength) throw new ModelFormatException(path, $"an array of {count} floats is too large to load");
            var a = new float[count];
            file.ReadFloats(pos, FloatEncoding.F32, a);
            pos += count * 4;
            return a;
        }
        // Per-layer tensors are stacked [layers, ...] in the file, one kind after another.
        float[][] Stacked(long perLayer)
        {
            var r = new float[layers][];
            for (int l = 0; l < layers; l++) r[l] = Next(perLayer);
            return r;
        }

        int kvDim = config.KvDim;
        var emb = Next((long)config.VocabSize * dim);
        var rmsAtt = Stacked(dim);
        var wq = Stacked((long)dim * dim);
        var wk = Stacked((long)kvDim * dim);
        var wv = Stacked((long)kvDim * dim);
        var wo = Stacked((long)dim * dim);
        var rmsFfn = Stacked(dim);
        var w1 = Stacked((long)hidden * dim);
        var w2 = Stacked((long)dim * hidden);
        var w3 = Stacked((long)hidden * dim);
        var rmsFinal = Next(dim);
        pos += FreqCisFloats(config) * 4; // the precomputed RoPE table: the engine recomputes RoPE
        var wcls = config.TiedEmbeddings ? emb : Next((long)config.VocabSize * dim);

        var weights = new LlamaWeights
        {
            Config = config,
            TokenEmbedding = emb,
            FinalNorm = rmsFinal,
            Classifier = wcls,
            Layers = Enumerable.Range(0, layers).Select(l => new LayerWeights
            {
                AttnNorm = rmsAtt[l], Wq = wq[l], Wk = wk[l], Wv = wv[l], Wo = wo[l],
                FfnNorm = rmsFfn[l], W1 = w1[l], W2 = w2[l], W3 = w3[l],
            }).ToArray(),
        };
        weights.Validate(path);
        return weights;
    }

    /// <summary>
    /// The configuration from the 28-byte header alone, the file's size checked against it: for <c>info</c> and
    /// <c>plan</c>, which read nothing else (exactly <see cref="HeaderBytes"/> bytes of <paramref name="file"/>).
    /// </summary>
    public static LlamaConfig ReadConfig(Stream file, string path)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        int n = file.ReadAtLeast(header, HeaderBytes, throwOnEndOfStream: false);
        return ParseHeader(header[..n], file.Length, path);
    }

    /// <summary>The configuration a header describes, after the checks that need only it and the file's length.</summary>
    static LlamaConfig ParseHeader(ReadOnlySpan<byte> header, long fileLength, string path)
    {
        if (header.Length < HeaderBytes)
            throw new ModelFormatException(path, $"truncated: {fileLength} bytes, expected at least the {HeaderBytes}-byte header");
        var h = new int[7];
        for (int k = 0; k < 7; k++) h[k] = BinaryPrimitives.ReadInt32LittleEndian(header.Slice(4 * k, 4));
        if ((uint)h[0] == NewFormatMagic)
            throw new ModelFormatException(path, $"llama2.c export version {h[1]} (magic \"ak42\") is not supported; export with the legacy format (version 0)");
        int dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kvHeads = h[4], vocabSigned = h[5], seqLen = h[6];

        if (vocabSigned == int.MinValue)
            throw new ModelFormatException(path, $"header vocab_size {vocabSigned} is invalid");
        var config = new LlamaConfig
        {
            Dim = dim, HiddenDim = hidden, Layers = layers, Heads = heads, KvHeads = kvHeads,
            VocabSize = Math.Abs(vocabSigned), MaxSeqLen = seqLen,
            NormEps = 1e-5f, RopeTheta = 10000f, RopeLayout = RopeLayout.Interleaved,
            TiedEmbeddings = vocabSigned > 0, BosId = 1, EosId = 2,
        };
        config.Validate(path);

        long floats = FloatCount(config);
        if (floats < 0 || floats > long.MaxValue / 8)
            throw new ModelFormatException(path, $"header sizes (dim {dim}, hidden {hidden}, layers {layers}, vocab {config.VocabSize}, seq {seqLen}) describe an impossibly large model");
        long expected = HeaderBytes + floats * 4;
        if (fileLength < expected)
            throw new ModelFormatException(path, $"truncated: {fileLength} bytes, expected {expected}");
        if (fileLength > expected)
        {
            long extra = fileLength - expected;
            string hint = config.TiedEmbeddings && extra == (long)config.VocabSize * config.Dim * 4
                ? " (exactly one [vocab, dim] classifier too many: an untied classifier needs a negative vocab_size in the header)"
                : "";
            throw new ModelFormatException(path, $"{fileLength} bytes, expected {expected}: {extra} unexpected trailing bytes{hint}");
        }
        return config;
    }

    /// <summary>
    /// Writes the weights in the legacy layout (Q/K converted to interleaved if needed), atomically: a temporary file
    /// beside <paramref name="path"/> is renamed over it. Throws <see cref="NotSupportedException"/> for settings the
    /// format cannot record (RoPE theta ≠ 10000, RoPE scaling, eps ≠ 1e-5, BOS/EOS ≠ 1/2).
    /// </summary>
    public static void Write(LlamaWeights w, string path)
    {
        w.Validate(path);
        var c = w.Config;
        if (c.RopeTheta != 10000f || c.RopeScaling is not null || c.NormEps != 1e-5f || c.BosId != 1 || c.EosId != 2)
            throw new NotSupportedException($"{path}: the llama2.c format assumes RoPE theta 10000, no RoPE scaling, eps 1e-5, BOS 1, EOS 2; this model has theta {c.RopeTheta}, scaling {(c.RopeScaling is null ? "none" : "llama3")}, eps {c.NormEps}, BOS {c.BosId}, EOS {c.EosId}");
        w = QkPermutation.ToLayout(w, RopeLayout.Interleaved);

        OutputFiles.WriteAtomically(path, fs =>
        {
            Span<byte> header = stackalloc byte[HeaderBytes];
            int[] values = [c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.TiedEmbeddings ? c.VocabSize : -c.VocabSize, c.MaxSeqLen];
            for (int k = 0; k < values.Length; k++) BinaryPrimitives.WriteInt32LittleEndian(header[(4 * k)..], values[k]);
            fs.Write(header);

            void F(float[] a) => OutputFiles.WriteFloats(fs, a, FloatEncoding.F32);
            F(w.TokenEmbedding);
            foreach (var l in w.Layers) F(l.AttnNorm);
            foreach (var l in w.Layers) F(l.Wq);
            foreach (var l in w.Layers) F(l.Wk);
            foreach (var l in w.Layers) F(l.Wv);
            foreach (var l in w.Layers) F(l.Wo);
            foreach (var l in w.Layers) F(l.FfnNorm);
            foreach (var l in w.Layers) F(l.W1);
            foreach (var l in w.Layers) F(l.W2);
            foreach (var l in w.Layers) F(l.W3);
            F(w.FinalNorm);
            // Old readers (run.c before it recomputed RoPE) use this table, so write the real one.
            var (cos, sin) = FreqCis(c);
            F(cos);
            F(sin);
            if (!c.TiedEmbeddings) F(w.Classifier);
        });
    }

    static long FreqCisFloats(LlamaConfig c) => 2L * c.MaxSeqLen * (c.HeadDim / 2);

    static long FloatCount(LlamaConfig c)
    {
        long d = c.Dim, h = c.HiddenDim, kv = c.KvDim, L = c.Layers, v = c.VocabSize;
        // A hostile header (dim near 2^31) overflows even a long: report it rather than wrap around.
        try
        {
            return checked(v * d + L * (2 * d + 2 * d * d + 2 * kv * d + 3 * d * h) + d + FreqCisFloats(c) + (c.TiedEmbeddings ? 0 : v * d));
        }
        catch (OverflowException)
        {
            return -1;
        }
    }

    static (float[] Cos, float[] Sin) FreqCis(LlamaConfig c)
    {
        int half = c.HeadDim / 2;
        var cos = new float[(long)c.MaxSeqLen * half];
        var sin = new float[cos.Length];
        for (int p = 0; p < c.MaxSeqLen; p++)
            for (int i = 0; i < half; i++)
            {
                double freq = 1.0 / Math.Pow(c.RopeTheta, 2.0 * i / c.HeadDim);
                cos[(long)p * half + i] = (float)Math.Cos(p * freq);
                sin[(long)p * half + i] = (float)Math.Sin(p * freq);
            }
        return (cos, sin);
    }
}
