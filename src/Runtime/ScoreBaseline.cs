namespace NeuronTrace.Runtime;

/// <summary>How <see cref="IBackend.AccumulateScores"/> reads a row's baseline value (the a_base of a_base − a_clean).</summary>
internal enum ScoreBaselineKind
{
    /// <summary>0 everywhere (zero ablation): no tensor.</summary>
    Zero = 0,
    /// <summary>One value per row of the batch, [rows, width] like the clean values (the patch run's site values).</summary>
    PerRow = 1,
    /// <summary>One row per score row, [*, width], read at the same row as the sums (the task's mean per position).</summary>
    PerPosition = 2,
}

/// <summary>The baseline of a score accumulation: its kind and, unless zero, the tensor it is read from.</summary>
internal readonly record struct ScoreBaseline(ScoreBaselineKind Kind, Tensor? Values)
{
    public static ScoreBaseline Zero => new(ScoreBaselineKind.Zero, null);
    public static ScoreBaseline PerRow(Tensor values) => new(ScoreBaselineKind.PerRow, values);
    public static ScoreBaseline PerPosition(Tensor values) => new(ScoreBaselineKind.PerPosition, values);
}
