using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// sparse_mlp.cu through CudaBackend.SparseMlp and KeptOutputs (the emulator) against <see cref="SparseMlpOps"/>, the
/// CPU keep-k products: groups of several rows, an empty group, a group keeping every unit, a real row in no group
/// (C alone / zeros), a padding row, widths that are not multiples of a warp. The same sums in other orders (warp
/// dot products, C from one product of the means): 1e-5 of the output's scale.
/// </summary>
public class SparseMlpKernelTests
{
    [Theory]
    [InlineData(8, 48, 20)]
    [InlineData(33, 70, 9)]
    public void Keep_k_products_match_the_cpu(int dim, int hidden, int rows)
    {
        using var cuda = new CudaBackend(new HostKernelRuntime());
        var rng = new Random(dim + hidden);
        const int meanRows = 3;
        float[] x = Rand.Floats(1, rows * dim), gate = Rand.Floats(2, hidden * dim), up = Rand.Floats(3, hidden * dim),
            down = Rand.Floats(4, dim * hidden), means = Rand.Floats(5, meanRows * hidden, -0.5f, 0.5f);
        var meanRow = Enumerable.Range(0, rows).Select(r => r == rows - 1 ? -1 : r % meanRows).ToArray();   // the last row: padding
        // Groups: rows 0..3 keep 3 random units, rows 4..5 keep nothing, row 6 keeps every unit, rows 7.. (but the
        // last two) keep 2; row rows − 2 is in no group.
        List<int[]> groupsRows = [new[] { 0, 1, 2, 3 }, new[] { 4, 5 }, new[] { 6 }, Enumerable.Range(7, rows - 9).ToArray()];
        List<int[]> groupsKept = [Pick(rng, hidden, 3), Array.Empty<int>(), Enumerable.Range(0, hidden).ToArray(), Pick(rng, hidden, 2)];
        var (groupKept, kept, groupRows, rowsOf) = Tables(groupsKept, groupsRows);

        var constants = SparseMlpOps.Constants(down, means, dim, hidden);
        var expected = new float[rows * dim];
        SparseMlpOps.Apply(x, gate, up, SparseMlpOps.Transpose(down, dim, hidden), constants, means, rows, dim, hidden, meanRow,
            groupKept, kept, groupRows, rowsOf, expected);
        using Tensor dx = cuda.Upload(x, rows, dim), dg = cuda.Upload(gate, hidden, dim), du = cuda.Upload(up, hidden, dim),
            dd = cuda.Upload(down, dim, hidden), dm = cuda.Upload(means, meanRows, hidden), dc = cuda.Allocate(meanRows, dim), dout = cuda.Allocate(rows, dim);
        cuda.MatMul(dm, dd, dc, false);   // C = W_down · mean, as the sweep makes it on the device
        var groups = KeepKGroups.Make(meanRow, meanRows, groupKept, kept, groupRows, rowsOf, hidden);
        cuda.SparseMlp(dx, dg, du, dd, new KeepKMlp(dc, null), dm, groups, dout);
        var got = new float[rows * dim];
        cuda.Download(dout, got);
        float scale = expected.Max(Math.Abs);
        Approx.Equal(expected, got, 1e-5f * scale, 0, "sparse_mlp");
        Assert.All(got.AsSpan((rows - 1) * dim, dim).ToArray(), v => Assert.Equal(0f, v));   // padding row

        // Kept outputs of W_down over the activations (inDim hidden, outDim dim): units are output columns.
        List<int[]> outKept = [Pick(rng, dim, 3), Array.Empty<int>(), Enumerable.Range(0, dim).ToArray(), Pick(rng, dim, 1)];
        var (okGroupKept, okKept, _, _) = Tables(outKept, groupsRows);
        var act = Rand.Floats(6, rows * hidden);
        var expectedOut = new float[rows * dim];
        SparseMlpOps.KeptOutputs(act, down, rows, hidden, dim, okGroupKept, okKept, groupRows, rowsOf, expectedOut);
        using Tensor da = cuda.Upload(act, rows, hidden), dy = cuda.Upload(Rand.Floats(7, rows * dim), rows, dim);   // garbage: overwritten
        var okGroups = KeepKGroups.Make(meanRow, meanRows, okGroupKept, okKept, groupRows, rowsOf, dim);
        cuda.KeptOutputs(da, dd, okGroups, dy);
        var gotOut = new float[rows * dim];
        cuda.Download(dy, gotOut);
        Approx.Equal(expectedOut, gotOut, 1e-5f * expectedOut.Max(Math.Abs), 0, "kept_outputs");
    }

    static int[] Pick(Random rng, int n, int k) => Enumerable.Range(0, n).OrderBy(_ => rng.Next()).Take(k).ToArray();

    static (int[] GroupKept, int[] Kept, int[] GroupRows, int[] Rows) Tables(List<int[]> kept, List<int[]> rows)
    {
        var gk = new List<int> { 0 }; var gr = new List<int> { 0 };
        foreach (var k in kept) gk.Add(gk[^1] + k.Length);
        foreach (var r in rows) gr.Add(gr[^1] + r.Length);
        return (gk.ToArray(), kept.SelectMany(k => k).ToArray(), gr.ToArray(), rows.SelectMany(r => r).ToArray());
    }
}
