using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// The bf16 side of <see cref="GemmPrecision.Bf16"/> (native/kernels/convert.cu): weights stored once as bf16, with
/// no fp32 copy on the device, row-stacked where products share an input (<see cref="StackConstants"/>), and the
/// bf16 copies of activations that products and the bf16 attention read (shadows), written by the kernel that produces
/// the activation (RMSNorm forward and backward, SwiGLU, the stacked product's split, RoPE, the attention backward's
/// row term) beside its fp32 output, or by one conversion that every reader of the same tensor then shares; the
/// summed input-gradient product's concatenated operand is written by SwiGLU's backward.
/// <para>A shadow is valid while its tensor's <see cref="CudaTensor.Version"/> is the one it was written at: every
/// launcher address taken through <c>Dev</c> (anything an op may write) bumps it, only <c>In</c> (a declared read)
/// does not. So a shadow can miss, never be stale: a launcher that forgets to declare a read costs a conversion.
/// Transient shadows are few (least recently used evicted); attention keeps its q, k, v ones until the backward
/// reads them or the tensors are written or disposed.</para>
/// </summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct ConvertArgs(nint Source, nint Destination, long N);
    internal static readonly Kernel<ConvertArgs> F32ToBf16 = Kernel.Declare<ConvertArgs>("f32_to_bf16");
    internal static readonly Kernel<ConvertArgs> Bf16ToF32 = Kernel.Declare<ConvertArgs>("bf16_to_f32");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct ConcatArgs(nint A, int WidthA, nint B, int WidthB, nint C, int WidthC, nint Destination, int Rows);
    internal static readonly Kernel<ConcatArgs> F32ToBf16Concat = Kernel.Declare<ConcatArgs>("f32_to_bf16_concat");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct GatherBf16RowsArgs(nint Ids, nint Table, nint Output, int Rows, int Dim, int Vocab);
    internal static readonly Kernel<GatherBf16RowsArgs> GatherBf16RowsKernel = Kernel.Declare<GatherBf16RowsArgs>("gather_bf16_rows");

    /// <summary>Host values converted per upload chunk (the staging buffer is this many floats).</summary>
    const int UploadChunk = 1 << 22;

    // ---- bf16 weights ------------------------------------------------------------------------------------------

    /// <summary>Matrices uploaded as constants while <see cref="Precision"/> is Bf16 are stored as bf16 only; vectors (norm gains) stay fp32.</summary>
    bool StoresBf16(int[] shape) => Precision == GemmPrecision.Bf16 && shape.Length == 2;

    CudaTensor CreateBf16(int[] shape)
    {
        long n = 1;
        foreach (int dim in shape) n = checked(n * dim);
        return new CudaTensor(device.Allocate(Math.Max(2, n * 2)), device, shape, bf16: true);
    }

    /// <summary>fp32 values to a bf16 constant, rounded on the device by f32_to_bf16 (chunked, so no fp32 copy of the whole matrix is made).</summary>
    CudaTensor UploadBf16(int[] shape, long length, Action<long, Span<float>> read)
    {
        var t = CreateBf16(shape);
        t.IsConstant = true;
        using var __ = Range("upload");
        var chunk = new float[(int)Math.Min(length, UploadChunk)];
        nint stage = Stage(ref weightBf16, ref weightBf16Capacity, chunk.Length * (long)sizeof(float));
        for (long at = 0; at < length; at += chunk.Length)
        {
            var part = chunk.AsSpan(0, (int)Math.Min(chunk.Length, length - at));
            read(at, part);
            device.CopyToDevice(stage, MemoryMarshal.AsBytes(part));
            ConvertToBf16(stage, t.Pointer + (nint)(at * 2), part.Length);
        }
        return t;
    }

    /// <summary>A bf16 checkpoint's matrices go up as they are (lossless); fp16 ones are widened and rounded to bf16.</summary>
    public Tensor UploadConstant(HalfWeights data, params int[] shape)
    {
        if (!StoresBf16(shape)) return UploadConstant(data.ToFloats(), shape);
        OpContracts.Upload(checked((int)Math.Min(data.Length, int.MaxValue)), shape);
        if (data.Format != HalfFormat.BFloat16) return UploadBf16(shape, data.Length, data.Widen);
        var t = CreateBf16(shape);
        t.IsConstant = true;
        using var _ = Range("upload");
        for (long at = 0; at < data.Length; at += UploadChunk)
        {
            int n = (int)Math.Min(UploadChunk, data.Length - at);
            device.CopyToDevice(t.Pointer + (nint)(at * 2), MemoryMarshal.AsBytes(data.Raw(at, n)));
        }
        return t;
    }

    /// <summary>
    /// Row blocks of one matrix (Wq, Wk, Wv) moved into one allocation, in order, so <see cref="MatMulShared"/> and
    /// <see cref="MatMulInputGradSum"/> run them as one product; the inputs are disposed. Only bf16-stored blocks are
    /// stacked (the fp32 modes keep their separate products, as the CPU checks them).
    /// </summary>
    public Tensor[] StackConstants(Tensor[] blocks)
    {
        if (blocks.Length < 2 || !blocks.All(b => b is CudaTensor { IsBf16: true, IsConstant: true } c && ReferenceEquals(c.Device, device) && b.Shape.Length == 2 && b.Columns == blocks[0].Columns))
            return blocks;
        long total = blocks.Sum(b => ((CudaTensor)b).Bytes);
        var block = new StackedBlock(device.Allocate(total), blocks.Length);
        var views = new Tensor[blocks.Length];
        long offset = 0;
        using (Range("copy"))
            for (int i = 0; i < blocks.Length; i++)
            {
                var b = (CudaTensor)blocks[i];
                nint at = block.Address + (nint)offset;
                device.CopyDeviceToDevice(at, b.Pointer, b.Bytes);
                views[i] = new CudaTensor(new StackedView(block, at), device, b.Shape.ToArray(), bf16: true) { IsConstant = true };
                offset += b.Bytes;
            }
        foreach (var b in blocks) b.Dispose();
        return views;
    }

    /// <summary>Whether <paramref name="weights"/> are bf16 blocks lying one after the other (made by <see cref="StackConstants"/>).</summary>
    static bool Adjacent(ReadOnlySpan<Tensor> weights)
    {
        if (weights.Length < 2 || weights.Length > 3) return false;
        for (int i = 0; i < weights.Length; i++)
            if (weights[i] is not CudaTensor { IsBf16: true } w || w.Columns != weights[0].Columns || w.Shape.Length != 2 ||
                i > 0 && w.Pointer != ((CudaTensor)weights[i - 1]).Pointer + (nint)((CudaTensor)weights[i - 1]).Bytes)
                return false;
        return true;
    }

    /// <summary>One allocation shared by the views of a stack; freed when the last view is disposed.</summary>
    sealed class StackedBlock(SafeHandle memory, int views)
    {
        int live = views;
        public nint Address => memory.DangerousGetHandle();
        public void Release() { if (Interlocked.Decrement(ref live) == 0) memory.Dispose(); }
    }

    sealed class StackedView : SafeHandle
    {
        readonly StackedBlock block;
        public StackedView(StackedBlock block, nint address) : base(0, ownsHandle: true) { this.block = block; SetHandle(address); }
        public override bool IsInvalid => handle == 0;
        protected override bool ReleaseHandle() { block.Release(); return true; }
    }

    /// <summary>The device address of a bf16-stored tensor of this backend.</summary>
    nint DevBf16(Tensor t) =>
        t is CudaTensor { IsBf16: true } c && ReferenceEquals(c.Device, device) ? c.Pointer : throw new ArgumentException($"{t} is not a bf16 tensor of this CUDA backend");

    /// <summary>table[ids[r], :] widened into <paramref name="output"/> (fp32 [ids, dim]); ids outside the table give NaN rows.</summary>
    void GatherBf16Rows(nint ids, int count, Tensor table, nint output)
    {
        long n = (long)count * table.Columns;
        if (n == 0) return;
        Launch(GatherBf16RowsKernel, GridFor(n), new Dim3(ElementwiseBlock), 0,
            new GatherBf16RowsArgs(ids, DevBf16(table), output, count, table.Columns, table.Rows), new OpWork(0, n * 6.0));
    }

    // ---- activation shadows ------------------------------------------------------------------------------------

    sealed class Shadow
    {
        public SafeHandle? Buffer;
        public long Capacity;
        public CudaTensor? Owner;
        public long Version;     // the owner's version it was written at
        public long LastUse;     // for least-recently-used eviction among the transient shadows
        public bool Kept;        // read again much later (attention's q, k, v in the backward): not evicted
        public bool Reserved;    // handed out by ShadowSlot, not yet published: no other tensor may take it
        public nint Address => Buffer!.DangerousGetHandle();
    }

    /// <summary>Shadows kept at most for the products that follow their producer (the kept ones come on top).</summary>
    const int TransientShadows = 6;
    readonly List<Shadow> shadows = [];
    long shadowClock;

    /// <summary>False: every bf16 operand is converted from its fp32 tensor at its reader, as if no producer wrote one (for
    /// the tests that check the producers' shadows give bit-identical results).</summary>
    internal bool ReadsShadows { get; set; } = true;

    static bool IsValid(Shadow s) => s.Owner is { IsDisposed: false } o && o.Version == s.Version;

    /// <summary>The address of <paramref name="t"/>'s valid bf16 shadow, or 0.</summary>
    nint ShadowOf(Tensor t)
    {
        if (!ReadsShadows) return 0;
        foreach (var s in shadows)
            if (ReferenceEquals(s.Owner, t) && IsValid(s)) { s.LastUse = ++shadowClock; return s.Address; }
        return 0;
    }

    /// <summary>
    /// A slot for a new shadow of <paramref name="t"/>, sized for it: its own old one, else a stale or the least recently
    /// used transient one (kept ones whose tensor was written or disposed are freed first); register it with
    /// <see cref="Publish"/> once written.
    /// </summary>
    Shadow ShadowSlot(Tensor t)
    {
        for (int i = shadows.Count - 1; i >= 0; i--)
            if (shadows[i].Kept && !IsValid(shadows[i]) && !ReferenceEquals(shadows[i].Owner, t))
            {
                shadows[i].Buffer?.Dispose();
                shadows.RemoveAt(i);
            }
        var slot = shadows.FirstOrDefault(s => ReferenceEquals(s.Owner, t) && !s.Reserved)
            ?? shadows.FirstOrDefault(s => !s.Kept && !s.Reserved && !IsValid(s));
        if (slot is null)
        {
            if (shadows.Count(s => !s.Kept) < TransientShadows || shadows.All(s => s.Kept || s.Reserved)) shadows.Add(slot = new Shadow());
            else slot = shadows.Where(s => !s.Kept && !s.Reserved).MinBy(s => s.LastUse)!;
        }
        slot.Owner = null;
        slot.Kept = false;
        slot.Reserved = true;
        // Sized exactly, and re-rented from the pool when the size differs: which blocks a pass gets then follows from
        // the pool alone, so a repeated pass gets the same ones (what GraphReplayRuntime needs to replay it).
        long bytes = Math.Max(256, t.Length * 2);
        if (slot.Buffer is null || slot.Capacity != bytes)
        {
            slot.Buffer?.Dispose();
            slot.Capacity = bytes;
            slot.Buffer = device.Allocate(bytes);
        }
        return slot;
    }

    /// <summary>Marks <paramref name="slot"/> as <paramref name="t"/>'s shadow as of now (call after the launch that wrote both).</summary>
    void Publish(Shadow slot, Tensor t)
    {
        slot.Owner = (CudaTensor)t;
        slot.Version = slot.Owner.Version;
        slot.LastUse = ++shadowClock;
        slot.Reserved = false;
    }

    /// <summary><paramref name="t"/>'s valid shadow survives eviction until <see cref="Release"/>, or until <paramref name="t"/> is written or disposed: for operands read again far later.</summary>
    void Keep(Tensor t)
    {
        foreach (var s in shadows)
            if (ReferenceEquals(s.Owner, t) && IsValid(s)) s.Kept = true;
    }

    /// <summary>Frees <paramref name="t"/>'s kept shadow (its last reader has run).</summary>
    void Release(Tensor t)
    {
        for (int i = shadows.Count - 1; i >= 0; i--)
            if (shadows[i].Kept && ReferenceEquals(shadows[i].Owner, t))
            {
                shadows[i].Buffer?.Dispose();
                shadows.RemoveAt(i);
            }
    }

    /// <summary><paramref name="t"/> was written other than through <see cref="Dev"/>: its shadow is stale.</summary>
    static void Forget(Tensor t) => ((CudaTensor)t).Version++;

    /// <summary>The bf16 operand of <paramref name="t"/>: its valid shadow, or one made now (and kept for the next product reading it).</summary>
    nint ActivationBf16(Tensor t)
    {
        nint p = ShadowOf(t);
        if (p != 0) return p;
        var slot = ShadowSlot(t);
        ConvertToBf16(In(t), slot.Address, t.Length);
        Publish(slot, t);
        return slot.Address;
    }

    void DisposeShadows()
    {
        foreach (var s in shadows) s.Buffer?.Dispose();
        shadows.Clear();
        pairOperand?.Dispose();
        pairOperand = null;
        pairParts = null;
    }

    // ---- the concatenated operand of a summed input-gradient product, written by its producer ----------------

    SafeHandle? pairOperand;          // bf16 [rows, Σ widths] of pairParts, as ConcatBf16 would make it
    long pairOperandCapacity;
    (CudaTensor Part, long Version)[]? pairParts;

    /// <summary>Scratch for a bf16 row-wise concatenation of <paramref name="elements"/> values that the parts' producing kernel writes; call <see cref="PublishConcat(Tensor[])"/> after the launch.</summary>
    nint ConcatSlot(long elements) => Stage(ref pairOperand, ref pairOperandCapacity, Math.Max(256, elements * 2));

    void PublishConcat(params Tensor[] parts) => pairParts = parts.Select(p => ((CudaTensor)p, ((CudaTensor)p).Version)).ToArray();

    /// <summary>
    /// As <see cref="PublishConcat(Tensor[])"/> where the launch wrote only the <paramref name="written"/> parts' columns: each other
    /// part's later producer writes its own (<see cref="ConcatColumns"/>, then <see cref="PublishConcatPart"/>); until then
    /// the operand is not handed out. The attention backward writes dv's columns of [dq | dk | dv], the inverse RoPE dq's and dk's.
    /// </summary>
    void PublishConcat(Tensor[] parts, Tensor written) =>
        pairParts = parts.Select(p => ((CudaTensor)p, ReferenceEquals(p, written) ? ((CudaTensor)p).Version : -1)).ToArray();

    /// <summary>The address of <paramref name="part"/>'s first column in the published concatenation, with its row stride in values; 0 when it is not a part.</summary>
    nint ConcatColumns(Tensor part, out int stride)
    {
        stride = 0;
        if (pairParts is null || pairOperand is null) return 0;
        int at = -1, offset = 0, width = 0;
        for (int i = 0; i < pairParts.Length; i++)
        {
            if (ReferenceEquals(pairParts[i].Part, part)) at = offset;
            if (at < 0) offset += pairParts[i].Part.Columns;
            width += pairParts[i].Part.Columns;
        }
        if (at < 0 || part.Rows != pairParts[0].Part.Rows) return 0;
        stride = width;
        return pairOperand.DangerousGetHandle() + (nint)(2L * at);
    }

    /// <summary>Marks <paramref name="part"/>'s columns of the published concatenation as written as of now (call after the launch).</summary>
    void PublishConcatPart(Tensor part)
    {
        for (int i = 0; pairParts is not null && i < pairParts.Length; i++)
            if (ReferenceEquals(pairParts[i].Part, part)) pairParts[i].Version = pairParts[i].Part.Version;
    }

    /// <summary>The producer-written concatenation of exactly <paramref name="parts"/>, none written since, or 0.</summary>
    nint ConcatOf(ReadOnlySpan<Tensor> parts)
    {
        if (!ReadsShadows) return 0;
        if (pairParts is null || pairParts.Length != parts.Length) return 0;
        for (int i = 0; i < parts.Length; i++)
            if (!ReferenceEquals(pairParts[i].Part, parts[i]) || pairParts[i].Part.IsDisposed || pairParts[i].Part.Version != pairParts[i].Version) return 0;
        return pairOperand!.DangerousGetHandle();
    }

    /// <summary>Rounds fp32 into bf16 scratch; writes no tensor (pass the source through <see cref="In"/>), so shadows stay valid.</summary>
    void ConvertToBf16(nint source, nint destination, long n)
    {
        if (n == 0) return;
        using var _ = Range("f32_to_bf16");
        Launch(F32ToBf16, GridFor(n), new Dim3(ElementwiseBlock), 0, new ConvertArgs(source, destination, n), new OpWork(0, n * 6.0));
    }

    /// <summary>[a | b | c] row by row, rounded to bf16 into one scratch operand [rows, Σ widths] (one launch for a summed product's inputs).</summary>
    nint ConcatBf16(ReadOnlySpan<Tensor> parts)
    {
        nint written = ConcatOf(parts);
        if (written != 0) return written;
        int rows = parts[0].Rows;
        long width = 0;
        foreach (var p in parts) width += p.Columns;
        long n = rows * width;
        nint destination = Stage(ref activationBf16, ref activationBf16Capacity, Math.Max(256, n * 2));
        using var _ = Range("f32_to_bf16");
        Span<nint> at = stackalloc nint[3];
        Span<int> widths = stackalloc int[3];
        for (int i = 0; i < parts.Length; i++) { at[i] = In(parts[i]); widths[i] = parts[i].Columns; }
        Launch(F32ToBf16Concat, GridFor(n), new Dim3(ElementwiseBlock), 0,
            new ConcatArgs(at[0], widths[0], at[1], widths[1], at[2], widths[2], destination, rows), new OpWork(0, n * 6.0));
        return destination;
    }
}
