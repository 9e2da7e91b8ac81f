using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// attention_flash.cu through <see cref="CudaBackend"/>'s streaming launchers against the CPU streaming op
/// (<see cref="AttentionOps.StreamingForward"/> / <see cref="AttentionOps.StreamingBackward"/>), on the host emulator
/// and, when one is present, the GPU. Lengths 1, tile − 1, tile + 1 and 3·tile + 5 for the kernel's 32-row tile and
/// across its 64-row block, GQA groups 1, 2 and 4, head dims 8..64, both rules. Tolerances: z and L 1e-5 abs + 1e-4
/// rel, gradients 2e-5 abs + 2e-4 rel (the kernel's exp is ex2(x·log2 e) and its sums run per key, not per tile).
/// Outputs start as garbage: every value must be written.
/// </summary>
public class StreamingAttentionBackendTests
{
    const int Tile = CudaBackend.FlashTile;

    public static IEnumerable<object[]> Cases => KernelTargets.Cross(
        from s in new[] { (1, 1, 2, 1, 8), (2, Tile - 1, 4, 2, 8), (1, Tile + 1, 4, 4, 16), (1, 3 * Tile + 5, 8, 2, 32), (2, 70, 4, 1, 12), (1, 40, 2, 1, 64) }
        from r in new[] { AttentionRule.Gradient, AttentionRule.FreezePattern }
        select new object[] { s.Item1, s.Item2, s.Item3, s.Item4, s.Item5, r });

    [Theory]
    [MemberData(nameof(Cases))]
    public void Streaming_attention_and_backward_match_the_cpu_op(string target, int batch, int seqLen, int heads, int kvHeads, int headDim,
        AttentionRule rule)
    {
        var rt = KernelTargets.Open(target);
        if (rt is null) return;
        using var b = new CudaBackend(rt);  // owns rt
        var s = new AttentionShape(batch, seqLen, heads, kvHeads, headDim);
        float[] q = Rand.Floats(1 + seqLen, s.Rows * s.QWidth, -1.5f, 1.5f), k = Rand.Floats(2 + seqLen, s.Rows * s.KvWidth, -1.5f, 1.5f);
        float[] v = Rand.Floats(3 + seqLen, s.Rows * s.KvWidth), dz = Rand.Floats(4 + seqLen, s.Rows * s.QWidth);
        float[] z = new float[s.Rows * s.QWidth], lse = new float[batch * heads * seqLen];
        AttentionOps.StreamingForward(q, k, v, s, z, lse);
        float[] eq = new float[q.Length], ek = new float[k.Length], ev = new float[v.Length];
        AttentionOps.StreamingBackward(dz, q, k, v, z, lse, s, rule, eq, ek, ev);

        using var gq = b.Upload(q, s.Rows, s.QWidth);
        using var gk = b.Upload(k, s.Rows, s.KvWidth);
        using var gv = b.Upload(v, s.Rows, s.KvWidth);
        using var gz = b.Upload(Rand.Floats(5, z.Length, 100f, 200f), s.Rows, s.QWidth);
        using var gl = b.Upload(Rand.Floats(6, lse.Length, 100f, 200f), batch, heads, seqLen);
        b.StreamingAttention(gq, gk, gv, s, gz, gl);
        Approx.Equal(z, Get(b, gz), 1e-5f, 1e-4f, "z");
        Approx.Equal(lse, Get(b, gl), 1e-5f, 1e-4f, "lse");

        using var gdz = b.Upload(dz, s.Rows, s.QWidth);
        using var gdq = b.Upload(Rand.Floats(7, q.Length, 100f, 200f), s.Rows, s.QWidth);
        using var gdk = b.Upload(Rand.Floats(8, k.Length, 100f, 200f), s.Rows, s.KvWidth);
        using var gdv = b.Upload(Rand.Floats(9, v.Length, 100f, 200f), s.Rows, s.KvWidth);
        using var go = b.Upload(z, s.Rows, s.QWidth);  // the CPU forward's o and L: both sides differentiate one pattern
        using var gl2 = b.Upload(lse, batch, heads, seqLen);
        b.StreamingAttentionBackward(gdz, gq, gk, gv, go, gl2, s, rule, gdq, gdk, gdv);
        Approx.Equal(ev, Get(b, gdv), 2e-5f, 2e-4f, $"dv ({rule})");
        Approx.Equal(ek, Get(b, gdk), 2e-5f, 2e-4f, $"dk ({rule})");
        Approx.Equal(eq, Get(b, gdq), 2e-5f, 2e-4f, $"dq ({rule})");
    }

    static float[] Get(IBackend b, Tensor t)
    {
        var r = new float[t.Length];
        b.Download(t, r);
        return r;
    }
}
