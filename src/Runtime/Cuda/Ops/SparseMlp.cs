using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// The row groups of a keep-k product on the device (native/kernels/sparse_mlp.cu; the CPU op is
/// <see cref="Cpu.SparseMlpOps"/>, whose tables these are): group g keeps units Kept[GroupKept[g] .. GroupKept[g+1]) for
/// rows RowsOfGroups[GroupRows[g] .. GroupRows[g+1]), plus what the kernels derive (each group's first pair, each
/// row's group and place in it), checked on the host when made.
/// </summary>
internal sealed class KeepKGroups : IDisposable
{
    readonly Tensor[] _tables;

    KeepKGroups(int rows, int groups, long pairs, Tensor[] tables) { Rows = rows; Groups = groups; Pairs = pairs; _tables = tables; }

    public int Rows { get; }
    public int Groups { get; }
    /// <summary>(kept unit, row) pairs over all groups: the keep-k product computes this many dot products (pairs).</summary>
    public long Pairs { get; }
    internal Tensor MeanRow => _tables[0];
    internal Tensor GroupKept => _tables[1];
    internal Tensor Kept => _tables[2];
    internal Tensor GroupRows => _tables[3];
    internal Tensor RowsOfGroups => _tables[4];
    internal Tensor PairBase => _tables[5];
    internal Tensor RowGroup => _tables[6];
    internal Tensor RowIndex => _tables[7];

    /// <param name="backend">The backend that holds the tables (the one the sweep runs on).</param>
    /// <param name="meanRow">Per row its mean row, −1 for a padding row.</param>
    /// <param name="meanRows">Rows of the means table; every mean row is below it.</param>
    /// <param name="groupKept">[groups + 1] offsets into <paramref name="kept"/>, from 0, never decreasing.</param>
    /// <param name="kept">The kept units of all groups, group after group.</param>
    /// <param name="groupRows">[groups + 1] offsets into <paramref name="rowsOfGroups"/>, from 0, never decreasing.</param>
    /// <param name="rowsOfGroups">The rows of all groups, group after group; each a real row, in one group at most.</param>
    /// <param name="units">The units' count (hidden for the MLP, the output width for kept outputs): every kept unit is below it.</param>
    public static KeepKGroups Upload(IBackend backend, int[] meanRow, int meanRows, int[] groupKept, int[] kept, int[] groupRows, int[] rowsOfGroups, int units)
    {
        int rows = meanRow.Length, groups = groupKept.Length - 1;
        if (groups < 0 || groupRows.Length != groupKept.Length || groupKept[0] != 0 || groupRows[0] != 0)
            throw new ArgumentException("KeepK: group tables have the wrong length or do not start at 0");
        if (groupKept[^1] > kept.Length || groupRows[^1] > rowsOfGroups.Length) throw new ArgumentException("KeepK: group offsets run past their tables");
        SweepOps.CheckRows(meanRow, meanRows, "KeepK mean rows");
        foreach (int i in kept)
            if ((uint)i >= (uint)units) throw new ArgumentOutOfRangeException(nameof(kept), $"KeepK: unit {i} outside [0, {units})");
        var pairBase = new int[groups + 1];
        var rowGroup = new int[rows];
        var rowIndex = new int[rows];
        Array.Fill(rowGroup, -1);
        long pairs = 0;
        for (int g = 0; g < groups; g++)
        {
            if (groupKept[g] > groupKept[g + 1] || groupRows[g] > groupRows[g + 1]) throw new ArgumentException("KeepK: group offsets decrease");
            pairBase[g] = checked((int)pairs);
            pairs += (long)(groupKept[g + 1] - groupKept[g]) * (groupRows[g + 1] - groupRows[g]);
            for (int q = groupRows[g]; q < groupRows[g + 1]; q++)
            {
                int r = rowsOfGroups[q];
                if ((uint)r >= (uint)rows || meanRow[r] < 0) throw new ArgumentOutOfRangeException(nameof(rowsOfGroups), $"KeepK: group row {r} is not a real row");
                if (rowGroup[r] >= 0) throw new ArgumentException($"KeepK: row {r} is in two groups");
                rowGroup[r] = g;
                rowIndex[r] = q - groupRows[g];
            }
        }
        pairBase[groups] = checked((int)pairs);
        int[][] host = [meanRow, groupKept, kept.Length == 0 ? [0] : kept, groupRows, rowsOfGroups.Length == 0 ? [0] : rowsOfGroups, pairBase, rowGroup, rowIndex];
        return new KeepKGroups(rows, groups, pairs, host.Select(t => SweepOps.UploadInts(backend, t)).ToArray());
    }

    public void Dispose()
    {
        foreach (var t in _tables) t.Dispose();
    }
}

