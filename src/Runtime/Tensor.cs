namespace NeuronTrace.Runtime;

/// <summary>
/// A dense fp32 tensor owned by one backend. Row-major; the last dimension is contiguous.
/// CPU tensors expose <see cref="Span"/>; device tensors are reached only through their backend.
/// </summary>
public abstract class Tensor : IDisposable
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
public sealed class CpuTensor(float[] data, int[] shape) : Tensor(shape)
{
    public CpuTensor(params int[] shape) : this(new float[Count(shape)], shape) { }

    public float[] Data { get; } = data.LongLength == Count(shape) ? data : throw new ArgumentException($"data has {data.LongLength} values, shape [{string.Join(", ", shape)}] needs {Count(shape)}");

    public override Span<float> Span => Data;

    bool _pooled;

    /// <summary>A tensor whose array comes from, and returns to, the pool; zero-filled unless <paramref name="clear"/> is false.</summary>
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

    static long Count(int[] shape)
    {
        long n = 1;
        foreach (int d in shape) n *= d;
        return n;
    }
}

/// <summary>Arrays kept for reuse by exact length, bounded in count per length and in total bytes.</summary>
static class ArrayPoolByLength
{
    const int PerLength = 512;   // an attribution batch holds two forwards of ~15 same-shape tensors per layer
    const long MaxBytes = 1L << 30;
    static readonly System.Collections.Concurrent.ConcurrentDictionary<long, System.Collections.Concurrent.ConcurrentBag<float[]>> Pool = new();
    static long _bytes;

    public static float[]? Take(long length)
    {
        if (length < 1024 || !Pool.TryGetValue(length, out var bag) || !bag.TryTake(out var a)) return null;
        Interlocked.Add(ref _bytes, -length * 4);
        return a;
    }

    public static void Return(float[] a)
    {
        if (a.Length < 1024) return;
        var bag = Pool.GetOrAdd(a.LongLength, _ => new());
        if (bag.Count >= PerLength || Interlocked.Add(ref _bytes, a.LongLength * 4) > MaxBytes)
        {
            if (bag.Count < PerLength) Interlocked.Add(ref _bytes, -a.LongLength * 4);
            return;
        }
        bag.Add(a);
    }
}
