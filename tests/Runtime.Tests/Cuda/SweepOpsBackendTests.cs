using System.Runtime.InteropServices;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// <see cref="ISweepOps"/> of the CUDA backend (over the emulator) against the CPU's, through the launchers: the spec
/// offset of BuildKeepBits, the mask-row offset and the first rows of longer row tables in MeanAblate, the resident
/// row gather and scatter-add, the metric rows of ReplicaMetric; and the IBackend ops they replace (MeanAblate,
/// GatherRows, ScatterAddRows with host spans) as the reference of the table forms. All exact.
/// </summary>
public class SweepOpsBackendTests
{
    [Fact]
    public void The_table_ops_match_the_cpu_and_the_span_ops()
    {
        using var cuda = new CudaBackend(new HostKernelRuntime());
        var cpu = CpuBackend.Instance;
        ISweepOps gpuOps = SweepOps.Of(cuda)!, cpuOps = SweepOps.Of(cpu)!;
        Assert.Same(cuda, gpuOps);
        const int layers = 2, positions = 3, width = 45, masks = 3, rows = 20, meanRows = 4;
        int n = layers * positions * width, words = AblationMask.WordsPerRow(width);
        var rng = new Random(4);
        var ranks = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).ToArray();
        var stored = Enumerable.Range(0, layers * positions * words).Select(_ => (uint)rng.Next() & 0x1fffu).ToArray();
        stored = stored.Select((w, i) => i % words == words - 1 ? w & ((1u << (width % 32)) - 1) : w).ToArray();
        int[] specs = [9, 9, 9, -1, n / 2, 0, 0, 0, 1, -1, 5, 1];   // row 0 unused: the chunk's masks are spec rows 1..3
        Tensor On(IBackend be, int[] v) => SweepOps.UploadInts(be, v);
        using Tensor cRanks = On(cpu, ranks), gRanks = On(cuda, ranks), cStored = SweepOps.UploadBits(cpu, stored, words),
            gStored = SweepOps.UploadBits(cuda, stored, words), cSpecs = cpu.Upload(MemoryMarshal.Cast<int, float>(specs.AsSpan()), 4, 3),
            gSpecs = cuda.Upload(MemoryMarshal.Cast<int, float>(specs.AsSpan()), 4, 3);
        using Tensor cBits = cpu.Allocate(layers * masks * positions, words), gBits = cuda.Allocate(layers * masks * positions, words);
        cpuOps.BuildKeepBits(cRanks, cStored, cSpecs, 1, masks, layers, positions, width, cBits);
        gpuOps.BuildKeepBits(gRanks, gStored, gSpecs, 1, masks, layers, positions, width, gBits);
        var bits = cBits.Span.ToArray();
        Assert.Equal(MemoryMarshal.Cast<float, int>(bits).ToArray(), MemoryMarshal.Cast<float, int>(Host(cuda, gBits)).ToArray());

        // Layer 1's block of mask rows; row maps longer than x (a forward of fewer masks reads their first rows).
        var hostBits = MemoryMarshal.Cast<float, uint>(bits.AsSpan()).ToArray();
        var (keepRow, meanRow) = MeanAblateTests.RowMaps(7, rows + 5, masks * positions, meanRows);
        float[] x = Rand.Floats(1, rows * width), means = Rand.Floats(2, meanRows * width, 5f, 6f);
        var expected = CpuBackend.Wrap((float[])x.Clone(), rows, width);
        cpu.MeanAblate(expected, CpuBackend.Wrap(means, meanRows, width), hostBits.AsSpan(masks * positions * words, masks * positions * words),
            keepRow.AsSpan(0, rows), meanRow.AsSpan(0, rows));
        using Tensor cx = cpu.Upload(x, rows, width), gx = cuda.Upload(x, rows, width), cm = cpu.Upload(means, meanRows, width), gm = cuda.Upload(means, meanRows, width);
        using Tensor ck = On(cpu, keepRow), gk = On(cuda, keepRow), cr = On(cpu, meanRow), gr = On(cuda, meanRow);
        cpuOps.MeanAblate(cx, cm, cBits, masks * positions, ck, cr);
        gpuOps.MeanAblate(gx, gm, gBits, masks * positions, gk, gr);
        Assert.Equal(expected.Data, cx.Span.ToArray());
        Assert.Equal(expected.Data, Host(cuda, gx));

        // Gather of 6 rows from a table of 9, scatter-add back with a repeated row.
        int[] table = [3, 0, 19, 3, 7, 11, 2, 2, 2];
        using Tensor ct = On(cpu, table), gt = On(cuda, table);
        using Tensor cg = cpu.Allocate(6, width), gg = cuda.Allocate(6, width);
        cpuOps.GatherRows(cx, ct, cg);
        gpuOps.GatherRows(gx, gt, gg);
        var gathered = cpu.Allocate(6, width);
        cpu.GatherRows(cx, table.AsSpan(0, 6), gathered);
        Assert.Equal(gathered.Span.ToArray(), cg.Span.ToArray());
        Assert.Equal(gathered.Span.ToArray(), Host(cuda, gg));
        var scattered = CpuBackend.Wrap(expected.Data.ToArray(), rows, width);   // the ablated x
        cpu.ScatterAddRows(gathered, table.AsSpan(0, 6), scattered);
        cpuOps.ScatterAddRows(cg, ct, cx);
        gpuOps.ScatterAddRows(gg, gt, gx);
        Assert.Equal(scattered.Data, cx.Span.ToArray());
        Assert.Equal(scattered.Data, Host(cuda, gx));

        // The metric of 3 replicas of 2 examples (the gathered rows as logits) into rows 1..3 of a [5, 2] table.
        var termTable = SweepOps.TermsTable([[(4, 1f), (40, -1f)], [(0, 1f)]], width, out int perRow);
        Assert.Equal(2, perRow);
        using Tensor cterms = cpu.Upload(termTable, 2, 2 * perRow), gterms = cuda.Upload(termTable, 2, 2 * perRow);
        using Tensor cmet = cpu.Allocate(5, 2), gmet = cuda.Allocate(5, 2);
        cpuOps.ReplicaMetric(cg, cterms, cmet, 1);
        gpuOps.ReplicaMetric(gg, gterms, gmet, 1);
        float[] a = cmet.Span.ToArray(), b = Host(cuda, gmet), rowsOut = cg.Span.ToArray();
        Assert.Equal(a, b);
        Assert.Equal([0f, 0f], a[..2]);
        for (int r = 0; r < 3; r++)
        {
            double m = (double)(rowsOut[(2 * r) * width + 4] - rowsOut[(2 * r) * width + 40]) + rowsOut[(2 * r + 1) * width];
            Assert.Equal(m, (double)a[2 * (r + 1)] + a[2 * (r + 1) + 1], 12);
        }
    }

    static float[] Host(CudaBackend be, Tensor t)
    {
        var h = new float[t.Length];
        be.Download(t, h);
        return h;
    }
}
