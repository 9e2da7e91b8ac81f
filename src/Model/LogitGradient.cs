using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// ∂metric/∂logits, the seed of <see cref="Llama.Backward(ForwardPass, LogitGradient, BackwardRules, IReadOnlyCollection{NodeSite}, InterventionPlan?, int, Func{int, bool}?)"/>:
/// either dense, [logit rows, vocab] on the backend (owned by the caller), or — for a metric linear in the logits, whose
/// gradient is a few constants per row — <see cref="PerRow"/> (token, weight) entries per logit row, a token of −1 an
/// empty slot. A sparse gradient never touches the logits: the output layer's backward becomes a gather of the
/// answers' classifier rows (<see cref="IBackend.SparseMatMulInputGrad"/>), and nothing is downloaded for it.
/// </summary>
internal sealed class LogitGradient
{
    LogitGradient(Tensor? dense, int[]? tokens, float[]? weights, int perRow)
    {
        Dense = dense; Tokens = tokens; Weights = weights; PerRow = perRow;
    }

    public Tensor? Dense { get; }
    public int[]? Tokens { get; }
    public float[]? Weights { get; }
    public int PerRow { get; }
    /// <summary>Rows of the gradient (the forward's logit rows).</summary>
    public int Rows => Dense?.Rows ?? Tokens!.Length / PerRow;

    public static LogitGradient FromDense(Tensor gradient) => new(gradient, null, null, 0);

    /// <summary>Row r's non-zeros are (tokens[r·perRow + j], weights[r·perRow + j]), summed in j order.</summary>
    public static LogitGradient Sparse(int[] tokens, float[] weights, int perRow)
    {
        if (perRow < 1 || tokens.Length % perRow != 0 || weights.Length != tokens.Length)
            throw new ArgumentException($"sparse logit gradient: {tokens.Length} tokens and {weights.Length} weights are not rows of {perRow}");
        return new(null, tokens, weights, perRow);
    }
}
