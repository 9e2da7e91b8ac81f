using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// The IBackend op set on a GPU: our PTX kernels (native/kernels) for everything but the matrix products, which go
/// to cuBLAS. Each op checks shapes and indices on the host first (a kernel cannot throw), chooses the launch
/// configuration its kernel documents, and packs the arguments in the kernel's parameter order. Every op is an
/// NVTX range of the same name as the kernel family, for Nsight.
/// Semantics are exactly <see cref="Cpu.CpuBackend"/>'s (fresh tensors are zero, accumulate ops add); results
/// differ only by floating-point summation order and the fast exp of softmax / sigmoid.
/// Not thread-safe: one thread at a time, like the device it runs on.
/// </summary>
public sealed class CudaBackend : IBackend
{
    /// <summary>Threads per block of the grid-stride (elementwise) kernels.</summary>
    public const int ElementwiseBlock = 256;
    /// <summary>At most this many blocks for grid-stride kernels: about two waves on an H100 (132 SMs × 2048 threads).</summary>
    public const int MaxGridStrideBlocks = 1024;
    public const int AttentionBlock = 128;
    /// <summary>Query (or key) rows per attention block: NT_ATTN_ROWS in attention.cu.</summary>
    public const int AttentionRows = 16;
    /// <summary>Keys per shared-memory tile: NT_ATTN_KEY_TILE in attention.cu.</summary>
    public const int AttentionKeyTile = 32;
    const int MaxDynamicShared = 48 * 1024;

    readonly IDeviceRuntime device;
    readonly bool ownsDevice;
    // Host data an op needs on the device (token ids, row lists, ablation masks) goes through these reusable buffers.
    // The uploads are queued on the stream, so reusing a buffer for the next op waits for the kernel that reads it.
    SafeHandle? indexScratch;   // token ids / row indices uploaded for one op
    long indexCapacity;
    SafeHandle? maskScratch;    // MeanAblate's keep bits
    long maskCapacity;
    SafeHandle? scoreScratch;   // attention backward ds [B, H, T, T]
    long scoreCapacity;
    // GemmPrecision.Bf16: bf16 copies of the constant weights, and scratch for operands rounded per product.
    readonly Dictionary<CudaTensor, SafeHandle> bf16Weights = new(ReferenceEqualityComparer.Instance);
    SafeHandle? activationBf16, weightBf16;
    long activationBf16Capacity, weightBf16Capacity;

    /// <param name="precision">How matrix products are computed: exact fp32 (the default, what the CPU checks compare
    /// against), TF32 or bf16 tensor cores.</param>
    public CudaBackend(IDeviceRuntime device, bool ownsDevice = true, GemmPrecision precision = GemmPrecision.Fp32)
    {
        this.device = device;
        this.ownsDevice = ownsDevice;
        Precision = precision;
    }

    /// <summary>A backend on GPU 0, or null with the one-line reason from <see cref="CudaDevice.TryOpen(out string)"/>.</summary>
    public static CudaBackend? TryCreate(out string whyNot, GemmPrecision precision = GemmPrecision.Fp32) => TryCreate(0, out whyNot, precision);

    /// <summary>The backend on device <paramref name="ordinal"/> (as numbered under CUDA_VISIBLE_DEVICES), or null and why not.</summary>
    public static CudaBackend? TryCreate(int ordinal, out string whyNot, GemmPrecision precision = GemmPrecision.Fp32)
    {
        var d = CudaDevice.TryOpen(ordinal, null, out whyNot);
        return d is null ? null : new CudaBackend(d, ownsDevice: true, precision);
    }

    public string Name => "cuda";
    public IDeviceRuntime Device => device;
    /// <summary>How matrix products are computed from now on; settable so one model upload can be timed both ways.</summary>
    public GemmPrecision Precision { get; set; }

    // ---- memory ------------------------------------------------------------------------------------------------

    /// <summary>A zero-filled tensor, as on the CPU backend.</summary>
    public Tensor Allocate(params int[] shape)
    {
        var t = Create(shape);
        Fill(t, 0f);
        return t;
    }

    /// <summary>Contents undefined (whatever the pooled block held): for outputs an op overwrites entirely.</summary>
    public Tensor AllocateUninitialized(params int[] shape) => Create(shape);

