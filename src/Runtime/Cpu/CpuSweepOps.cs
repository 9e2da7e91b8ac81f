using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// <see cref="ISweepOps"/> on the CPU, and the reference of the CUDA kernels in native/kernels/ablation.cu
/// (both exact). Tables are CpuTensors whose words are
/// read as int32 (<see cref="SweepOps.UploadInts"/>).
/// </summary>
internal sealed class CpuSweepOps : ISweepOps
{
    public static CpuSweepOps Instance { get; } = new();
    CpuSweepOps() { }

    static float[] Data(Tensor t) => t is CpuTensor c ? c.Data : throw new ArgumentException($"{t} is not a CPU tensor");
    static ReadOnlySpan<int> Ints(Tensor t) => MemoryMarshal.Cast<float, int>(Data(t).AsSpan());

    public void BuildKeepBits(Tensor ranks, Tensor storedBits, Tensor specs, int firstSpec, int masks, int layers, int positions, int width, Tensor bits)
    {
        SweepOps.CheckBuildKeepBits(ranks, storedBits, specs, firstSpec, masks, layers, positions, width, bits);
        BuildKeepBits(Ints(ranks), MemoryMarshal.Cast<float, uint>(Data(storedBits).AsSpan()), Ints(specs).Slice(3 * firstSpec, 3 * masks),
            layers, positions, width, MemoryMarshal.Cast<float, uint>(Data(bits).AsSpan()));
    }

    /// <summary>The op on plain spans (see <see cref="ISweepOps.BuildKeepBits"/>); specs holds the masks' rows only.</summary>
    public static void BuildKeepBits(ReadOnlySpan<int> ranks, ReadOnlySpan<uint> stored, ReadOnlySpan<int> specs, int layers, int positions, int width, Span<uint> bits)
    {
        int words = AblationMask.WordsPerRow(width), masks = specs.Length / 3;
        long storedRow = (long)layers * positions * words;
        for (int l = 0; l < layers; l++)
            for (int m = 0; m < masks; m++)
            {
                int source = specs[3 * m], k = specs[3 * m + 1];
                bool invert = specs[3 * m + 2] != 0;
                for (int p = 0; p < positions; p++)
                {
                    var row = bits.Slice(((l * masks + m) * positions + p) * words, words);
                    int node = (l * positions + p) * width;
                    for (int w = 0; w < words; w++)
                    {
                        int n = Math.Min(32, width - 32 * w);
                        uint word = 0;
                        if (source < 0)
                        {
                            for (int j = 0; j < n; j++)
                                if (ranks[node + 32 * w + j] < k) word |= 1u << j;
                        }
                        else word = stored[checked((int)(source * storedRow + (l * positions + p) * words + w))];
                        uint valid = n == 32 ? uint.MaxValue : (1u << n) - 1;
                        row[w] = (invert ? ~word : word) & valid;
                    }
                }
            }
    }

    public void MeanAblate(Tensor x, Tensor means, Tensor bits, long firstMaskRow, Tensor keepRow, Tensor meanRow)
    {
        SweepOps.CheckMeanAblate(x, means, bits, firstMaskRow, keepRow, meanRow);
        int words = bits.Columns;
        var allBits = MemoryMarshal.Cast<float, uint>(Data(bits).AsSpan());
        MeanAblationOps.Apply(Data(x), x.Rows, x.Columns, Data(means), allBits[checked((int)(firstMaskRow * words))..],
            Ints(keepRow)[..x.Rows], Ints(meanRow)[..x.Rows]);
    }

    public void GatherRows(Tensor source, Tensor rows, Tensor destination)
    {
        SweepOps.CheckRowsOp(destination, rows, source, "GatherRows");
        CpuBackend.Instance.GatherRows(source, Ints(rows)[..destination.Rows], destination);
    }

