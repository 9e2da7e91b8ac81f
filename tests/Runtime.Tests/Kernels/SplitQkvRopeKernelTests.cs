using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// rope.cu's split_qkv_rope_bf16 (issue 13 item 5: the forward's Q/K/V split and both RoPE launches as one): against
/// <see cref="RopeOps"/> on the split columns (1e-6 abs + rel, <see cref="RopeKernelTests"/>' tolerance), v copied
/// exactly, every bf16 shadow the rounding of its own fp32 output; and bit for bit what the launches it replaces
/// (split_columns_bf16, then rope_apply_bf16 on q and on k) give on the same target, fp32 and bf16 alike.
/// </summary>
public class SplitQkvRopeKernelTests
{
    // rows = batch · seqLen, heads, kvHeads, headDim, seqLen, block, grid (0: one item a thread)
    public static IEnumerable<object[]> Cases => KernelTargets.Cross(
        from s in new object[][]
        {
            [1, 1, 1, 2, 1, 32, 0u], [6, 4, 2, 8, 3, 256, 0u], [10, 4, 1, 64, 5, 128, 3u], [7, 2, 2, 6, 7, 33, 0u], [34, 4, 2, 16, 17, 256, 0u],
        }
        from interleaved in new[] { true, false }
        select (object[])[.. s, interleaved]);

    [Theory]
    [MemberData(nameof(Cases))]
    public void Matches_the_split_and_the_two_rope_launches_it_replaces_and_the_cpu_op(string target, int rows, int heads, int kvHeads, int headDim,
        int seqLen, int block, uint grid, bool interleaved)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        int wq = heads * headDim, wk = kvHeads * headDim, wv = kvHeads * headDim, width = wq + wk + wv;
        var src = Rand.Floats(rows + headDim, rows * width, -3f, 3f);
        var (cos, sin) = RopeKernelTests.Tables(seqLen, headDim);
        using var ds = DeviceArray.Upload(rt, src);
        using var dc = DeviceArray.Upload(rt, cos);
        using var dsin = DeviceArray.Upload(rt, sin);
        var parts = new[] { wq, wk, wv };
        DeviceArray[] Outputs() => parts.Select(w => DeviceArray.Floats(rt, rows * w)).ToArray();
        DeviceArray[] Shadows() => parts.Select(w => DeviceArray.Floats(rt, (rows * w + 1) / 2)).ToArray();
        var (fused, fused16, split, split16) = (Outputs(), Shadows(), Outputs(), Shadows());
        try
        {
            long items = (long)rows * (wq / 2 + wk / 2 + wv);
            rt.Run("split_qkv_rope_bf16", new Dim3(grid == 0 ? KernelLaunch.Blocks(items, block) : grid), new Dim3((uint)block), 0,
                ds, rows, fused[0], fused16[0], wq, fused[1], fused16[1], wk, fused[2], fused16[2], wv, dc, dsin, headDim, seqLen, interleaved ? 1 : 0);

            rt.Run("split_columns_bf16", new Dim3(KernelLaunch.Blocks((long)rows * width, block)), new Dim3((uint)block), 0,
                ds, rows, split[0], split16[0], wq, split[1], split16[1], wk, split[2], split16[2], wv);
            for (int p = 0; p < 2; p++)
            {
                int h = p == 0 ? heads : kvHeads;
                rt.Run("rope_apply_bf16", new Dim3(KernelLaunch.Blocks((long)rows * h * (headDim / 2), block)), new Dim3((uint)block), 0,
                    split[p], dc, dsin, split16[p], h * headDim, rows, h, headDim, seqLen, interleaved ? 1 : 0, 0);
            }

            for (int p = 0; p < 3; p++)
            {
                int w = parts[p], before = p == 0 ? 0 : p == 1 ? wq : wq + wk;
                var expected = new float[rows * w];
                for (int r = 0; r < rows; r++) Array.Copy(src, r * width + before, expected, r * w, w);
                if (p < 2) RopeOps.Apply(expected, rows, p == 0 ? heads : kvHeads, headDim, seqLen, cos, sin, interleaved, inverse: false);
                float[] got = fused[p].Download(), reference = split[p].Download();
                if (p == 2) Assert.Equal(expected, got);
                else Approx.Equal(expected, got, 1e-6f, 1e-6f, $"part {p} against the CPU op");
                Assert.Equal(reference, got);   // bit for bit, NaN-free inputs
                ushort[] halves = Bf16KernelTests.Halves(fused16[p], rows * w), referenceHalves = Bf16KernelTests.Halves(split16[p], rows * w);
                for (int i = 0; i < rows * w; i++)
                    Assert.True(Bf16KernelTests.Round(got[i]) == halves[i], $"part {p} shadow [{i}]: expected 0x{Bf16KernelTests.Round(got[i]):X4}, got 0x{halves[i]:X4}");
                Assert.Equal(referenceHalves, halves);
            }
        }
        finally
        {
            foreach (var a in fused.Concat(fused16).Concat(split).Concat(split16)) a.Dispose();
        }
    }
}