    public Tensor Upload(ReadOnlySpan<float> data, params int[] shape)
    {
        var t = Create(shape);
        if (data.Length != t.Length)
        {
            t.Dispose();
            throw new ArgumentException($"upload of {data.Length} values into shape [{string.Join(", ", shape)}]");
        }
        using (Range("upload")) device.CopyToDevice(t.Pointer, MemoryMarshal.AsBytes(data));
        return t;
    }

    public void Download(Tensor source, Span<float> destination)
    {
        var s = Dev(source);
        if (destination.Length < source.Length) throw new ArgumentException($"download of {source} into {destination.Length} values");
        using (Range("download")) device.CopyToHost(s, MemoryMarshal.AsBytes(destination[..checked((int)source.Length)]));
    }

    public void Fill(Tensor tensor, float value)
    {
        var p = Dev(tensor);
        if (tensor.Length == 0) return;
        using var _ = Range("fill");
        var a = new KernelArgs();
        a.Pointer(p); a.Float(value); a.Long(tensor.Length);
        Launch("fill_f32", GridFor(tensor.Length), new Dim3(ElementwiseBlock), 0, ref a);
    }

    public void Copy(Tensor source, Tensor destination)
    {
        var s = Dev(source);
        var d = Dev(destination);
        if (destination.Length < source.Length) throw new ArgumentException($"copy of {source} into {destination}");
        using var _ = Range("copy");
        device.CopyDeviceToDevice(d, s, source.Length * sizeof(float));
    }

    // ---- matrix products (cuBLAS) -------------------------------------------------------------------------------

    public void MatMul(Tensor x, Tensor w, Tensor y, bool accumulate)
    {
        int n = w.Shape[0], k = w.Columns, rows = x.Rows;
        CheckColumns(x, k, "MatMul x");
        CheckColumns(y, n, "MatMul y");
        CheckRows(y, rows, "MatMul y");
        using var _ = Range("matmul");
        Gemm(GemmCall.MatMul(Dev(x), Dev(w), Dev(y), rows, n, k, accumulate), y, accumulate, w, x);
    }

    public void MatMulInputGrad(Tensor dy, Tensor w, Tensor dx, bool accumulate)
    {
        int n = w.Shape[0], k = w.Columns, rows = dy.Rows;
        CheckColumns(dy, n, "MatMulInputGrad dy");
        CheckColumns(dx, k, "MatMulInputGrad dx");
        CheckRows(dx, rows, "MatMulInputGrad dx");
        using var _ = Range("matmul_input_grad");
        Gemm(GemmCall.MatMulInputGrad(Dev(dy), Dev(w), Dev(dx), rows, n, k, accumulate), dx, accumulate, w, dy);
    }

    /// <summary>Both products have the weight as cuBLAS's A and the activation (x or dy) as B.</summary>
    void Gemm(in GemmCall call, Tensor c, bool accumulate, Tensor weight, Tensor activation)
    {
        if (call.M == 0 || call.N == 0) return;
        if (call.K == 0)  // an empty sum: BLAS leaves C alone only with beta = 1
        {
            if (!accumulate) Fill(c, 0f);
            return;
        }
        if (Precision == GemmPrecision.Bf16)
        {
            device.Sgemm(call with { Precision = Precision, A = WeightBf16(weight), B = ToBf16(activation, ref activationBf16, ref activationBf16Capacity) });
            return;
        }
        device.Sgemm(call with { Precision = Precision });
    }

    /// <summary>
    /// The bf16 copy of a weight: made once and kept for a tensor marked <see cref="CudaTensor.IsConstant"/> (the
    /// model's weights), else converted into a scratch buffer for this product only, since its values may change.
    /// </summary>
    nint WeightBf16(Tensor weight)
    {
        var w = (CudaTensor)weight;
        if (!w.IsConstant) return ToBf16(w, ref weightBf16, ref weightBf16Capacity);
        if (bf16Weights.TryGetValue(w, out var copy)) return copy.DangerousGetHandle();
        foreach (var gone in bf16Weights.Keys.Where(t => t.IsDisposed).ToList())  // a model disposed on a living backend
        {
            bf16Weights[gone].Dispose();
            bf16Weights.Remove(gone);
        }
        copy = device.Allocate(Math.Max(2, w.Length * 2));
        ConvertToBf16(w.Pointer, copy.DangerousGetHandle(), w.Length);
        bf16Weights[w] = copy;
        return copy.DangerousGetHandle();
    }

