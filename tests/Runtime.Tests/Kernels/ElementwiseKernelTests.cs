using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// elementwise.cu against <see cref="CpuBackend"/>: add (in place and into a third tensor), intervene (fused multiply-add on both sides), multiply, fill,
/// gather and scatter-add with repeated indices. One IEEE operation per element in the same order, so exact
/// (tolerance 0). Sizes around the block size, and grids smaller than the data (the grid-stride loops).
/// </summary>
public class ElementwiseKernelTests
{
    // n, block, grid (0 = enough blocks)
    public static IEnumerable<object[]> Cases => KernelTargets.Cross([[1, 256, 0u], [255, 256, 0u], [1000, 64, 3u], [4097, 256, 0u], [300, 33, 0u]]);

    static Dim3 Grid(long n, int block, uint grid) => new(grid == 0 ? KernelLaunch.Blocks(n, block) : grid);

    [Theory]
    [MemberData(nameof(Cases))]
    public void Add_intervene_multiply_fill_match_cpu(string target, int n, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var cpu = CpuBackend.Instance;
        float[] x = Rand.Floats(n, n, -3f, 3f), a = Rand.Floats(n + 1, n, -3f, 3f), b = Rand.Floats(n + 2, n, -3f, 3f);
        var g = Grid(n, block, grid);
        var bk = new Dim3((uint)block);

        var ex = CpuBackend.Wrap((float[])x.Clone(), n);
        cpu.Add(ex, CpuBackend.Wrap(a, n));
        using (var dx = DeviceArray.Upload(rt, x))
        using (var da = DeviceArray.Upload(rt, a))
        {
            rt.Run("add_inplace", g, bk, 0, dx, da, (long)n);
            Approx.Equal(ex.Data, dx.Download(), 0, 0, "add");
        }

        ex = new CpuTensor(n);
        ((IBackend)cpu).AddInto(CpuBackend.Wrap(x, n), CpuBackend.Wrap(a, n), ex);   // the default: copy, then add
        using (var dx = DeviceArray.Upload(rt, x))
        using (var da = DeviceArray.Upload(rt, a))
        using (var dsum = DeviceArray.Upload(rt, b))
        {
            rt.Run("add_into", g, bk, 0, dsum, dx, da, (long)n);
            Approx.Equal(ex.Data, dsum.Download(), 0, 0, "add into");
            Approx.Equal(x, dx.Download(), 0, 0, "add into leaves a");
        }

        ex = CpuBackend.Wrap((float[])x.Clone(), n);
        cpu.Intervene(ex, CpuBackend.Wrap(a, n), CpuBackend.Wrap(b, n));
        using (var dx = DeviceArray.Upload(rt, x))
        using (var da = DeviceArray.Upload(rt, a))
        using (var db = DeviceArray.Upload(rt, b))
        {
            rt.Run("intervene_inplace", g, bk, 0, dx, da, db, (long)n);
            Approx.Equal(ex.Data, dx.Download(), 0, 0, "intervene");
        }

        ex = CpuBackend.Wrap((float[])x.Clone(), n);
        cpu.Multiply(ex, CpuBackend.Wrap(a, n));
        using (var dx = DeviceArray.Upload(rt, x))
        using (var da = DeviceArray.Upload(rt, a))
        {
            rt.Run("multiply_inplace", g, bk, 0, dx, da, (long)n);
            Approx.Equal(ex.Data, dx.Download(), 0, 0, "multiply");
        }

        using (var dx = DeviceArray.Floats(rt, n))
        {
            rt.Run("fill_f32", g, bk, 0, dx, -0.75f, (long)n);
            Assert.All(dx.Download(), v => Assert.Equal(-0.75f, v));
        }
    }

    // source rows, width, index count, block
    public static IEnumerable<object[]> RowCases => KernelTargets.Cross([[1, 1, 1, 32], [10, 37, 25, 256], [6, 300, 9, 64], [50, 8, 200, 33]]);

    [Theory]
    [MemberData(nameof(RowCases))]
    public void Gather_and_scatter_add_rows_match_cpu(string target, int tableRows, int width, int count, int block)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var cpu = CpuBackend.Instance;
        int[] rows = Rand.Ints(count + width, count, tableRows);  // repeats when count > tableRows
        float[] table = Rand.Floats(width, tableRows * width), packed = Rand.Floats(width + 1, count * width);

        var gathered = new CpuTensor(count, width);
        cpu.GatherRows(CpuBackend.Wrap(table, tableRows, width), rows, gathered);
        using (var ds = DeviceArray.Upload(rt, table))
        using (var di = DeviceArray.Upload(rt, rows))
        using (var dd = DeviceArray.Floats(rt, count * width))
        {
            rt.Run("gather_rows", new Dim3(KernelLaunch.Blocks((long)count * width, block)), new Dim3((uint)block), 0, ds, di, dd, count, width, tableRows);
            Approx.Equal(gathered.Data, dd.Download(), 0, 0, "gather");
        }

        var scattered = CpuBackend.Wrap((float[])table.Clone(), tableRows, width);
        cpu.ScatterAddRows(CpuBackend.Wrap(packed, count, width), rows, scattered);
        using (var ds = DeviceArray.Upload(rt, packed))
        using (var di = DeviceArray.Upload(rt, rows))
        using (var dd = DeviceArray.Upload(rt, table))
        {
            rt.Run("scatter_add_rows", new Dim3(KernelLaunch.Blocks(width, block)), new Dim3((uint)block), 0, ds, di, dd, count, width, tableRows);
            Approx.Equal(scattered.Data, dd.Download(), 0, 0, "scatter-add");
        }
    }
}
