namespace NeuronTrace.Tracing.Evaluation;

/// <summary>A circuit's scores: the metric with only the circuit kept, and with only the circuit ablated, each as a fraction of the range.</summary>
internal readonly record struct CircuitScore(double Faithfulness, double Completeness);

/// <summary>
/// The one evaluator of node, edge and SAE circuits (docs/method.md §5): with m(M) the metric under keep-mask M,
/// faithfulness(C) = (m(C) − m(∅)) / (m(all) − m(∅)) and completeness(C) = (m(¬C) − m(∅)) / (m(all) − m(∅)).
/// What a node is and how it is ablated is the <see cref="CircuitAblation"/>'s business.
/// </summary>
internal sealed class Faithfulness(CircuitAblation ablation)
{
    public CircuitAblation Ablation { get; } = ablation;

    /// <summary>m(all) and m(∅), once known (from <see cref="Score"/> or <see cref="FaithfulnessOf"/>).</summary>
    public (double Full, double Empty)? Ends { get; private set; }

    /// <summary>
    /// Faithfulness and completeness of each circuit. One <see cref="CircuitAblation.Evaluate"/> call over the masks
    /// [all, ∅, C₀, ¬C₀, C₁, ¬C₁, …]; <paramref name="progress"/> gets (masks done, masks).
    /// </summary>
    public CircuitScore[] Score(IReadOnlyList<bool[]> circuits, Action<int, int>? progress = null)
    {
        int n = Ablation.NodeCount;
        var masks = new List<bool[]>(2 + 2 * circuits.Count) { Filled(n, true), Filled(n, false) };
        foreach (var c in circuits) { masks.Add(c); masks.Add(Not(c)); }
        var m = Ablation.Evaluate(masks, progress is null ? null : done => progress(done, masks.Count));
        Ends = (m[0], m[1]);
        var scores = new CircuitScore[circuits.Count];
        for (int i = 0; i < scores.Length; i++) scores[i] = new(Normalise(m[2 + 2 * i]), Normalise(m[3 + 2 * i]));
        return scores;
    }

    /// <summary>Faithfulness only (no complement forwards); the ends are evaluated first, in their own call, if not yet known.</summary>
    public double[] FaithfulnessOf(IReadOnlyList<bool[]> circuits)
    {
        if (Ends is null)
        {
            var e = Ablation.Evaluate([Filled(Ablation.NodeCount, true), Filled(Ablation.NodeCount, false)]);
            Ends = (e[0], e[1]);
        }
        return Ablation.Evaluate(circuits).Select(Normalise).ToArray();
    }

    double Normalise(double metric)
    {
        var (full, empty) = Ends!.Value;
        return (metric - empty) / (full - empty);
    }

    static bool[] Filled(int n, bool v) { var a = new bool[n]; Array.Fill(a, v); return a; }
    static bool[] Not(bool[] a) => a.Select(x => !x).ToArray();
}