    nint ToBf16(Tensor t, ref SafeHandle? scratch, ref long capacity)
    {
        nint p = Stage(ref scratch, ref capacity, t.Length * 2);
        ConvertToBf16(Dev(t), p, t.Length);
        return p;
    }

    void ConvertToBf16(nint source, nint destination, long n)
    {
        if (n == 0) return;
        using var _ = Range("f32_to_bf16");
        var a = new KernelArgs();
        a.Pointer(source); a.Pointer(destination); a.Long(n);
        Launch("f32_to_bf16", GridFor(n), new Dim3(ElementwiseBlock), 0, ref a);
    }

    // ---- model ops ----------------------------------------------------------------------------------------------

    public void Embedding(ReadOnlySpan<int> tokens, Tensor table, Tensor output)
    {
        int dim = table.Columns, vocab = table.Rows;
        foreach (int id in tokens)
            if ((uint)id >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {id} outside vocabulary of {vocab}");
        if (output.Length < (long)tokens.Length * dim) throw new ArgumentException($"embedding of {tokens.Length} tokens × {dim} into {output}");
        if (tokens.Length == 0 || dim == 0) return;
        using var _ = Range("embedding");
        var a = new KernelArgs();
        a.Pointer(Indices(tokens)); a.Pointer(Dev(table)); a.Pointer(Dev(output)); a.Int(tokens.Length); a.Int(dim); a.Int(vocab);
        Launch("embedding_forward", GridFor((long)tokens.Length * dim), new Dim3(ElementwiseBlock), 0, ref a);
    }

    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y, Tensor rstd)
    {
        int rows = x.Rows, dim = x.Columns;
        CheckLength(weight, dim, "RmsNorm weight");
        CheckLength(y, x.Length, "RmsNorm y");
        CheckLength(rstd, rows, "RmsNorm rstd");
        if (rows == 0) return;
        using var _ = Range("rmsnorm_forward");
        var a = new KernelArgs();
        a.Pointer(Dev(x)); a.Pointer(Dev(weight)); a.Float(eps); a.Pointer(Dev(y)); a.Pointer(Dev(rstd)); a.Int(rows); a.Int(dim);
        Launch("rmsnorm_forward", new Dim3((uint)rows), new Dim3(RowBlock(dim)), 0, ref a);
    }

