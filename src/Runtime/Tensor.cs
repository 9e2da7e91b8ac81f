namespace NeuronTrace.Runtime;

/// <summary>
/// A dense fp32 tensor owned by one backend. Row-major; the last dimension is contiguous.
/// CPU tensors expose <see cref="Span"/>; device tensors are reached only through their backend.
/// </summary>
internal abstract class Tensor : IDisposable
{
    protected Tensor(int[] shape)
    {
        long n = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in shape [{string.Join(", ", shape)}]");
            n *= d;
        }
        Shape = shape;
        Length = n;
    }

    public int[] Shape { get; }
    public long Length { get; }
    public int Rank => Shape.Length;
    /// <summary>Size of the last dimension (the row width).</summary>
    public int Columns => Shape.Length == 0 ? 1 : Shape[^1];
    /// <summary>Product of all dimensions but the last.</summary>
    public int Rows => Columns == 0 ? 0 : checked((int)(Length / Columns));

    /// <summary>Host memory of a CPU tensor. Device tensors throw.</summary>
    public abstract Span<float> Span { get; }

    public virtual void Dispose() => GC.SuppressFinalize(this);

    public override string ToString() => $"Tensor[{string.Join(", ", Shape)}]";
}

/// <summary>
/// A tensor in managed host memory. Tensors made by <see cref="Rent"/> return their array to a pool keyed by exact
/// length when disposed: a forward pass allocates the same shapes again and again, and fresh large arrays cost page
/// faults on first touch that dwarf the arithmetic of small models.
/// </summary>
internal sealed class CpuTensor(float[] data, int[] shape) : Tensor(shape)
{
    public CpuTensor(params int[] shape) : this(new float[Count(shape)], shape) { }

    public float[] Data { get; } = data.LongLength == Count(shape) ? data : throw new ArgumentException($"data has {data.LongLength} values, shape [{string.Join(", ", shape)}] needs {Count(shape)}");

    public override Span<float> Span => Data;

    bool _pooled;

    /// <summary>A tensor whose array comes from, and returns to, the pool; zero-filled unless <paramref name="clear"/> is false.</summary>
    /// <param name="shape">The tensor's dimensions, outermost first.</param>
    /// <param name="clear">False when the caller overwrites every element (a reused array keeps stale values).</param>
    public static CpuTensor Rent(int[] shape, bool clear = true)
    {
        long n = Count(shape);
        var array = ArrayPoolByLength.Take(n);
        if (array is null) array = clear ? new float[n] : GC.AllocateUninitializedArray<float>(checked((int)n));
        else if (clear) Array.Clear(array);
        return new CpuTensor(array, shape) { _pooled = true };
    }

    public override void Dispose()
    {
        if (_pooled)
        {
            _pooled = false;   // a second Dispose must not hand the array out twice
            ArrayPoolByLength.Return(Data);
        }
        base.Dispose();
    }

    /// <summary>
    /// The most bytes that pooled-size arrays (rented plus kept in the pool) have held at once since
    /// <see cref="ResetPeakResidentBytes"/>: what CPU tensors add to the process's peak resident memory (the memory
    /// plan's tests compare it with the plan).
    /// </summary>
    public static long PeakResidentBytes => ArrayPoolByLength.PeakResident;

    /// <summary>Starts <see cref="PeakResidentBytes"/> again from what is resident now.</summary>
    public static void ResetPeakResidentBytes() => ArrayPoolByLength.ResetPeakResident();

    /// <summary>Drops every array kept for reuse (tensors in use are untouched): the pool then holds only what is freed from here on.</summary>
    public static void ReleasePooledArrays() => ArrayPoolByLength.Clear();

    static long Count(int[] shape)
    {
        long n = 1;
        foreach (int d in shape) n *= d;
        return n;
    }
}

/// <summary>
/// Arrays kept for reuse by exact length, bounded in count per length and in total bytes: at most twice the most bytes
/// that were ever rented at once (and 1 GiB), room for two alternating shapes (a batch and the short last one). When a
/// return would pass that, the least recently used lengths go first, so a run whose shapes change from batch to batch
/// keeps the current shapes instead of every shape seen (issue 15: the pool held up to 1 GiB of stale shapes, so peak
/// memory grew with the task). Pool plus rented arrays stay within three times the largest set of tensors alive at once.
/// </summary>
static class ArrayPoolByLength
{
    const int PerLength = 512;   // an attribution batch holds two forwards of ~15 same-shape tensors per layer
    const long MaxBytes = 1L << 30;

    sealed class Entry
    {
        public readonly System.Collections.Concurrent.ConcurrentBag<float[]> Arrays = new();
        public long LastUse;
    }

    static readonly System.Collections.Concurrent.ConcurrentDictionary<long, Entry> Pool = new();
    static readonly Lock EvictionGate = new();
    static long _bytes, _rented, _peakRented, _clock, _peakResident;

