using NeuronTrace.Runtime.Cpu;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cpu;

/// <summary>
/// The CPU backend's ops that split across cores above <see cref="CpuParallel.MinElements"/> (CpuParallel.cs): at sizes
/// past the threshold, with lengths off the 16-value piece alignment, each must give exactly what the op computes on one
/// thread: RMSNorm and SwiGLU against their serial routines (tested against references of their own in
/// RmsNormOpsTests and SwiGluOpsTests), the score sums against the definition written here, row gathers and copies
/// against plain copies. Bit-for-bit: a piece that took a different path (a scalar tail mid-row, a row counted twice or
/// not at all, rows sharing a position added out of order) changes values.
/// </summary>
public class CpuParallelOpsTests
{
    static readonly CpuBackend B = CpuBackend.Instance;

    static float[] Random(int n, int seed, float lo = -2f, float hi = 2f)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = lo + (float)rng.NextDouble() * (hi - lo);
        return a;
    }

    static float[] Read(Tensor t)
    {
        var d = new float[t.Length];
        B.Download(t, d);
        return d;
    }

    [Fact]
    public void SplitsArePiecesOfAlignedWholeRangesAndSmallWorkStaysInOnePiece()
    {
        var pieces = new List<(int, int)>();
        CpuParallel.For(1000, CpuParallel.MinElements, 16, (s, e) => { lock (pieces) pieces.Add((s, e)); });
        pieces.Sort();
        Assert.Equal(0, pieces[0].Item1);
        Assert.Equal(1000, pieces[^1].Item2);
        for (int i = 1; i < pieces.Count; i++) Assert.Equal(pieces[i - 1].Item2, pieces[i].Item1);
        Assert.All(pieces.SkipLast(1), p => Assert.Equal(0, p.Item2 % 16));
        Assert.Equal(Math.Min(Environment.ProcessorCount, 63), pieces.Count);
        pieces.Clear();
        CpuParallel.For(1000, CpuParallel.MinElements - 1, 16, (s, e) => pieces.Add((s, e)));
        Assert.Equal([(0, 1000)], pieces);
    }

    [Fact]
    public void RmsNormForwardAndBackwardEqualTheSerialRoutine()
    {
        int rows = 521, dim = 2049;   // 1.07M values, an odd row length
        var x = Random(rows * dim, 1);
        var w = Random(dim, 2, 0.5f, 1.5f);
        var dy = Random(rows * dim, 3);
        var dx0 = Random(rows * dim, 4);
        var wantY = new float[rows * dim];
        var wantRstd = new float[rows];
        RmsNormOps.Forward(x, w, 1e-5f, wantY, wantRstd, rows, dim);
        using var tx = B.Upload(x, rows, dim);
        using var tw = B.Upload(w, dim);
        using var ty = B.Allocate(rows, dim);
        using var tr = B.Allocate(rows);
        B.RmsNorm(tx, tw, 1e-5f, ty, tr);
        Assert.Equal(wantY, Read(ty));
        Assert.Equal(wantRstd, Read(tr));
        foreach (var rule in new[] { NormRule.Exact, NormRule.FrozenScale })
        {
            var wantDx = (float[])dx0.Clone();
            RmsNormOps.Backward(dy, x, w, wantRstd, rule, wantDx, rows, dim);
            using var tdy = B.Upload(dy, rows, dim);
            using var tdx = B.Upload(dx0, rows, dim);
            B.RmsNormBackward(tdy, tx, tw, tr, rule, tdx);
            Assert.Equal(wantDx, Read(tdx));
        }
    }

    [Fact]
    public void SwiGluForwardAndBackwardEqualTheSerialRoutine()
    {
        int n = 1_100_007;   // past the threshold, not a multiple of 8: the scalar tail stays the whole range's
        var g = Random(n, 5, -6f, 6f);
        var u = Random(n, 6);
        var dh = Random(n, 7);
        var wantH = new float[n];
        SwiGluOps.Forward(g, u, wantH);
        using var tg = B.Upload(g, n);
        using var tu = B.Upload(u, n);
        using var th = B.Allocate(n);
        B.SwiGlu(tg, tu, th);
        Assert.Equal(wantH, Read(th));
        foreach (var rule in new[] { GateRule.Exact, GateRule.IdentityHalf, GateRule.Identity })
        {
            var wantDg = new float[n];
            var wantDu = new float[n];
            SwiGluOps.Backward(dh, g, u, rule, wantDg, wantDu);
            using var tdh = B.Upload(dh, n);
            using var tdg = B.Allocate(n);
            using var tdu = B.Allocate(n);
            B.SwiGluBackward(tdh, tg, tu, rule, tdg, tdu);
            Assert.Equal(wantDg, Read(tdg));
            Assert.Equal(wantDu, Read(tdu));
        }
    }

    [Fact]
    public void ScoreSumsEqualTheDefinitionForEveryBaselineWithRowsSharingPositions()
    {
        int rows = 130, width = 8197, positions = 7, sumsRows = 12, sumsWidth = width + 21, firstRow = 3, firstColumn = 5;
        var clean = Random(rows * width, 8);
        var grad = Random(rows * width, 9);
        var perRow = Random(rows * width, 10);
        var perPosition = Random(sumsRows * width, 11);
        var start = Random(sumsRows * sumsWidth, 12);
        var positionOf = Enumerable.Range(0, rows).Select(r => (r * 5) % positions).ToArray();   // each position several times
        const float scale = 0.37f;
        foreach (var kind in new[] { ScoreBaselineKind.Zero, ScoreBaselineKind.PerRow, ScoreBaselineKind.PerPosition })
        {
            var want = (float[])start.Clone();
            for (int r = 0; r < rows; r++)
            {
                int row = firstRow + positionOf[r];
                for (int j = 0; j < width; j++)
                {
                    float b = kind switch
                    {
                        ScoreBaselineKind.PerRow => perRow[r * width + j],
                        ScoreBaselineKind.PerPosition => perPosition[row * width + j],
                        _ => 0f,
                    };
                    float product = (b - clean[r * width + j]) * grad[r * width + j] * scale;
                    want[row * sumsWidth + firstColumn + j] += product;
                }
            }
            using var tc = B.Upload(clean, rows, width);
            using var tg = B.Upload(grad, rows, width);
            using var tb = kind == ScoreBaselineKind.PerRow ? B.Upload(perRow, rows, width) : B.Upload(perPosition, sumsRows, width);
            using var ts = B.Upload(start, sumsRows, sumsWidth);
            var baseline = kind switch
            {
                ScoreBaselineKind.PerRow => ScoreBaseline.PerRow(tb),
                ScoreBaselineKind.PerPosition => ScoreBaseline.PerPosition(tb),
                _ => ScoreBaseline.Zero,
            };
            B.AccumulateScores(tc, baseline, tg, scale, positionOf, ts, firstRow, firstColumn);
            Assert.Equal(want, Read(ts));
        }
    }

    [Fact]
    public void RowGathersAndCopiesEqualPlainCopies()
    {
        int rows = 360, width = 3001;
        var src = Random(rows * width, 13);
        var pick = Enumerable.Range(0, 400).Select(i => (i * 37) % rows).ToArray();   // repeats, out of order
        var want = new float[pick.Length * width];
        for (int i = 0; i < pick.Length; i++) Array.Copy(src, pick[i] * width, want, i * width, width);
        using var ts = B.Upload(src, rows, width);
        using var td = B.Allocate(pick.Length, width);
        B.GatherRows(ts, pick, td);
        Assert.Equal(want, Read(td));
        using var tc = B.Allocate(rows, width);
        B.Copy(ts, tc);
        Assert.Equal(src, Read(tc));
    }

    /// <summary>The CPU backend hands a tensor's values over in place (no host array of its own): the values, all of them.</summary>
    [Fact]
    public void ReadOnHostHandsOverTheTensorsValues()
    {
        var src = Random(3 * 1111, seed: 7);
        using var t = B.Upload(src, 3, 1111);
        float[]? seen = null;
        ((IBackend)B).ReadOnHost(t, v => seen = v.ToArray());
        Assert.Equal(src, seen);
        float[]? rows = null;
        B.StartReadOnHost(t, 1, 2).Read(v => rows = v.ToArray());
        Assert.Equal(src.AsSpan(1111, 2222).ToArray(), rows);
    }
}
