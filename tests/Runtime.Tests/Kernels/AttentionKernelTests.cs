using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// attention.cu against <see cref="AttentionOps"/>: causal GQA with groups 1, 2 and 4, batch 1 and 2, T = 1, odd T,
/// T across the 16-row block and 32-key tile boundaries, head dims 4..128, and block sizes of 1, 4 and 8 warps.
/// Tolerances: probabilities 1e-6 abs + 1e-5 rel, z and all gradients 1e-5 abs + 1e-4 rel — the kernel's exp is the
/// fast one and its softmax sums are trees; everything else sums in the CPU op's order.
/// The backward takes the CPU forward's probabilities, so both sides differentiate the same pattern.
/// </summary>
public class AttentionKernelTests
{
    const int Rows = CudaBackend.AttentionRows, KeyTile = CudaBackend.AttentionKeyTile;

    // batch, T, heads, kv heads, head dim, block
    public static IEnumerable<object[]> Shapes =>
    [
        [1, 1, 1, 1, 4, 128], [2, 5, 4, 2, 8, 128], [1, 17, 4, 1, 16, 32], [2, 33, 4, 4, 32, 128], [1, 40, 8, 2, 64, 256], [2, 16, 2, 1, 6, 64], [1, 40, 4, 1, 128, 128],
    ];

    public static IEnumerable<object[]> ForwardCases => KernelTargets.Cross(Shapes);

    public static IEnumerable<object[]> BackwardCases => KernelTargets.Cross(
        from s in Shapes from rule in new[] { AttentionRule.Gradient, AttentionRule.FreezePattern } select (object[])[.. s, rule]);

    static (float[] Q, float[] K, float[] V) Inputs(AttentionShape s, int seed) =>
        (Rand.Floats(seed, s.Rows * s.QWidth, -1.5f, 1.5f), Rand.Floats(seed + 1, s.Rows * s.KvWidth, -1.5f, 1.5f),
         Rand.Floats(seed + 2, s.Rows * s.KvWidth));

    static Dim3 Grid(AttentionShape s, int heads) => new((uint)((s.SeqLen + Rows - 1) / Rows), (uint)heads, (uint)s.Batch);
    static int Shared(AttentionShape s) => KeyTile * (s.HeadDim + 1) * sizeof(float);

    [Theory]
    [MemberData(nameof(ForwardCases))]
    public void Forward_matches_cpu(string target, int batch, int seqLen, int heads, int kvHeads, int headDim, int block)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var s = new AttentionShape(batch, seqLen, heads, kvHeads, headDim);
        var (q, k, v) = Inputs(s, seqLen * 31 + heads);
        float[] z = new float[s.Rows * s.QWidth], p = new float[batch * heads * seqLen * seqLen];
        AttentionOps.Forward(q, k, v, s, z, p);

        using var dq = DeviceArray.Upload(rt, q);
        using var dk = DeviceArray.Upload(rt, k);
        using var dv = DeviceArray.Upload(rt, v);
        using var dz = DeviceArray.Floats(rt, z.Length);
        using var dp = DeviceArray.Floats(rt, p.Length);  // NaN-filled on the host: the zeros above the diagonal must be written
        rt.Run("attention_forward", Grid(s, heads), new Dim3((uint)block), Shared(s), dq, dk, dv, dz, dp,
            seqLen, heads, kvHeads, headDim, 1f / MathF.Sqrt(headDim));
        Approx.Equal(p, dp.Download(), 1e-6f, 1e-5f, "probs");
        Approx.Equal(z, dz.Download(), 1e-5f, 1e-4f, "z");
    }

    [Theory]
    [MemberData(nameof(BackwardCases))]
    public void Backward_matches_cpu(string target, int batch, int seqLen, int heads, int kvHeads, int headDim, int block, AttentionRule rule)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var s = new AttentionShape(batch, seqLen, heads, kvHeads, headDim);
        var (q, k, v) = Inputs(s, seqLen * 17 + kvHeads);
        float[] z = new float[s.Rows * s.QWidth], p = new float[batch * heads * seqLen * seqLen];
        AttentionOps.Forward(q, k, v, s, z, p);
        float[] gz = Rand.Floats(seqLen + 99, z.Length);
        float[] eq = new float[q.Length], ek = new float[k.Length], ev = new float[v.Length];
        AttentionOps.Backward(gz, q, k, v, p, s, rule, eq, ek, ev);

        using var dgz = DeviceArray.Upload(rt, gz);
        using var dq = DeviceArray.Upload(rt, q);
        using var dk = DeviceArray.Upload(rt, k);
        using var dv = DeviceArray.Upload(rt, v);
        using var dp = DeviceArray.Upload(rt, p);
        using var ds = DeviceArray.Floats(rt, p.Length);
        using var gq = DeviceArray.Upload(rt, new float[q.Length]);  // the dq kernel does not run under FreezePattern
        using var gk = DeviceArray.Floats(rt, k.Length);
        using var gv = DeviceArray.Floats(rt, v.Length);
        bool exact = rule == AttentionRule.Gradient;
        float scale = 1f / MathF.Sqrt(headDim);
        if (exact)
            rt.Run("attention_backward_dq", Grid(s, heads), new Dim3((uint)block), Shared(s), dgz, dk, dv, dp, ds, gq,
                seqLen, heads, kvHeads, headDim, scale);
        rt.Run("attention_backward_dkdv", Grid(s, kvHeads), new Dim3((uint)block), 0, dgz, dq, dp, exact ? ds.Pointer : 0, gk, gv,
            seqLen, heads, kvHeads, headDim, exact ? 1 : 0);
        Approx.Equal(ev, gv.Download(), 1e-5f, 1e-4f, $"dv ({rule})");
        Approx.Equal(ek, gk.Download(), 1e-5f, 1e-4f, $"dk ({rule})");
        Approx.Equal(eq, gq.Download(), 1e-5f, 1e-4f, $"dq ({rule})");
    }
}