    public static float[]? Take(long length)
    {
        if (length < 1024) return null;
        long rented = Interlocked.Add(ref _rented, length * 4);
        for (long peak = Interlocked.Read(ref _peakRented); rented > peak; peak = Interlocked.Read(ref _peakRented))
            if (Interlocked.CompareExchange(ref _peakRented, rented, peak) == peak) break;
        if (!Pool.TryGetValue(length, out var e)) return Missed();
        e.LastUse = Interlocked.Increment(ref _clock);
        if (!e.Arrays.TryTake(out var a)) return Missed();
        Interlocked.Add(ref _bytes, -length * 4);
        return a;
    }

    // A miss is the only step that adds resident bytes (the caller allocates a new array): the peak moves only here.
    static float[]? Missed()
    {
        long resident = Interlocked.Read(ref _rented) + Interlocked.Read(ref _bytes);
        for (long peak = Interlocked.Read(ref _peakResident); resident > peak; peak = Interlocked.Read(ref _peakResident))
            if (Interlocked.CompareExchange(ref _peakResident, resident, peak) == peak) break;
        return null;
    }

    public static void Clear()
    {
        lock (EvictionGate)
            foreach (var entry in Pool.Values)
                while (entry.Arrays.TryTake(out var dropped)) Interlocked.Add(ref _bytes, -dropped.LongLength * 4);
    }

    public static long PeakResident => Interlocked.Read(ref _peakResident);
    public static void ResetPeakResident() => Interlocked.Exchange(ref _peakResident, Interlocked.Read(ref _rented) + Interlocked.Read(ref _bytes));

    public static void Return(float[] a)
    {
        if (a.Length < 1024) return;
        long bytes = a.LongLength * 4;
        Interlocked.Add(ref _rented, -bytes);
        var e = Pool.GetOrAdd(a.LongLength, _ => new());
        e.LastUse = Interlocked.Increment(ref _clock);
        if (e.Arrays.Count >= PerLength) return;
        long cap = Math.Min(MaxBytes, 2 * Interlocked.Read(ref _peakRented));
        if (Interlocked.Add(ref _bytes, bytes) > cap)
        {
            Interlocked.Add(ref _bytes, -bytes);
            if (!EvictFor(bytes, cap, a.LongLength) || Interlocked.Add(ref _bytes, bytes) > cap)
            {
                Interlocked.Add(ref _bytes, -bytes);
                return;
            }
        }
        e.Arrays.Add(a);
    }

    /// <summary>Drops arrays of the least recently used other lengths until <paramref name="bytes"/> more fit under the cap.</summary>
    static bool EvictFor(long bytes, long cap, long keepLength)
    {
        lock (EvictionGate)
        {
            while (Interlocked.Read(ref _bytes) + bytes > cap)
            {
                Entry? oldest = null;
                foreach (var (length, entry) in Pool)
                    if (length != keepLength && !entry.Arrays.IsEmpty && (oldest is null || entry.LastUse < oldest.LastUse)) oldest = entry;
                if (oldest is null) return false;
                while (Interlocked.Read(ref _bytes) + bytes > cap && oldest.Arrays.TryTake(out var dropped))
                {
                    Interlocked.Add(ref _bytes, -dropped.LongLength * 4);
                    _droppedSinceCollect += dropped.LongLength * 4;
                }
            }
            // Dropped arrays are large-object garbage, which the GC collects only once its (growing) budget is spent:
            // without this, peak memory grew with the number of shape changes (measured: 400 MB of dropped arrays on a
            // 60 MB working set). A blocking gen-2 collection after each working set's worth of drops keeps them bounded;
            // float arrays hold no references, so it marks little.
            if (_droppedSinceCollect > Math.Max(MinDropsPerCollect, Interlocked.Read(ref _peakRented)))
            {
                _droppedSinceCollect = 0;
                GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: false);
            }
            return true;
        }
    }

    const long MinDropsPerCollect = 32L << 20;
    static long _droppedSinceCollect;   // under EvictionGate
}

/// <summary>How a 16-bit weight value is encoded.</summary>
internal enum HalfFormat
{
    /// <summary>bfloat16: the top half of an fp32 (widening is a 16-bit shift, exact).</summary>
    BFloat16,
    /// <summary>IEEE 754 binary16 (widening is exact).</summary>
    Float16,
}

/// <summary>
/// 16-bit weight values kept in their file precision: a pinned managed array, or a range of a read-only memory map
/// whose owner this object keeps alive. A 1B model in bf16 is 3 GB this way instead of 6 GB widened to fp32, and a
/// mapped range costs no memory until a product first reads it. Consumers widen to fp32 as they read (exactly).
/// </summary>
internal sealed unsafe class HalfWeights
{
    readonly ushort[]? _array;
    readonly object? _owner;   // keeps the memory map alive while these weights are reachable