    public void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, NormRule rule, Tensor dx)
    {
        int rows = x.Rows, dim = x.Columns;
        CheckLength(dy, x.Length, "RmsNormBackward dy");
        CheckLength(dx, x.Length, "RmsNormBackward dx");
        CheckLength(weight, dim, "RmsNormBackward weight");
        CheckLength(rstd, rows, "RmsNormBackward rstd");
        int exact = rule switch
        {
            NormRule.Exact => 1,
            NormRule.FrozenScale => 0,
            _ => throw new ArgumentOutOfRangeException(nameof(rule)),
        };
        if (rows == 0) return;
        using var _ = Range("rmsnorm_backward");
        var a = new KernelArgs();
        a.Pointer(Dev(dy)); a.Pointer(Dev(x)); a.Pointer(Dev(weight)); a.Pointer(Dev(rstd)); a.Pointer(Dev(dx));
        a.Int(rows); a.Int(dim); a.Int(exact);
        Launch("rmsnorm_backward", new Dim3((uint)rows), new Dim3(RowBlock(dim)), 0, ref a);
    }

    public void Rope(Tensor x, int heads, int seqLen, Tensor cos, Tensor sin, bool interleaved, bool inverse)
    {
        if (heads <= 0 || x.Columns % heads != 0) throw new ArgumentException($"Rope: {x} does not split into {heads} heads");
        int headDim = x.Columns / heads, half = headDim / 2, rows = x.Rows;
        if (headDim % 2 != 0) throw new ArgumentException($"Rope: head dim {headDim} is odd");
        if (seqLen <= 0) throw new ArgumentOutOfRangeException(nameof(seqLen));
        if (cos.Length < (long)seqLen * half || sin.Length < (long)seqLen * half)
            throw new ArgumentException($"Rope: cos/sin need [{seqLen}, {half}], got {cos} and {sin}");
        long pairs = (long)rows * heads * half;
        if (pairs == 0) return;
        using var _ = Range("rope");
        var a = new KernelArgs();
        a.Pointer(Dev(x)); a.Pointer(Dev(cos)); a.Pointer(Dev(sin));
        a.Int(rows); a.Int(heads); a.Int(headDim); a.Int(seqLen); a.Int(interleaved ? 1 : 0); a.Int(inverse ? 1 : 0);
        Launch("rope_apply", GridFor(pairs), new Dim3(ElementwiseBlock), 0, ref a);
    }

    public void Attention(Tensor q, Tensor k, Tensor v, AttentionShape shape, Tensor z, Tensor probs)
    {
        CheckAttention(shape, q, k, v, probs);
        CheckLength(z, (long)shape.Rows * shape.QWidth, "Attention z");
        if (shape.Rows == 0 || shape.Heads == 0) return;
        using var _ = Range("attention_forward");
        var a = new KernelArgs();
        a.Pointer(Dev(q)); a.Pointer(Dev(k)); a.Pointer(Dev(v)); a.Pointer(Dev(z)); a.Pointer(Dev(probs));
        a.Int(shape.SeqLen); a.Int(shape.Heads); a.Int(shape.KvHeads); a.Int(shape.HeadDim); a.Float(AttentionScale(shape));
        Launch("attention_forward", AttentionGrid(shape, shape.Heads), new Dim3(AttentionBlock), AttentionShared(shape), ref a);
    }

    public void AttentionBackward(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor probs, AttentionShape shape, AttentionRule rule,
        Tensor dq, Tensor dk, Tensor dv)
    {
        CheckAttention(shape, q, k, v, probs);
        CheckLength(dz, q.Length, "AttentionBackward dz");
        CheckLength(dq, q.Length, "AttentionBackward dq");
        CheckLength(dk, k.Length, "AttentionBackward dk");
        CheckLength(dv, v.Length, "AttentionBackward dv");
        bool exact = rule switch
        {
            AttentionRule.Gradient => true,
            AttentionRule.FreezePattern => false,
            _ => throw new ArgumentOutOfRangeException(nameof(rule)),
        };
        if (shape.Rows == 0 || shape.Heads == 0) return;
        using var _ = Range("attention_backward");
        nint ds = 0;
        if (exact)
        {
            ds = Scores((long)shape.Batch * shape.Heads * shape.SeqLen * shape.SeqLen);
            var a = new KernelArgs();
            a.Pointer(Dev(dz)); a.Pointer(Dev(k)); a.Pointer(Dev(v)); a.Pointer(Dev(probs)); a.Pointer(ds); a.Pointer(Dev(dq));
            a.Int(shape.SeqLen); a.Int(shape.Heads); a.Int(shape.KvHeads); a.Int(shape.HeadDim); a.Float(AttentionScale(shape));
            Launch("attention_backward_dq", AttentionGrid(shape, shape.Heads), new Dim3(AttentionBlock), AttentionShared(shape), ref a);
        }
        else
        {
            Fill(dq, 0f);  // the frozen pattern passes nothing to q (nor k: the kernel writes zeros)
        }
        var b = new KernelArgs();
        b.Pointer(Dev(dz)); b.Pointer(Dev(q)); b.Pointer(Dev(probs)); b.Pointer(ds); b.Pointer(Dev(dk)); b.Pointer(Dev(dv));
        b.Int(shape.SeqLen); b.Int(shape.Heads); b.Int(shape.KvHeads); b.Int(shape.HeadDim); b.Int(exact ? 1 : 0);
        Launch("attention_backward_dkdv", AttentionGrid(shape, shape.KvHeads), new Dim3(AttentionBlock), 0, ref b);
    }

    public void SwiGlu(Tensor gate, Tensor up, Tensor h)
    {
        CheckLength(gate, h.Length, "SwiGlu gate");
        CheckLength(up, h.Length, "SwiGlu up");
        if (h.Length == 0) return;
        using var _ = Range("swiglu_forward");
        var a = new KernelArgs();
        a.Pointer(Dev(gate)); a.Pointer(Dev(up)); a.Pointer(Dev(h)); a.Long(h.Length);
        Launch("swiglu_forward", GridFor(h.Length), new Dim3(ElementwiseBlock), 0, ref a);
    }

    public void SwiGluBackward(Tensor dh, Tensor gate, Tensor up, GateRule rule, Tensor dgate, Tensor dup)
    {
        long n = dh.Length;
        CheckLength(gate, n, "SwiGluBackward gate");
        CheckLength(up, n, "SwiGluBackward up");
        CheckLength(dgate, n, "SwiGluBackward dgate");
        CheckLength(dup, n, "SwiGluBackward dup");
        int code = rule switch  // the encoding swiglu.cu documents
        {
            GateRule.Exact => 0,
            GateRule.IdentityHalf => 1,
            GateRule.Identity => 2,
            _ => throw new ArgumentOutOfRangeException(nameof(rule)),
        };
        if (n == 0) return;
        using var _ = Range("swiglu_backward");
        var a = new KernelArgs();
        a.Pointer(Dev(dh)); a.Pointer(Dev(gate)); a.Pointer(Dev(up)); a.Pointer(Dev(dgate)); a.Pointer(Dev(dup)); a.Long(n); a.Int(code);
        Launch("swiglu_backward", GridFor(n), new Dim3(ElementwiseBlock), 0, ref a);
    }

    // ---- elementwise and rows -----------------------------------------------------------------------------------

    public void Add(Tensor destination, Tensor source)
    {
        CheckLength(source, destination.Length, "Add source");
        if (destination.Length == 0) return;
        using var _ = Range("add");
        var a = new KernelArgs();
        a.Pointer(Dev(destination)); a.Pointer(Dev(source)); a.Long(destination.Length);
        Launch("add_inplace", GridFor(destination.Length), new Dim3(ElementwiseBlock), 0, ref a);
    }

    public void Intervene(Tensor x, Tensor scale, Tensor offset)
    {
        CheckLength(scale, x.Length, "Intervene scale");
        CheckLength(offset, x.Length, "Intervene offset");
        if (x.Length == 0) return;
        using var _ = Range("intervene");
        var a = new KernelArgs();
        a.Pointer(Dev(x)); a.Pointer(Dev(scale)); a.Pointer(Dev(offset)); a.Long(x.Length);
        Launch("intervene_inplace", GridFor(x.Length), new Dim3(ElementwiseBlock), 0, ref a);
    }

    public void MeanAblate(Tensor x, Tensor means, ReadOnlySpan<uint> keepBits, ReadOnlySpan<int> keepRow, ReadOnlySpan<int> meanRow)
    {
        AblationMask.Check(x, means, keepBits, keepRow, meanRow);
        int rows = x.Rows, width = x.Columns;
        if (x.Length == 0) return;
        using var _ = Range("mean_ablate");
        // Both row maps in one upload: [keepRow | meanRow].
        nint rowMaps = Stage(ref indexScratch, ref indexCapacity, 2L * rows * sizeof(int));
        device.CopyToDevice(rowMaps, MemoryMarshal.AsBytes(keepRow));
        device.CopyToDevice(rowMaps + rows * sizeof(int), MemoryMarshal.AsBytes(meanRow));
        nint bits = keepBits.IsEmpty ? 0 : Stage(ref maskScratch, ref maskCapacity, (long)keepBits.Length * sizeof(uint));
        device.CopyToDevice(bits, MemoryMarshal.AsBytes(keepBits));
        var a = new KernelArgs();
        a.Pointer(Dev(x)); a.Pointer(Dev(means)); a.Pointer(bits); a.Pointer(rowMaps); a.Pointer(rowMaps + rows * sizeof(int));
        a.Int(rows); a.Int(width); a.Int(AblationMask.WordsPerRow(width));
        Launch("mean_ablate", GridFor(x.Length), new Dim3(ElementwiseBlock), 0, ref a);
    }

    public void Multiply(Tensor x, Tensor scale)
    {
        CheckLength(scale, x.Length, "Multiply scale");
        if (x.Length == 0) return;
        using var _ = Range("multiply");
        var a = new KernelArgs();
        a.Pointer(Dev(x)); a.Pointer(Dev(scale)); a.Long(x.Length);
        Launch("multiply_inplace", GridFor(x.Length), new Dim3(ElementwiseBlock), 0, ref a);
    }

    public void GatherRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination)
    {
        int width = source.Columns, sourceRows = source.Rows;
        CheckIndices(rows, sourceRows, "GatherRows");
        if (destination.Length < (long)rows.Length * width) throw new ArgumentException($"GatherRows: {rows.Length} rows of {width} into {destination}");
        if (rows.Length == 0 || width == 0) return;
        using var _ = Range("gather_rows");
        var a = new KernelArgs();
        a.Pointer(Dev(source)); a.Pointer(Indices(rows)); a.Pointer(Dev(destination)); a.Int(rows.Length); a.Int(width); a.Int(sourceRows);
        Launch("gather_rows", GridFor((long)rows.Length * width), new Dim3(ElementwiseBlock), 0, ref a);
    }

    public void ScatterAddRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination)
    {
        int width = source.Columns;
        if (width == 0 || rows.Length == 0) return;
        int destinationRows = checked((int)(destination.Length / width));
        CheckIndices(rows, destinationRows, "ScatterAddRows");
        if (source.Length < (long)rows.Length * width) throw new ArgumentException($"ScatterAddRows: {rows.Length} rows of {width} from {source}");
        using var _ = Range("scatter_add_rows");
        var a = new KernelArgs();
        a.Pointer(Dev(source)); a.Pointer(Indices(rows)); a.Pointer(Dev(destination)); a.Int(rows.Length); a.Int(width); a.Int(destinationRows);
        Launch("scatter_add_rows", GridFor(width), new Dim3(ElementwiseBlock), 0, ref a);
    }

    public void Dispose()
    {
        indexScratch?.Dispose();
        maskScratch?.Dispose();
        scoreScratch?.Dispose();
        indexScratch = maskScratch = scoreScratch = null;
        activationBf16?.Dispose(); weightBf16?.Dispose();
        activationBf16 = weightBf16 = null;
        foreach (var copy in bf16Weights.Values) copy.Dispose();
        bf16Weights.Clear();
        if (ownsDevice) device.Dispose();
    }

    // ---- launch configuration -----------------------------------------------------------------------------------

    /// <summary>Grid of a grid-stride kernel over <paramref name="n"/> items.</summary>
    public static Dim3 GridFor(long n) => new((uint)Math.Clamp((n + ElementwiseBlock - 1) / ElementwiseBlock, 1, MaxGridStrideBlocks));

    /// <summary>Block of the one-block-per-row kernels (RMSNorm): the row width rounded up to a warp, 32..256.</summary>
    public static uint RowBlock(int dim) => (uint)Math.Clamp((dim + 31) / 32 * 32, 32, 256);

    static Dim3 AttentionGrid(AttentionShape s, int heads) =>
        new((uint)((s.SeqLen + AttentionRows - 1) / AttentionRows), (uint)heads, (uint)s.Batch);

    /// <summary>Dynamic shared memory of attention_forward / attention_backward_dq: one key tile, rows padded by one.</summary>
    public static int AttentionShared(AttentionShape s)
    {
        long bytes = (long)AttentionKeyTile * (s.HeadDim + 1) * sizeof(float);
        if (bytes > MaxDynamicShared)
            throw new NotSupportedException($"attention with head dim {s.HeadDim} needs {bytes} bytes of shared memory per block (at most {MaxDynamicShared})");
        return (int)bytes;
    }

    /// <summary>The same float the CPU op computes, so both scale the scores identically.</summary>
    static float AttentionScale(AttentionShape s) => 1f / MathF.Sqrt(s.HeadDim);

    void Launch(string kernel, Dim3 grid, Dim3 block, int sharedBytes, ref KernelArgs args) =>
        device.Launch(kernel, grid, block, sharedBytes, args.Pointers());

    // ---- helpers ------------------------------------------------------------------------------------------------

    CudaTensor Create(int[] shape)
    {
        long n = 1;
        foreach (int dim in shape)
        {
            if (dim < 0) throw new ArgumentException($"negative dimension in shape [{string.Join(", ", shape)}]");
            n = checked(n * dim);
        }
        return new CudaTensor(device.Allocate(checked(n * sizeof(float))), device, shape);
    }

    nint Dev(Tensor t) =>
        t is CudaTensor c && ReferenceEquals(c.Device, device) ? c.Pointer : throw new ArgumentException($"{t} is not a tensor of this CUDA backend");

    /// <summary>Uploads indices into the reusable index buffer (grown as needed) and returns its address.</summary>
    nint Indices(ReadOnlySpan<int> values)
    {
        nint p = Stage(ref indexScratch, ref indexCapacity, (long)values.Length * sizeof(int));
        device.CopyToDevice(p, MemoryMarshal.AsBytes(values));
        return p;
    }

    /// <summary>The address of a reusable buffer of at least <paramref name="bytes"/> bytes, grown (doubling) as needed.</summary>
    nint Stage(ref SafeHandle? buffer, ref long capacity, long bytes)
    {
        if (buffer is null || capacity < bytes)
        {
            buffer?.Dispose();
            capacity = Math.Max(bytes, Math.Max(4096, capacity * 2));
            buffer = device.Allocate(capacity);
        }
        return buffer.DangerousGetHandle();
    }

    nint Scores(long floats)
    {
        if (scoreScratch is null || scoreCapacity < floats)
        {
            scoreScratch?.Dispose();
            scoreCapacity = floats;
            scoreScratch = device.Allocate(floats * sizeof(float));
        }
        return scoreScratch.DangerousGetHandle();
    }

    RangeScope Range(string name)
    {
        device.PushRange(name);
        if (OpProfile is null) return new RangeScope(this, null, 0);
        device.Synchronize();
        return new RangeScope(this, name, System.Diagnostics.Stopwatch.GetTimestamp());
    }

    /// <summary>
    /// When set, every op waits for the device before and after itself and adds its wall time (milliseconds, host
    /// launch overhead included; nested ranges counted in both) and a call count here, by NVTX range name. A quick
    /// per-op profile where Nsight is not at hand; the waits slow the run, so never time throughput with it on.
    /// </summary>
    public Dictionary<string, (long Calls, double Milliseconds)>? OpProfile { get; set; }

    readonly struct RangeScope(CudaBackend backend, string? name, long started) : IDisposable
    {
        public void Dispose()
        {
            if (name is not null && backend.OpProfile is { } profile)
            {
                backend.device.Synchronize();
                var (calls, ms) = profile.GetValueOrDefault(name);
                profile[name] = (calls + 1, ms + System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            }
            backend.device.PopRange();
        }
    }

    static void CheckAttention(AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor probs)
    {
        if (s.Batch < 0 || s.SeqLen < 0 || s.Heads < 0 || s.KvHeads <= 0 || s.HeadDim <= 0 || s.Heads % s.KvHeads != 0)
            throw new ArgumentException($"attention shape {s} is not a valid GQA shape");
        CheckLength(q, (long)s.Rows * s.QWidth, "attention q");
        CheckLength(k, (long)s.Rows * s.KvWidth, "attention k");
        CheckLength(v, (long)s.Rows * s.KvWidth, "attention v");
        CheckLength(probs, (long)s.Batch * s.Heads * s.SeqLen * s.SeqLen, "attention probs");
    }

    static void CheckIndices(ReadOnlySpan<int> rows, int count, string what)
    {
        foreach (int r in rows)
            if ((uint)r >= (uint)count) throw new ArgumentOutOfRangeException(nameof(rows), $"{what}: row {r} outside [0, {count})");
    }

    static void CheckLength(Tensor t, long length, string what)
    {
        if (t.Length != length) throw new ArgumentException($"{what}: {t} has {t.Length} values, expected {length}");
    }

    static void CheckColumns(Tensor t, int columns, string what)
    {
        if (t.Columns != columns) throw new ArgumentException($"{what}: {t} has {t.Columns} columns, expected {columns}");
    }

    static void CheckRows(Tensor t, int rows, string what)
    {
        if (t.Rows != rows) throw new ArgumentException($"{what}: {t} has {t.Rows} rows, expected {rows}");
    }
}