/// <summary>Launchers of native/kernels/sparse_mlp.cu: the keep-k MLP and the kept output columns of a sweep.</summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct KeepKCoefficientsArgs(nint X, nint Gate, nint Up, nint Means, nint MeanRow, nint GroupKept, nint Kept,
        nint GroupRows, nint RowsOfGroups, nint PairBase, nint Coef, int Groups, int Dim, int Hidden);
    internal static readonly Kernel<KeepKCoefficientsArgs> KeepKCoefficientsKernel = Kernel.Declare<KeepKCoefficientsArgs>("keepk_coefficients");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct KeepKDownArgs(nint Coef, nint Down, nint Constants, nint MeanRow, nint RowGroup, nint RowIndex, nint GroupKept,
        nint Kept, nint GroupRows, nint PairBase, nint Out, int Rows, int Dim, int Hidden);
    internal static readonly Kernel<KeepKDownArgs> KeepKDownKernel = Kernel.Declare<KeepKDownArgs>("keepk_down");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct KeptOutputsArgs(nint X, nint Weight, nint GroupKept, nint Kept, nint GroupRows, nint RowsOfGroups, nint PairBase,
        nint Y, int Groups, int InDim, int OutDim);
    internal static readonly Kernel<KeptOutputsArgs> KeptOutputsKernel = Kernel.Declare<KeptOutputsArgs>("kept_outputs");

    /// <summary>Warps per block of the pair kernels (one warp per dot-product pair).</summary>
    const int PairBlock = 256;

    /// <summary>
    /// The keep-k MLP (<see cref="Cpu.SparseMlpOps.Apply"/>) of x [rows, dim] with W_gate, W_up [hidden, dim], W_down
    /// [dim, hidden] (read in place: no transposed copy on the device), C = W_down·mean [mean rows, dim] (one
    /// <see cref="MatMul"/> of the means, made once per sweep) and the means [mean rows, hidden]; output [rows, dim] overwritten.
    /// </summary>
    public void SparseMlp(Tensor x, Tensor gate, Tensor up, Tensor down, Tensor constants, Tensor means, KeepKGroups groups, Tensor output)
    {
        int rows = x.Rows, dim = x.Columns, hidden = gate.Rows;
        if (gate.Columns != dim || up.Rows != hidden || up.Columns != dim || down.Rows != dim || down.Columns != hidden)
            throw new ArgumentException($"SparseMlp: weights {gate}, {up}, {down} do not fit x {x}");
        if (constants.Columns != dim || means.Columns != hidden || means.Rows != constants.Rows) throw new ArgumentException($"SparseMlp: constants {constants} and means {means} do not fit");
        if (groups.Rows != rows || output.Rows != rows || output.Columns != dim) throw new ArgumentException($"SparseMlp: groups of {groups.Rows} rows, output {output}, x {x}");
        if (rows == 0 || dim == 0) return;
        using var _ = Range("sparse_mlp");
        using var coef = Create([(int)Math.Max(1, groups.Pairs)]);
        if (groups.Pairs > 0)
            Launch(KeepKCoefficientsKernel, PairGrid(groups.Pairs), new Dim3(PairBlock), 0,
                new KeepKCoefficientsArgs(Dev(x), Dev(gate), Dev(up), Dev(means), Dev(groups.MeanRow), Dev(groups.GroupKept), Dev(groups.Kept),
                    Dev(groups.GroupRows), Dev(groups.RowsOfGroups), Dev(groups.PairBase), Dev(coef), groups.Groups, dim, hidden),
                new OpWork(4.0 * groups.Pairs * dim, 4.0 * groups.Pairs * 3 * dim));
        Launch(KeepKDownKernel, new Dim3((uint)rows), new Dim3(RowBlock(dim)), 0,
            new KeepKDownArgs(Dev(coef), Dev(down), Dev(constants), Dev(groups.MeanRow), Dev(groups.RowGroup), Dev(groups.RowIndex), Dev(groups.GroupKept),
                Dev(groups.Kept), Dev(groups.GroupRows), Dev(groups.PairBase), Dev(output), rows, dim, hidden),
            new OpWork(2.0 * groups.Pairs * dim, 4.0 * ((double)rows * dim * 2 + groups.Pairs * dim)));
    }

    /// <summary>y = x·Wᵀ at only the columns each row's group keeps, zero elsewhere (<see cref="Cpu.SparseMlpOps.KeptOutputs"/>).</summary>
    public void KeptOutputs(Tensor x, Tensor weight, KeepKGroups groups, Tensor output)
    {
        int rows = x.Rows, inDim = x.Columns, outDim = weight.Rows;
        if (weight.Columns != inDim || output.Rows != rows || output.Columns != outDim || groups.Rows != rows)
            throw new ArgumentException($"KeptOutputs: x {x}, weight {weight}, output {output}, groups of {groups.Rows} rows do not fit");
        if (output.Length == 0) return;
        Fill(output, 0f);
        if (groups.Pairs == 0) return;
        using var _ = Range("kept_outputs");
        Launch(KeptOutputsKernel, PairGrid(groups.Pairs), new Dim3(PairBlock), 0,
            new KeptOutputsArgs(Dev(x), Dev(weight), Dev(groups.GroupKept), Dev(groups.Kept), Dev(groups.GroupRows), Dev(groups.RowsOfGroups),
                Dev(groups.PairBase), Dev(output), groups.Groups, inDim, outDim),
            new OpWork(2.0 * groups.Pairs * inDim, 4.0 * groups.Pairs * 2 * inDim));
    }

    static Dim3 PairGrid(long pairs) => new((uint)Math.Clamp((pairs + PairBlock / 32 - 1) / (PairBlock / 32), 1, MaxGridStrideBlocks));
}