    /// <summary>Pointer to the first value, valid while this object is alive.</summary>
    internal ushort* Pointer { get; }
    public HalfFormat Format { get; }
    public long Length { get; }

    /// <summary>Copies <paramref name="values"/> into a pinned managed array.</summary>
    public HalfWeights(ReadOnlySpan<ushort> values, HalfFormat format)
    {
        _array = GC.AllocateUninitializedArray<ushort>(values.Length, pinned: true);
        values.CopyTo(_array);
        Pointer = (ushort*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(_array));
        Format = format;
        Length = values.Length;
    }

    /// <summary>Wraps <paramref name="length"/> values at <paramref name="pointer"/>, which <paramref name="owner"/> keeps valid.</summary>
    public HalfWeights(ushort* pointer, long length, HalfFormat format, object owner)
    {
        ArgumentNullException.ThrowIfNull(owner);
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length));
        Pointer = pointer; Length = length; Format = format; _owner = owner;
    }

    /// <summary>The raw 16-bit values [offset, offset + count).</summary>
    public ReadOnlySpan<ushort> Raw(long offset, int count)
    {
        if (offset < 0 || count < 0 || offset > Length - count) throw new ArgumentOutOfRangeException(nameof(offset), $"values {offset}..{offset + count} of {Length}");
        return new ReadOnlySpan<ushort>(Pointer + offset, count);
    }

    public float this[long index]
    {
        get
        {
            if ((ulong)index >= (ulong)Length) throw new ArgumentOutOfRangeException(nameof(index));
            return Widen(Pointer[index], Format);
        }
    }

    /// <summary>Widens values [offset, offset + destination.Length) into <paramref name="destination"/>.</summary>
    public void Widen(long offset, Span<float> destination) => Cpu.Gemm.WidenHalf(Raw(offset, destination.Length), Format, destination);

    /// <summary>
    /// Hands the whole pages of mapped weights back to the kernel (madvise MADV_DONTNEED): they leave this process's
    /// resident set and are read again from the page cache, or the file, when next touched; the values do not change.
    /// For a table that a run reads sparsely after one full scan: the token embedding after load validation (525 MB at
    /// the Llama-3.2-1B shape, of which a batch reads a few rows). No effect on weights in a managed array, or off Linux.
    /// </summary>
    public void ReleaseResidentPages()
    {
        if (_array is not null || !OperatingSystem.IsLinux() || Length == 0) return;
        long page = Environment.SystemPageSize;
        long start = ((long)Pointer + page - 1) / page * page, end = ((long)Pointer + 2 * Length) / page * page;
        if (end > start) _ = Madvise((void*)start, (nuint)(end - start), MadvDontNeed);   // advice only: a failure changes nothing
        GC.KeepAlive(this);
    }

    const int MadvDontNeed = 4;

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "madvise")]
    static extern int Madvise(void* address, nuint length, int advice);

    /// <summary>All values widened to a new fp32 array.</summary>
    public float[] ToFloats()
    {
        var a = GC.AllocateUninitializedArray<float>(checked((int)Length));
        Widen(0, a);
        return a;
    }

    public static float Widen(ushort bits, HalfFormat format) =>
        format == HalfFormat.BFloat16 ? BitConverter.Int32BitsToSingle(bits << 16) : (float)BitConverter.UInt16BitsToHalf(bits);
}

/// <summary>A CPU weight tensor holding 16-bit values; products widen them to fp32 as they pack (see <see cref="Cpu.Gemm"/>).</summary>
internal sealed class CpuHalfTensor(HalfWeights data, int[] shape) : Tensor(shape)
{
    public HalfWeights Data { get; } = data.Length == Count(shape) ? data : throw new ArgumentException($"data has {data.Length} values, shape [{string.Join(", ", shape)}] needs {Count(shape)}");

    public override Span<float> Span => throw new NotSupportedException($"{this} holds 16-bit weights; read them through HalfWeights");

    /// <summary>
    /// The most bytes that pooled-size arrays (rented plus kept in the pool) have held at once since
    /// <see cref="ResetPeakResidentBytes"/>: what CPU tensors add to the process's peak resident memory (the memory
    /// plan's tests compare it with the plan).
    /// </summary>
    public static long PeakResidentBytes => ArrayPoolByLength.PeakResident;

    /// <summary>Starts <see cref="PeakResidentBytes"/> again from what is resident now.</summary>
    public static void ResetPeakResidentBytes() => ArrayPoolByLength.ResetPeakResident();

    /// <summary>Drops every array kept for reuse (tensors in use are untouched): the pool then holds only what is freed from here on.</summary>
    public static void ReleasePooledArrays() => ArrayPoolByLength.Clear();

    static long Count(int[] shape)
    {
        long n = 1;
        foreach (int d in shape) n *= d;
        return n;
    }
}
