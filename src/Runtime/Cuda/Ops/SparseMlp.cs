using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

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

    /// <summary>The kernels read fp32 weights only (a bf16 weight of <see cref="GemmPrecision.Bf16"/> runs the layer dense).</summary>
    public bool KeepKReads(Tensor weight) => weight is CudaTensor { IsBf16: false } c && ReferenceEquals(c.Device, device);

    /// <summary>
    /// The break-even of the roofline model on the work the launchers declare (per pair the keep-k kernels read their
    /// weight rows, so they win only where few pairs are kept): the dense product's time (its FLOP at this precision's
    /// tensor-core peak, or its bytes) over the keep-k form's time with every pair kept (its bytes; it runs on CUDA cores).
    /// </summary>
    public double KeepKFraction(bool mlp, long rows, int inDim, int outDim)
    {
        double peak = Precision switch { GemmPrecision.Bf16 => 989e12, GemmPrecision.Tf32 => 495e12, _ => 67e12 }, bandwidth = 3.35e12;
        double weights = mlp ? 3.0 * inDim * outDim : (double)inDim * outDim;
        double dense = Math.Max(2.0 * rows * weights / peak, 4.0 * (weights + rows * (inDim + (mlp ? 2.0 : 1.0) * outDim)) / bandwidth);
        double pairs = (double)rows * outDim;
        double keepK = (mlp ? 4.0 * pairs * 3 * inDim + 4.0 * (rows * inDim * 2.0 + pairs * inDim) : 4.0 * pairs * 2 * inDim) / bandwidth;
        return Math.Min(1, dense / keepK);
    }

    /// <summary>C = W_down · mean by one <see cref="MatMul"/> of the means (once per sweep and layer); W_down is read in place.</summary>
    public KeepKMlp PrepareKeepKMlp(Tensor down, Tensor means)
    {
        if (means.Columns != down.Columns) throw new ArgumentException($"PrepareKeepKMlp: means {means} do not have W_down's {down.Columns} columns");
        var constants = Allocate(means.Rows, down.Rows);
        MatMul(means, down, constants, false);
        return new KeepKMlp(constants, null);
    }

    /// <summary>
    /// The keep-k MLP (<see cref="ISweepOps.SparseMlp"/>; CPU reference <see cref="Cpu.SparseMlpOps.Apply"/>): W_down
    /// [dim, hidden] read in place (no transposed copy on the device); the group tables go up in one copy.
    /// </summary>
    public void SparseMlp(Tensor x, Tensor gate, Tensor up, Tensor down, KeepKMlp tables, Tensor means, KeepKGroups groups, Tensor output)
    {
        SweepOps.CheckSparseMlp(x, gate, up, down, tables, means, groups, output);
        int rows = x.Rows, dim = x.Columns, hidden = gate.Rows;
        if (rows == 0 || dim == 0) return;
        using var _ = Range("sparse_mlp");
        var t = StageGroups(groups);
        using var coef = Create([(int)Math.Max(1, groups.Pairs)]);
        if (groups.Pairs > 0)
            Launch(KeepKCoefficientsKernel, PairGrid(groups.Pairs), new Dim3(PairBlock), 0,
                new KeepKCoefficientsArgs(Dev(x), Dev(gate), Dev(up), Dev(means), t[0], t[1], t[2], t[3], t[4], t[5], Dev(coef), groups.Groups, dim, hidden),
                new OpWork(4.0 * groups.Pairs * dim, 4.0 * groups.Pairs * 3 * dim));
        Launch(KeepKDownKernel, new Dim3((uint)rows), new Dim3(RowBlock(dim)), 0,
            new KeepKDownArgs(Dev(coef), Dev(down), Dev(tables.Constants), t[0], t[6], t[7], t[1], t[2], t[3], t[5], Dev(output), rows, dim, hidden),
            new OpWork(2.0 * groups.Pairs * dim, 4.0 * ((double)rows * dim * 2 + groups.Pairs * dim)));
    }

    /// <summary>y = x·Wᵀ at only the columns each row's group keeps, zero elsewhere (<see cref="Cpu.SparseMlpOps.KeptOutputs"/>).</summary>
    public void KeptOutputs(Tensor x, Tensor weight, KeepKGroups groups, Tensor output)
    {
        SweepOps.CheckKeptOutputs(x, weight, groups, output);
        if (output.Length == 0) return;
        Fill(output, 0f);
        if (groups.Pairs == 0) return;
        using var _ = Range("kept_outputs");
        var t = StageGroups(groups);
        Launch(KeptOutputsKernel, PairGrid(groups.Pairs), new Dim3(PairBlock), 0,
            new KeptOutputsArgs(Dev(x), Dev(weight), t[1], t[2], t[3], t[4], t[5], Dev(output), groups.Groups, x.Columns, weight.Rows),
            new OpWork(2.0 * groups.Pairs * x.Columns, 4.0 * groups.Pairs * 2 * x.Columns));
    }

    // The eight group tables in the index buffer (one copy), as device addresses in KeepKGroups' order.
    nint[] StageGroups(KeepKGroups groups)
    {
        var words = groups.Words(out var offsets);
        nint at = Indices(words);
        return offsets.Select(o => at + (nint)o * sizeof(int)).ToArray();
    }

    static Dim3 PairGrid(long pairs) => new((uint)Math.Clamp((pairs + PairBlock / 32 - 1) / (PairBlock / 32), 1, MaxGridStrideBlocks));
}
