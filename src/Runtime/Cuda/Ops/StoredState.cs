using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// <see cref="IBackend.StoreForBackward"/> under <see cref="GemmPrecision.Bf16"/>: the forward's q, k, v and gate, up
/// are kept for the backward as bf16 tensors (<see cref="CudaTensor.IsBf16"/>), the fp32 ones freed. Their readers
/// there take bf16 already (the bf16 attention's operands, <see cref="SwiGluBackwardBf16StoredKernel"/>), so q, k, v
/// give the same scores bit for bit and gate, up the fp32 op's on bf16-rounded inputs; only the fp32 attention
/// kernels (a head dim the bf16 ones do not take) widen them again, into scratch.
/// </summary>
internal sealed partial class CudaBackend
{
    SafeHandle? storedFp32Scratch;   // q, k, v widened for the fp32 attention backward, one call at a time
    long storedFp32Capacity;

    public Tensor StoreForBackward(Tensor t)
    {
        if (Precision != GemmPrecision.Bf16) return t;
        var source = Fp32(t);
        CudaTensor stored;
        // The bf16 attention's kept q, k, v shadows (and any other valid one) are exactly bf16(t): adopted, not copied.
        var shadow = ReadsShadows ? shadows.FirstOrDefault(s => ReferenceEquals(s.Owner, source) && !s.Reserved && IsValid(s) && s.Capacity == Math.Max(256, t.Length * 2)) : null;
        if (shadow is not null)
        {
            shadows.Remove(shadow);
            stored = new CudaTensor(shadow.Buffer!, device, t.Shape.ToArray(), bf16: true);
        }
        else
        {
            stored = CreateBf16(t.Shape.ToArray());
            ConvertToBf16(In(t), stored.Pointer, t.Length);
        }
        t.Dispose();
        return stored;
    }

    /// <summary>
    /// fp32 addresses of <paramref name="tensors"/> for an fp32 kernel: an fp32 tensor's own, a stored bf16 one's
    /// widened copy in one scratch buffer (each at a 256-byte boundary).
    /// </summary>
    nint[] Fp32Operands(params Tensor[] tensors)
    {
        long total = 0;
        foreach (var t in tensors)
            if (t is CudaTensor { IsBf16: true }) total += (t.Length * 4 + 255) / 256 * 256;
        nint at = total == 0 ? 0 : Stage(ref storedFp32Scratch, ref storedFp32Capacity, total);
        var result = new nint[tensors.Length];
        for (int i = 0; i < tensors.Length; i++)
        {
            if (tensors[i] is not CudaTensor { IsBf16: true } b) { result[i] = In(tensors[i]); continue; }
            result[i] = at;
            if (b.Length > 0)
            {
                using var _ = Range("bf16_to_f32");
                Launch(Bf16ToF32, GridFor(b.Length), new Dim3(ElementwiseBlock), 0, new ConvertArgs(DevBf16(b), at, b.Length), new OpWork(0, b.Length * 6.0));
            }
            at += (nint)((b.Length * 4 + 255) / 256 * 256);
        }
        return result;
    }

    void DisposeStoredScratch()
    {
        storedFp32Scratch?.Dispose();
        storedFp32Scratch = null;
    }
}
