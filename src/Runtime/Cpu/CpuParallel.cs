namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// Splits the CPU backend's element-wise and row-wise ops across the cores. At the 1B shape the products run on both
/// cores, and these ops (SwiGLU, RMSNorm, score sums, row gathers, copies: a few hundred µs each, hundreds per pass)
/// ran on the calling thread while the other core waited. Each piece computes its elements with exactly the
/// operations the whole op would, so the results are the same bit for bit whatever the split.
/// </summary>
internal static class CpuParallel
{
    /// <summary>
    /// Below this many elements an op runs on the calling thread: a dispatch costs tens of µs and wakes a pool thread
    /// (CPU time the pass pays even when the other core is busy elsewhere). At 2^18 every product's rounding and every
    /// RMSNorm split too, and a run at load 10 spent ~0.1 CPU s more per 1B batch outside the products; 2^20 splits
    /// the large ones only (the MLP's SwiGLU and score sums, the down projection's rounding, the score downloads).
    /// </summary>
    internal const long MinElements = 1L << 20;

    /// <summary>
    /// Runs <paramref name="body"/>(start, end) over [0, <paramref name="count"/>) in one piece per core when
    /// <paramref name="elements"/> (the op's work) is at least <see cref="MinElements"/>, else as one piece. Piece
    /// boundaries are multiples of <paramref name="align"/>, so that a vector loop over a piece covers the same
    /// elements as over the whole range and only the whole range's tail takes the scalar path.
    /// </summary>
    public static void For(int count, long elements, int align, Action<int, int> body)
    {
        int pieces = elements < MinElements || count <= align ? 1 : Math.Min(Environment.ProcessorCount, (count + align - 1) / align);
        if (pieces <= 1)
        {
            body(0, count);
            return;
        }
        int units = (count + align - 1) / align;
        int per = (units + pieces - 1) / pieces * align;
        Parallel.For(0, pieces, p =>
        {
            int start = p * per, end = Math.Min(count, start + per);
            if (start < end) body(start, end);
        });
    }

    /// <summary>Elements per piece boundary for the vector loops: a multiple of every vector width they use (64 bytes).</summary>
    public const int VectorAlign = 16;
}
