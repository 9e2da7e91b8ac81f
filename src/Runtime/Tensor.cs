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

/// <summary>A tensor in managed host memory.</summary>
public sealed class CpuTensor(float[] data, int[] shape) : Tensor(shape)
{
    public CpuTensor(params int[] shape) : this(new float[Count(shape)], shape) { }

    public float[] Data { get; } = data.LongLength == Count(shape) ? data : throw new ArgumentException($"data has {data.LongLength} values, shape [{string.Join(", ", shape)}] needs {Count(shape)}");

    public override Span<float> Span => Data;

    static long Count(int[] shape)
    {
        long n = 1;
        foreach (int d in shape) n *= d;
        return n;
    }
}
