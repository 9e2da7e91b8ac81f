namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// Per-shape CPU and wall time of the CPU backend's matrix products, for the bench's attribution profile: while
/// <see cref="Active"/> is set, each <see cref="CpuBackend.MatMul"/> / <see cref="CpuBackend.MatMulInputGrad"/> adds
/// the process CPU time it took (all threads: the products run on every core) and its elapsed time to its shape's
/// entry; CPU over wall says how many cores a product kept busy, and the pass's wall outside the products is what the
/// rest of the pass costs. Off (null) by default: two null checks per product.
/// </summary>
internal sealed class GemmTimes
{
    /// <summary>The recorder the backend adds to, or null.</summary>
    public static GemmTimes? Active { get; set; }

    /// <summary>One product shape: c[M, N] = a[M, K] · (Bᵀ when TransposedB), over 16-bit weights or not.</summary>
    public readonly record struct Shape(int M, int N, int K, bool TransposedB, bool HalfWeights, CpuMath Math);

    readonly Dictionary<Shape, (int Calls, TimeSpan Cpu, TimeSpan Wall)> _byShape = [];

    public static TimeSpan Now() => Environment.CpuUsage.TotalTime;

    public static long WallNow() => System.Diagnostics.Stopwatch.GetTimestamp();

    public void Add(Shape shape, TimeSpan cpu, long wallStart)
    {
        var wall = System.Diagnostics.Stopwatch.GetElapsedTime(wallStart);
        lock (_byShape)
        {
            _byShape.TryGetValue(shape, out var e);
            _byShape[shape] = (e.Calls + 1, e.Cpu + cpu, e.Wall + wall);
        }
    }

    public IReadOnlyList<(Shape Shape, int Calls, TimeSpan Cpu, TimeSpan Wall)> Entries()
    {
        lock (_byShape) return _byShape.Select(kv => (kv.Key, kv.Value.Calls, kv.Value.Cpu, kv.Value.Wall)).ToList();
    }
}
