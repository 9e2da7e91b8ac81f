using System.Runtime.InteropServices;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

public class CudaDeviceTests
{
    [Fact]
    public void TryOpen_never_throws_and_explains_a_missing_gpu_in_one_line()
    {
        using var device = CudaDevice.TryOpen(out string why);
        bool driver = NativeLibrary.TryLoad("libcuda.so.1", out _);
        if (!driver)
        {
            // this machine (and CI) has no NVIDIA driver
            Assert.Null(device);
            Assert.Contains("libcuda.so.1", why);
        }
        if (device is null)
        {
            Assert.False(string.IsNullOrWhiteSpace(why));
            Assert.DoesNotContain('\n', why);
            Assert.Null(CudaBackend.TryCreate(out string again));
            Assert.Equal(why, again);
            return;
        }
        Assert.Equal("", why);
        Assert.False(string.IsNullOrWhiteSpace(device.Name));
        Assert.True(device.ComputeCapability.Major >= 7, device.ToString());
    }

    [Fact]
    public void A_device_tensor_has_no_host_span()
    {
        using var backend = new CudaBackend(new Kernels.HostKernelRuntime());
        using var t = backend.Allocate(2, 3);
        Assert.IsType<CudaTensor>(t);
        Assert.Throws<NotSupportedException>(() => t.Span.Length);
    }

    [Fact]
    public unsafe void KernelArgs_point_at_values_of_the_parameter_sizes()
    {
        var a = new KernelArgs();
        a.Pointer((nint)0x1234_5678);
        a.Int(-7);
        a.Float(1.5f);
        a.Long(1L << 40);
        var p = a.Pointers();
        Assert.Equal(4, p.Length);
        Assert.Equal((nint)0x1234_5678, *(nint*)p[0]);
        Assert.Equal(-7, *(int*)p[1]);
        Assert.Equal(1.5f, *(float*)p[2]);
        Assert.Equal(1L << 40, *(long*)p[3]);
    }

    [Fact]
    public void PtxLocator_names_where_it_looked()
    {
        string missing = Path.Combine(Path.GetTempPath(), "neurontrace-no-ptx-" + Guid.NewGuid().ToString("N"));
        Assert.Null(PtxLocator.Find(missing, out string searched));
        Assert.Contains(missing, searched);
    }

    [Fact]
    public void CudaException_names_the_call_and_the_error()
    {
        var e = new CudaException("cuMemAlloc_v2(64 bytes)", 2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory");
        Assert.Equal("cuMemAlloc_v2(64 bytes) failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory)", e.Message);
    }
}

public class PtxEntriesTests
{
    [Fact]
    public void Every_global_kernel_of_a_source_is_an_entry_of_its_built_ptx()
    {
        string kernels = Path.Combine(NeuronTrace.TestSupport.RepoPaths.Root, "native", "kernels");
        string ptxDir = Path.Combine(NeuronTrace.TestSupport.RepoPaths.Root, "native", "build", "ptx");
        var global = new System.Text.RegularExpressions.Regex(@"extern ""C"" __global__ void (\w+)\(");
        int files = 0;
        foreach (string cu in Directory.EnumerateFiles(kernels, "*.cu"))
        {
            string ptx = Path.Combine(ptxDir, Path.GetFileNameWithoutExtension(cu) + ".ptx");
            Assert.True(File.Exists(ptx), $"{ptx} is missing: native/build.sh builds it before the tests");
            var declared = global.Matches(File.ReadAllText(cu)).Select(m => m.Groups[1].Value).Order().ToList();
            var entries = PtxEntries.Names(File.ReadAllText(ptx)).Order().ToList();
            Assert.NotEmpty(declared);
            Assert.Equal(declared, entries);
            files++;
        }
        Assert.True(files >= 7, $"only {files} kernel sources");
    }
}
