using System.Text.RegularExpressions;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.TestSupport;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// The argument structs of the launchers (Runtime/Cuda/Ops) against the kernels they launch: each struct's fields
/// must match the kernel's PTX parameter list (count, size, float or not) as clang compiled it from native/kernels.
/// A wrong order of two pointers cannot be seen here; the CudaBackend tests catch that by running every op.
/// And the shape checks: both backends refuse the same bad call with the same message (OpContracts).
/// </summary>
public class KernelSignatureTests
{
    static readonly Regex Entry = new(@"\.entry\s+(\w+)\s*\((.*?)\)", RegexOptions.Singleline);
    static readonly Regex Param = new(@"\.param\s+\.(\w)(\d+)\s+\w+");

    static Dictionary<string, (int Size, bool IsFloat)[]> PtxSignatures()
    {
        string dir = Path.Combine(RepoPaths.Root, "native", "build", "ptx");
        Assert.True(Directory.Exists(dir), $"{dir} is missing: run `bash native/build.sh` first");
        var result = new Dictionary<string, (int, bool)[]>();
        foreach (string file in Directory.GetFiles(dir, "*.ptx"))
            foreach (Match m in Entry.Matches(File.ReadAllText(file)))
                result[m.Groups[1].Value] = Param.Matches(m.Groups[2].Value)
                    .Select(p => (int.Parse(p.Groups[2].Value) / 8, p.Groups[1].Value == "f")).ToArray();
        return result;
    }

    [Fact]
    public void Every_launcher_argument_struct_matches_its_kernel_in_the_ptx()
    {
        var ptx = PtxSignatures();
        var declared = CudaBackend.KernelSignatures();
        Assert.True(declared.Count >= 17, $"only {declared.Count} kernels declared");
        foreach (var (name, parameters) in declared)
        {
            Assert.True(ptx.TryGetValue(name, out var expected), $"kernel {name} is not in any PTX module");
            Assert.Equal(expected, parameters);
        }
        // Every product kernel has a launcher (the self-test kernels are launched by the emulator tests only).
        Assert.DoesNotContain(ptx.Keys, k => !k.StartsWith("selftest_") && !declared.ContainsKey(k));
    }

    [Fact]
    public void Both_backends_refuse_a_bad_shape_with_the_same_message()
    {
        using var gpu = new CudaBackend(new NeuronTrace.Runtime.Tests.Kernels.HostKernelRuntime());
        foreach (var be in new IBackend[] { CpuBackend.Instance, gpu })
        {
            using var x = be.Allocate(2, 4);
            using var w = be.Allocate(3, 5);
            using var y = be.Allocate(2, 3);
            using var norm = be.Allocate(3);
            using var rstd = be.Allocate(2);
            var e1 = Assert.Throws<ArgumentException>(() => be.MatMul(x, w, y, accumulate: false));
            Assert.StartsWith("MatMul x:", e1.Message);
            var e2 = Assert.Throws<ArgumentException>(() => be.RmsNorm(x, norm, 1e-5f, x, rstd));
            Assert.StartsWith("RmsNorm weight:", e2.Message);
            var e3 = Assert.Throws<ArgumentOutOfRangeException>(() => be.GatherRows(x, [0, 2], y));
            Assert.Contains("GatherRows: row 2 outside [0, 2)", e3.Message);
            var e4 = Assert.Throws<ArgumentException>(() => be.SwiGlu(x, y, x));
            Assert.StartsWith("SwiGlu up:", e4.Message);
        }
    }
}
