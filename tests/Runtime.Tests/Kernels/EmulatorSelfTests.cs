using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// The execution model the kernels rely on (selftest.cu), checked against CUDA's documented semantics: on the
/// host this tests the emulator, on a GPU it confirms the emulator and the hardware agree. Plus the emulator's
/// refusals of broken kernels and launches (host only: on a GPU those are undefined or a driver error).
/// </summary>
public class EmulatorSelfTests
{
    [Theory]
    [MemberData(nameof(ShuffleCases))]
    public void Shuffles_follow_cuda_lane_rules(string target, int threads)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        using var o = DeviceArray.Upload(rt, new int[threads * 6]);
        rt.Run("selftest_shuffles", new Dim3(1), new Dim3((uint)threads), 0, o);
        int[] got = o.DownloadInts();
        for (int t = 0; t < threads; t++)
        {
            int lane = t & 31, warp = t - lane;
            int[] expected =
            [
                warp + (lane ^ 5),
                lane + 3 < 32 ? t + 3 : t,
                warp + 7,
                lane >= 2 ? t - 2 : t,
                warp + (lane & ~7) + 3,
                unchecked((int)0xaaaaaaaau),
            ];
            Assert.Equal(expected, got[(t * 6)..(t * 6 + 6)]);
        }
    }

    public static IEnumerable<object[]> ShuffleCases => KernelTargets.Cross([[32], [96]]);

    [Theory]
    [MemberData(nameof(BarrierCases))]
    public void Syncthreads_is_a_real_barrier(string target, int threads, int blocks)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        const int rounds = 3;
        using var o = DeviceArray.Upload(rt, new int[threads * blocks]);
        rt.Run("selftest_barrier_rotate", new Dim3((uint)blocks), new Dim3((uint)threads), 0, o, rounds);
        int[] got = o.DownloadInts();
        for (int b = 0; b < blocks; b++)
            for (int t = 0; t < threads; t++)
                Assert.Equal((t + rounds) % threads, got[b * threads + t]);
    }

    public static IEnumerable<object[]> BarrierCases => KernelTargets.Cross([[1, 1], [33, 2], [256, 3], [1024, 2]]);

    [Theory]
    [MemberData(nameof(BlockSumCases))]
    public void Block_sum_reduces_the_whole_block(string target, int threads, int perBlock)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        const int blocks = 3;
        float[] input = Rand.Floats(threads + perBlock, blocks * perBlock);
        using var i = DeviceArray.Upload(rt, input);
        using var o = DeviceArray.Floats(rt, blocks);
        rt.Run("selftest_block_sum", new Dim3(blocks), new Dim3((uint)threads), 0, i, o, perBlock);
        float[] expected = new float[blocks];
        for (int b = 0; b < blocks; b++)
        {
            double s = 0;
            for (int k = 0; k < perBlock; k++) s += input[b * perBlock + k];
            expected[b] = (float)s;
        }
        Approx.Equal(expected, o.Download(), 1e-5f, 1e-5f, "block sums");
    }

    public static IEnumerable<object[]> BlockSumCases => KernelTargets.Cross([[32, 1], [32, 100], [96, 1000], [1024, 1000], [1024, 5000]]);

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Dynamic_shared_memory_is_per_block(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        const int threads = 128, blocks = 5;
        float[] input = Rand.Floats(5, threads * blocks);
        using var i = DeviceArray.Upload(rt, input);
        using var o = DeviceArray.Floats(rt, input.Length);
        rt.Run("selftest_dynamic_shared", new Dim3(blocks), new Dim3(threads), threads * sizeof(float), i, o);
        float[] got = o.Download();
        for (int b = 0; b < blocks; b++)
            for (int t = 0; t < threads; t++)
                Assert.Equal(input[b * threads + threads - 1 - t], got[b * threads + t]);
    }

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Atomic_add_is_atomic_across_blocks(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        const int n = 20000;
        // small integers: every partial sum is exact in fp32, so any order gives the same total
        float[] input = Rand.Ints(11, n, 7).Select(v => (float)v).ToArray();
        using var i = DeviceArray.Upload(rt, input);
        using var total = DeviceArray.Upload(rt, new float[1]);
        rt.Run("selftest_atomic_sum", new Dim3(16), new Dim3(128), 0, i, total, (long)n);
        Assert.Equal(input.Sum(), total.Download()[0]);
    }

    [Fact]
    public void Barrier_reached_by_part_of_a_block_is_reported()
    {
        using var rt = new HostKernelRuntime();
        using var o = DeviceArray.Upload(rt, new int[64]);
        var e = Assert.Throws<HostKernelException>(() => rt.Run("selftest_divergent_barrier", new Dim3(1), new Dim3(64), 0, o));
        Assert.Contains("__syncthreads", e.Message);
        Assert.Contains("16 of 64", e.Message);
    }

    [Theory]
    [InlineData(1u, 2048u, 0, "exceeds")]
    [InlineData(0u, 32u, 0, "positive")]
    [InlineData(1u, 32u, 64 * 1024, "shared memory")]
    public void Launches_a_gpu_would_refuse_are_refused(uint grid, uint block, int shared, string message)
    {
        using var rt = new HostKernelRuntime();
        using var o = DeviceArray.Upload(rt, new int[64]);
        var e = Assert.Throws<HostKernelException>(() => rt.Run("selftest_shuffles", new Dim3(grid), new Dim3(block), shared, o));
        Assert.Contains(message, e.Message);
    }

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Unknown_kernel_is_an_error(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var e = Assert.Throws<InvalidOperationException>(() => rt.Run("no_such_kernel", new Dim3(1), new Dim3(32), 0));
        Assert.Contains("no_such_kernel", e.Message);
    }
}