    public void ScatterAddRows(Tensor source, Tensor rows, Tensor destination)
    {
        SweepOps.CheckRowsOp(source, rows, destination, "ScatterAddRows");
        CpuBackend.Instance.ScatterAddRows(source, Ints(rows)[..source.Rows], destination);
    }

    public void ReplicaMetric(Tensor logits, Tensor terms, Tensor metric, int firstReplica)
    {
        int replicas = SweepOps.CheckReplicaMetric(logits, terms, metric, firstReplica);
        ReplicaMetric(Data(logits), Data(terms), terms.Rows, logits.Columns, terms.Columns / 2, Data(metric).AsSpan(2 * firstReplica, 2 * replicas));
    }

    /// <summary>The keep-k products read fp32 weights (16-bit CPU weights run dense).</summary>
    public bool KeepKReads(Tensor weight) => weight is CpuTensor;

    /// <summary>Measured on the CPU (bench ksweep, wide model): below an eighth of the pairs the keep-k products win.</summary>
    public double KeepKFraction(bool mlp, long rows, int inDim, int outDim) => 0.125;

    /// <summary>C in double (<see cref="SparseMlpOps.Constants"/>) and W_down's columns as rows, so the product streams them.</summary>
    public KeepKMlp PrepareKeepKMlp(Tensor down, Tensor means)
    {
        int dim = down.Rows, hidden = down.Columns;
        if (means.Columns != hidden) throw new ArgumentException($"PrepareKeepKMlp: means {means} do not have W_down's {hidden} columns");
        var d = Data(down);
        return new KeepKMlp(new CpuTensor(SparseMlpOps.Constants(d, Data(means), dim, hidden), [means.Rows, dim]),
            new CpuTensor(SparseMlpOps.Transpose(d, dim, hidden), [hidden, dim]));
    }

    public void SparseMlp(Tensor x, Tensor gate, Tensor up, Tensor down, KeepKMlp tables, Tensor means, KeepKGroups groups, Tensor output)
    {
        SweepOps.CheckSparseMlp(x, gate, up, down, tables, means, groups, output);
        SparseMlpOps.Apply(Data(x), Data(gate), Data(up), Data(tables.DownColumns ?? throw new ArgumentException("SparseMlp: the CPU reads W_down's columns as rows")),
            Data(tables.Constants), Data(means), x.Rows, x.Columns, gate.Rows, groups.MeanRow, groups.GroupKept, groups.Kept, groups.GroupRows,
            groups.RowsOfGroups, Data(output));
    }

    public void KeptOutputs(Tensor x, Tensor weight, KeepKGroups groups, Tensor output)
    {
        SweepOps.CheckKeptOutputs(x, weight, groups, output);
        SparseMlpOps.KeptOutputs(Data(x), Data(weight), x.Rows, x.Columns, weight.Rows, groups.GroupKept, groups.Kept, groups.GroupRows,
            groups.RowsOfGroups, Data(output));
    }

    /// <summary>The op on plain arrays (see <see cref="ISweepOps.ReplicaMetric"/>): metric holds (hi, lo) of each replica.</summary>
    public static void ReplicaMetric(ReadOnlySpan<float> logits, ReadOnlySpan<float> terms, int examples, int columns, int perRow, Span<float> metric)
    {
        var ints = MemoryMarshal.Cast<float, int>(terms);
        int replicas = metric.Length / 2;
        for (int r = 0; r < replicas; r++)
        {
            double sum = 0;
            for (int b = 0; b < examples; b++)
            {
                var row = logits.Slice((r * examples + b) * columns, columns);
                float v = 0;
                for (int j = 0; j < perRow; j++)
                {
                    int at = 2 * (b * perRow + j), c = ints[at];
                    if (c >= 0) v = MathF.FusedMultiplyAdd(terms[at + 1], row[c], v);
                }
                sum += v;
            }
            float hi = (float)sum;
            metric[2 * r] = hi;
            metric[2 * r + 1] = (float)(sum - hi);
        }
    }
}
