using NeuronTrace.Runtime.Cpu;

namespace NeuronTrace.Runtime.Tests.Cpu;

/// <summary><see cref="SparseMlpOps"/> against the dense mean-ablated MLP written out in double here.</summary>
public class SparseMlpOpsTests
{
    [Fact]
    public void Keep_k_mlp_equals_the_dense_mlp_with_ablated_activations()
    {
        const int dim = 13, hidden = 37, rows = 5, meanRows = 2;
        var rng = new Random(4);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var x = R(rows * dim); var gate = R(hidden * dim); var up = R(hidden * dim); var down = R(dim * hidden); var means = R(meanRows * hidden);
        int[] meanRow = [0, 1, -1, 1, 0];                 // row 2 is padding
        int[][] keptSets = [[3, 0, 36], [], [5]];          // group 1 keeps nothing: its rows are C
        int[][] groupRowsOf = [[0, 3], [1], [4]];
        var groupKept = new[] { 0, 3, 3, 4 };
        var groupRows = new[] { 0, 2, 3, 4 };
        var output = new float[rows * dim];
        var constants = SparseMlpOps.Constants(down, means, dim, hidden);
        SparseMlpOps.Apply(x, gate, up, SparseMlpOps.Transpose(down, dim, hidden), constants, means, rows, dim, hidden, meanRow,
            groupKept, keptSets.SelectMany(k => k).ToArray(), groupRows, groupRowsOf.SelectMany(r => r).ToArray(), output);

        for (int g = 0; g < keptSets.Length; g++)
            foreach (int r in groupRowsOf[g])
            {
                var act = new double[hidden];
                for (int i = 0; i < hidden; i++)
                {
                    if (!keptSets[g].Contains(i)) { act[i] = means[meanRow[r] * hidden + i]; continue; }
                    double a = 0, u = 0;
                    for (int j = 0; j < dim; j++) { a += x[r * dim + j] * gate[i * dim + j]; u += x[r * dim + j] * up[i * dim + j]; }
                    act[i] = a / (1 + Math.Exp(-a)) * u;
                }
                for (int j = 0; j < dim; j++)
                {
                    double want = 0;
                    for (int i = 0; i < hidden; i++) want += down[j * hidden + i] * act[i];
                    Assert.Equal(want, output[r * dim + j], 1e-4);
                }
            }
        Assert.All(output.AsSpan(2 * dim, dim).ToArray(), v => Assert.Equal(0f, v));
        Assert.Throws<ArgumentOutOfRangeException>(() => SparseMlpOps.Apply(x, gate, up, down, constants, means, rows, dim, hidden, meanRow,
            [0, 1], [hidden], [0, 1], [0], output));
    }

