using System.Text.RegularExpressions;
using NeuronTrace.TestSupport;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// The PTX that native/build.sh made of the tensor-core kernels (clang's NVPTX back end here; nvcc where present) is
/// sm_80 PTX of ISA ≥ 7.0 and holds the instructions nt_mma.h promises, in every kernel entry that uses them — so a
/// header change that silently fell back to something else, or a target downgrade, fails here without a GPU.
/// </summary>
public class TensorCorePtxTests
{
    static string Ptx(string family)
    {
        string path = Path.Combine(RepoPaths.Root, "native", "build", "ptx", family + ".ptx");
        Assert.True(File.Exists(path), $"{path} is missing: run `bash native/build.sh` first");
        return File.ReadAllText(path);
    }

    static readonly string[] Instructions =
    [
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
        "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
        "cp.async.cg.shared.global",
        "cp.async.commit_group",
        "cp.async.wait_group",
        "cvt.rn.bf16x2.f32",
    ];

    [Theory]
    [InlineData("attention_flash_bf16")]
    [InlineData("selftest_mma")]
    public void Tensor_core_kernels_are_sm80_ptx_with_mma_ldmatrix_and_cp_async(string family)
    {
        string ptx = Ptx(family);
        var version = Regex.Match(ptx, @"^\.version (\d+)\.(\d+)", RegexOptions.Multiline);
        Assert.True(version.Success, "no .version line");
        Assert.True(int.Parse(version.Groups[1].Value) * 10 + int.Parse(version.Groups[2].Value) >= 70, $"PTX ISA {version.Value}: mma bf16 and cp.async need 7.0");
        Assert.Matches(new Regex(@"^\.target sm_80\b", RegexOptions.Multiline), ptx);
        foreach (string instruction in Instructions) Assert.Contains(instruction, ptx);
    }

    [Fact]
    public void Every_bf16_attention_entry_multiplies_on_tensor_cores_and_stages_with_cp_async()
    {
        string ptx = Ptx("attention_flash_bf16");
        var bodies = Regex.Matches(ptx, @"\.entry\s+(\w+)\((.*?)(?=\.entry|\z)", RegexOptions.Singleline);
        Assert.Equal(3, bodies.Count);
        foreach (Match m in bodies)
        {
            string name = m.Groups[1].Value, body = m.Groups[2].Value;
            Assert.True(body.Contains("mma.sync.aligned.m16n8k16"), $"{name} has no mma.sync");
            Assert.True(body.Contains("ldmatrix.sync.aligned.m8n8.x4.trans"), $"{name} has no ldmatrix.trans");
            Assert.True(body.Contains("cp.async.wait_group 1"), $"{name} does not overlap its tile copies (wait_group 1)");
        }
    }
}
