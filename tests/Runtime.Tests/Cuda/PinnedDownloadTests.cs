using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// <see cref="CudaBackend.ReadOnHost"/>: one copy into the backend's page-locked buffer, queued, then one wait; the
/// reader sees exactly what a pageable download gives, also when the work before it is held for a graph.
/// </summary>
public class PinnedDownloadTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ReadOnHost_gives_the_values_a_download_gives_through_one_pinned_copy(bool graphs)
    {
        var host = new HostKernelRuntime(pooled: true);
        IDeviceRuntime runtime = graphs ? new GraphReplayRuntime(host, host.Pool) : host;
        using var backend = new CudaBackend(runtime);
        for (int pass = 0; pass < 3; pass++)   // with graphs: seen, captured, replayed
        {
            float[] a = Enumerable.Range(0, 1000).Select(i => MathF.Sin(i + pass)).ToArray();
            float[] b = Enumerable.Range(0, 1000).Select(i => 0.5f * i).ToArray();
            using var x = backend.Upload(a, 10, 100);
            using var y = backend.Upload(b, 10, 100);
            backend.Add(y, x);
            float[]? seen = null;
            backend.ReadOnHost(y, v => seen = v.ToArray());
            Assert.Equal(a.Zip(b, (p, q) => q + p), seen!);
            var pageable = new float[1000];
            backend.Download(y, pageable);
            Assert.Equal(pageable, seen!);
        }
        Assert.Equal(3, host.PinnedDownloads);
        if (graphs) Assert.True(((GraphReplayRuntime)runtime).GraphLaunches > 0);
    }

    [Fact]
    public void ReadOnHost_grows_its_buffer_and_reads_a_larger_tensor_whole()
    {
        var host = new HostKernelRuntime(pooled: true);
        using var backend = new CudaBackend(host);
        foreach (int n in new[] { 16, 5000, 64 })
        {
            float[] a = Enumerable.Range(0, n).Select(i => (float)(i * 3 - n)).ToArray();
            using var x = backend.Upload(a, n);
            float[]? seen = null;
            backend.ReadOnHost(x, v => seen = v.ToArray());
            Assert.Equal(a, seen!);
        }
    }
}