    /// <summary>
    /// Many groups sharing neurons (as a forward's masks and positions do), enough work for the parallel path and several
    /// column slices (one of them partial), a row in two groups (its terms add): against the dense MLP in double.
    /// </summary>
    [Fact]
    public void Keep_k_mlp_over_many_groups_equals_the_dense_mlp()
    {
        const int dim = 200, hidden = 96, rows = 30, meanRows = 3;
        var rng = new Random(7);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var x = R(rows * dim); var gate = R(hidden * dim); var up = R(hidden * dim); var down = R(dim * hidden); var means = R(meanRows * hidden);
        var meanRow = Enumerable.Range(0, rows).Select(r => r % 7 == 6 ? -1 : r % meanRows).ToArray();
        var real = Enumerable.Range(0, rows).Where(r => meanRow[r] >= 0).ToArray();
        // Group g: the real rows ≡ g mod 5 (row real[0] also in the last group), each keeping a random half of the neurons.
        var groupRowsOf = Enumerable.Range(0, 5).Select(g => real.Where((_, j) => j % 5 == g).ToArray()).ToList();
        groupRowsOf[4] = [.. groupRowsOf[4], real[0]];
        var keptSets = groupRowsOf.Select(_ => Enumerable.Range(0, hidden).Where(_ => rng.NextDouble() < 0.5).ToArray()).ToList();
        var groupKept = new[] { 0 }.Concat(keptSets.Select(k => k.Length)).ToArray();
        var groupRows = new[] { 0 }.Concat(groupRowsOf.Select(r => r.Length)).ToArray();
        for (int g = 1; g < groupKept.Length; g++) { groupKept[g] += groupKept[g - 1]; groupRows[g] += groupRows[g - 1]; }
        var output = new float[rows * dim];
        var constants = SparseMlpOps.Constants(down, means, dim, hidden);
        SparseMlpOps.Apply(x, gate, up, SparseMlpOps.Transpose(down, dim, hidden), constants, means, rows, dim, hidden, meanRow,
            groupKept, keptSets.SelectMany(k => k).ToArray(), groupRows, groupRowsOf.SelectMany(r => r).ToArray(), output);

        foreach (int r in real)
        {
            // C plus, per group holding the row, the kept neurons' (act − mean) · W_down column.
            var delta = new double[hidden];
            for (int g = 0; g < keptSets.Count; g++)
                if (groupRowsOf[g].Contains(r))
                    foreach (int i in keptSets[g])
                    {
                        double a = 0, u = 0;
                        for (int j = 0; j < dim; j++) { a += x[r * dim + j] * gate[i * dim + j]; u += x[r * dim + j] * up[i * dim + j]; }
                        delta[i] += a / (1 + Math.Exp(-a)) * u - means[meanRow[r] * hidden + i];
                    }
            for (int j = 0; j < dim; j++)
            {
                double want = 0;
                for (int i = 0; i < hidden; i++) want += down[j * hidden + i] * (means[meanRow[r] * hidden + i] + delta[i]);
                Assert.Equal(want, output[r * dim + j], 1e-3);
            }
        }
        foreach (int r in Enumerable.Range(0, rows).Where(r => meanRow[r] < 0))
            Assert.All(output.AsSpan(r * dim, dim).ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Kept_outputs_equal_the_dense_product_at_the_kept_columns_and_zero_elsewhere()
    {
        const int inDim = 21, outDim = 11, rows = 6;
        var rng = new Random(9);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var x = R(rows * inDim); var w = R(outDim * inDim);
        int[][] keptSets = [[10, 2], [], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]];   // a group keeping nothing, one keeping all
        int[][] groupRowsOf = [[5, 1], [0], [3]];                             // rows 2 and 4 are in no group
        var output = Enumerable.Repeat(float.NaN, rows * outDim).ToArray();    // every entry must be written
        SparseMlpOps.KeptOutputs(x, w, rows, inDim, outDim, [0, 2, 2, 13], keptSets.SelectMany(k => k).ToArray(), [0, 2, 3, 4],
            groupRowsOf.SelectMany(r => r).ToArray(), output);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < outDim; j++)
            {
                int g = Array.FindIndex(groupRowsOf, rs => rs.Contains(r));
                double want = 0;
                if (g >= 0 && keptSets[g].Contains(j))
                    for (int i = 0; i < inDim; i++) want += (double)x[r * inDim + i] * w[j * inDim + i];
                Assert.Equal(want, output[r * outDim + j], 1e-5);
            }
        Assert.Throws<ArgumentException>(() => SparseMlpOps.KeptOutputs(x, w, rows, inDim, outDim, [0, 1, 2], [0, 1], [0, 1, 2], [3, 3], output));
        Assert.Throws<ArgumentOutOfRangeException>(() => SparseMlpOps.KeptOutputs(x, w, rows, inDim, outDim, [0, 1], [outDim], [0, 1], [0], output));
        Assert.Throws<ArgumentOutOfRangeException>(() => SparseMlpOps.KeptOutputs(x, w, rows, inDim, outDim, [0, 1], [0], [0, 1], [rows], output));
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(33, 70)]
    [InlineData(64, 31)]
    public void Transpose_moves_every_entry(int rows, int cols)
    {
        var a = Enumerable.Range(0, rows * cols).Select(i => (float)i).ToArray();
        var t = SparseMlpOps.Transpose(a, rows, cols);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) Assert.Equal(a[r * cols + c], t[c * rows + r]);
    }
}
