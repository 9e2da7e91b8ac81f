using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>embedding.cu against <see cref="CpuBackend.Embedding"/>: a copy, so exact (tolerance 0).</summary>
public class EmbeddingKernelTests
{
    public static IEnumerable<object[]> Cases => KernelTargets.Cross([[1, 1, 3, 256], [7, 33, 50, 256], [64, 300, 1000, 96], [5, 17, 4, 33]]);

    [Theory]
    [MemberData(nameof(Cases))]
    public void Matches_cpu(string target, int rows, int dim, int vocab, int block)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        float[] table = Rand.Floats(dim, vocab * dim);
        int[] tokens = Rand.Ints(rows, rows, vocab);
        var expected = new CpuTensor(rows, dim);
        CpuBackend.Instance.Embedding(tokens, CpuBackend.Wrap(table, vocab, dim), expected);

        using var dt = DeviceArray.Upload(rt, tokens);
        using var dtable = DeviceArray.Upload(rt, table);
        using var dout = DeviceArray.Floats(rt, rows * dim);
        rt.Run("embedding_forward", new Dim3(KernelLaunch.Blocks((long)rows * dim, block)), new Dim3((uint)block), 0, dt, dtable, dout, rows, dim, vocab);
        Approx.Equal(expected.Data, dout.Download(), 0, 0, "embedding rows");
    }

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Token_outside_the_vocabulary_gives_a_nan_row_not_a_wild_read(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        const int dim = 8, vocab = 4;
        using var dt = DeviceArray.Upload(rt, [1, 4, -1]);
        using var dtable = DeviceArray.Upload(rt, Rand.Floats(1, vocab * dim));
        using var dout = DeviceArray.Floats(rt, 3 * dim);
        rt.Run("embedding_forward", new Dim3(1), new Dim3(64), 0, dt, dtable, dout, 3, dim, vocab);
        float[] o = dout.Download();
        Assert.All(o[..dim], v => Assert.False(float.IsNaN(v)));
        Assert.All(o[dim..], v => Assert.True(float.IsNaN(v)));
    }
}
