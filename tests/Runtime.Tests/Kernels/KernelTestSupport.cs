using System.Runtime.InteropServices;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// Where kernel tests run. "host": the host build under the emulator, always. "gpu": the real device through
/// <see cref="CudaDevice"/>; on a machine without one the test first asserts that TryOpen gave a reason, then returns.
/// With NEURONTRACE_REQUIRE_GPU=1 (scripts/gpu/run-gpu.sh sets it) a missing GPU fails instead.
/// </summary>
internal static class KernelTargets
{
    public const string Host = "host";
    public const string Gpu = "gpu";

    public static IDeviceRuntime? Open(string target)
    {
        if (target == Host) return new HostKernelRuntime();
        Assert.Equal(Gpu, target);
        var device = CudaDevice.TryOpen(out string why);
        if (device is not null) return device;
        Assert.False(string.IsNullOrWhiteSpace(why), "CudaDevice.TryOpen returned no device and no reason");
        if (Environment.GetEnvironmentVariable("NEURONTRACE_REQUIRE_GPU") == "1")
            Assert.Fail($"NEURONTRACE_REQUIRE_GPU=1 but no GPU: {why}");
#if GPU_KERNEL_TESTS
        // tests/GpuKernelTests (xUnit v3): a "gpu" case without a GPU is reported skipped, with the reason.
        Assert.Skip($"no GPU: {why}");
#endif
        // Runtime.Tests (xUnit v2, no dynamic skip): the caller returns; the same case runs on the "host" target.
        return null;
    }

    /// <summary>Every case once per target, the target first.</summary>
    public static TheoryData<string> All => new() { Host, Gpu };

    public static IEnumerable<object[]> Cross(IEnumerable<object[]> cases) =>
        from target in new[] { Host, Gpu } from c in cases select (object[])[target, .. c];
}

/// <summary>A device buffer of floats or ints for kernel tests.</summary>
internal sealed class DeviceArray : IDisposable
{
    readonly IDeviceRuntime runtime;
    readonly SafeHandle memory;

    DeviceArray(IDeviceRuntime runtime, long count, int elementSize)
    {
        this.runtime = runtime;
        Count = count;
        memory = runtime.Allocate(count * elementSize);
    }

    public long Count { get; }
    public nint Pointer => memory.DangerousGetHandle();

    public static DeviceArray Upload(IDeviceRuntime rt, float[] data)
    {
        var a = new DeviceArray(rt, data.Length, sizeof(float));
        rt.CopyToDevice(a.Pointer, MemoryMarshal.AsBytes(data.AsSpan()));
        return a;
    }

    public static DeviceArray Upload(IDeviceRuntime rt, int[] data)
    {
        var a = new DeviceArray(rt, data.Length, sizeof(int));
        rt.CopyToDevice(a.Pointer, MemoryMarshal.AsBytes(data.AsSpan()));
        return a;
    }

    /// <summary>Uninitialised (NaN on the host runtime) floats.</summary>
    public static DeviceArray Floats(IDeviceRuntime rt, long count) => new(rt, count, sizeof(float));

    public float[] Download()
    {
        var r = new float[Count];
        runtime.CopyToHost(Pointer, MemoryMarshal.AsBytes(r.AsSpan()));
        return r;
    }

    public int[] DownloadInts()
    {
        var r = new int[Count];
        runtime.CopyToHost(Pointer, MemoryMarshal.AsBytes(r.AsSpan()));
        return r;
    }

    public void Dispose() => memory.Dispose();
}

internal static class KernelLaunch
{
    /// <summary>
    /// Launches with arguments packed by their runtime type — DeviceArray/nint: pointer, int, long, float — in the
    /// kernel's parameter order, through the same <see cref="KernelArgs"/> CudaBackend uses.
    /// </summary>
    public static void Run(this IDeviceRuntime rt, string kernel, Dim3 grid, Dim3 block, int sharedBytes, params object[] args)
    {
        var a = new KernelArgs();
        foreach (object o in args)
        {
            switch (o)
            {
                case DeviceArray d: a.Pointer(d.Pointer); break;
                case nint p: a.Pointer(p); break;
                case int i: a.Int(i); break;
                case long l: a.Long(l); break;
                case float f: a.Float(f); break;
                default: throw new ArgumentException($"kernel argument of type {o.GetType()}");
            }
        }
        rt.Launch(kernel, grid, block, sharedBytes, a.Pointers());
        rt.Synchronize();
    }

    public static uint Blocks(long n, int block) => (uint)Math.Max(1, (n + block - 1) / block);
}

/// <summary>Seeded random inputs.</summary>
public static class Rand
{
    public static float[] Floats(int seed, long n, float lo = -1f, float hi = 1f)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = lo + (hi - lo) * r.NextSingle();
        return a;
    }

    public static int[] Ints(int seed, int n, int below)
    {
        var r = new Random(seed);
        var a = new int[n];
        for (int i = 0; i < n; i++) a[i] = r.Next(below);
        return a;
    }
}

/// <summary>Elementwise comparison |actual − expected| ≤ atol + rtol·|expected|; NaN matches only NaN.</summary>
public static class Approx
{
    public static void Equal(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, float atol, float rtol, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} values, expected {expected.Length}");
        int bad = 0, worst = -1;
        double worstExcess = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            float e = expected[i], a = actual[i];
            if (float.IsNaN(e) || float.IsNaN(a))
            {
                if (float.IsNaN(e) && float.IsNaN(a)) continue;
                bad++;
                if (worst < 0 || double.IsFinite(worstExcess)) { worst = i; worstExcess = double.PositiveInfinity; }
                continue;
            }
            double diff = Math.Abs((double)a - e), tol = atol + rtol * Math.Abs((double)e);
            if (diff <= tol) continue;
            bad++;
            if (diff - tol > worstExcess || worst < 0) { worst = i; worstExcess = diff - tol; }
        }
        Assert.True(bad == 0,
            $"{what}: {bad} of {expected.Length} values off (atol {atol}, rtol {rtol}); worst at [{worst}]: expected {(worst >= 0 ? expected[worst] : 0)}, got {(worst >= 0 ? actual[worst] : 0)}");
    }

    /// <summary>Largest |actual − expected| / (atol + rtol·|expected|); for reporting headroom.</summary>
    public static double Ratio(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, float atol, float rtol)
    {
        double r = 0;
        for (int i = 0; i < expected.Length; i++)
            r = Math.Max(r, Math.Abs((double)actual[i] - expected[i]) / (atol + rtol * Math.Abs((double)expected[i])));
        return r;
    }
}
