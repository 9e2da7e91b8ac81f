using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Edges;

/// <summary>
/// Jacobians of chosen mlp_act neurons of a target layer w.r.t. the whole mlp_act tensor of a source layer
/// (docs/method.md §6.2 step 2), as a multi-right-hand-side backward: the prompt is replicated R times in one batch, replica i
/// is seeded with a one-hot gradient at target i, and one backward per chunk of R targets gives R Jacobian rows.
/// The MLPs strictly between source and target have their outputs detached (direct effect through attention and the
/// residual stream only).
/// </summary>
internal sealed class EdgeJacobian : IDisposable
{
    readonly Llama _model;
    readonly ForwardPass _pass;

    /// <summary>Runs the forward of <paramref name="replicas"/> copies of <paramref name="prompt"/> once; every later call reuses it.</summary>
    public EdgeJacobian(Llama model, int[] prompt, int replicas)
    {
        if (replicas < 1) throw new ArgumentException("at least one replica");
        _model = model;
        Prompt = prompt;
        Replicas = replicas;
        _pass = model.Forward(new TokenBatch(Enumerable.Repeat(prompt, replicas).ToList()), LogitRows.None);
    }

    public int[] Prompt { get; }
    public int Replicas { get; }
    public int SeqLen => Prompt.Length;
    public long Backwards { get; private set; }

    /// <summary>mlp_act of a layer for the prompt, [T · hidden] (replica 0).</summary>
    public float[] Activations(int layer)
    {
        var a = _pass.HostSite(NodeSite.MlpAct, layer);
        return a.AsSpan(0, SeqLen * _model.Config.HiddenDim).ToArray();
    }

    /// <summary>
    /// Row k of the result is ∂a_tgt[targets[k]] / ∂a_src, [T · hidden] (row t of the prompt, unit j at t·hidden + j),
    /// under <paramref name="rules"/>, with the MLPs of layers strictly between <paramref name="srcLayer"/> and
    /// <paramref name="tgtLayer"/> stopped when <paramref name="stopIntermediate"/>.
    /// </summary>
    /// <param name="srcLayer">The source neurons' layer, below <paramref name="tgtLayer"/>.</param>
    /// <param name="tgtLayer">The target neurons' layer.</param>
    /// <param name="targets">(row of the prompt, unit) of each target neuron in <paramref name="tgtLayer"/>.</param>
    /// <param name="rules">How the norms, the attention softmax and the SwiGLU gate are differentiated (exact, or a RelP rule).</param>
    /// <param name="chunk">Targets per backward (at most <see cref="Replicas"/>).</param>
    /// <param name="stopIntermediate">Whether the MLPs strictly between the two layers are detached, so only the direct (attention and residual) path counts.</param>
    public float[][] Compute(int srcLayer, int tgtLayer, IReadOnlyList<(int Row, int Unit)> targets, BackwardRules rules,
        int chunk = int.MaxValue, bool stopIntermediate = true)
    {
        if (srcLayer < 0 || srcLayer >= tgtLayer || tgtLayer >= _model.Config.Layers) throw new ArgumentOutOfRangeException(nameof(srcLayer), "need 0 <= src < tgt < layers");
        int per = Math.Clamp(chunk, 1, Replicas);
        int T = SeqLen, H = _model.Config.HiddenDim, n = T * H;
        var be = _model.Backend;
        var result = new float[targets.Count][];
        var seed = new float[Replicas * n];
        Func<int, bool>? stop = stopIntermediate ? l => l > srcLayer && l < tgtLayer : null;
        for (int start = 0; start < targets.Count; start += per)
        {
            int count = Math.Min(per, targets.Count - start);
            Array.Clear(seed);
            for (int i = 0; i < count; i++)
            {
                var (row, unit) = targets[start + i];
                if (row < 0 || row >= T || unit < 0 || unit >= H) throw new ArgumentOutOfRangeException(nameof(targets), $"target ({row}, {unit}) outside the prompt");
                seed[i * n + row * H + unit] = 1f;
            }
            using var seedT = be.Upload(seed, Replicas * T, H);
            using var grads = _model.BackwardFromSite(_pass, NodeSite.MlpAct, tgtLayer, seedT, rules, [NodeSite.MlpAct],
                lowestLayer: srcLayer, stopMlp: stop);
            Backwards++;
            var g = grads.Host(NodeSite.MlpAct, srcLayer);
            for (int i = 0; i < count; i++) result[start + i] = g.AsSpan(i * n, n).ToArray();
        }
        return result;
    }

    /// <summary>The token embeddings of the prompt, [T · dim].</summary>
    public float[] Embeddings()
    {
        var x = new float[_pass.Embedded.Length];
        _model.Backend.Download(_pass.Embedded, x);
        return x.AsSpan(0, SeqLen * _model.Config.Dim).ToArray();
    }

    /// <summary>
    /// Row k is ∂a_tgt[targets[k]] / ∂x_emb, [T · dim], with every MLP below <paramref name="tgtLayer"/> stopped when
    /// <paramref name="stopIntermediate"/> (the direct embedding → neuron map of docs/method.md §6.2 item 5).
    /// </summary>
    public float[][] ComputeEmbedding(int tgtLayer, IReadOnlyList<(int Row, int Unit)> targets, BackwardRules rules,
        int chunk = int.MaxValue, bool stopIntermediate = true)
    {
        int per = Math.Clamp(chunk, 1, Replicas);
        int T = SeqLen, H = _model.Config.HiddenDim, n = T * H, d = _model.Config.Dim;
        var be = _model.Backend;
        var result = new float[targets.Count][];
        var seed = new float[Replicas * n];
        var x = new float[Replicas * T * d];
        Func<int, bool>? stop = stopIntermediate ? l => l < tgtLayer : null;
        for (int start = 0; start < targets.Count; start += per)
        {
            int count = Math.Min(per, targets.Count - start);
            Array.Clear(seed);
            for (int i = 0; i < count; i++) seed[i * n + targets[start + i].Row * H + targets[start + i].Unit] = 1f;
            using var seedT = be.Upload(seed, Replicas * T, H);
            using var grads = _model.BackwardFromSite(_pass, NodeSite.MlpAct, tgtLayer, seedT, rules, [], lowestLayer: 0, stopMlp: stop);
            Backwards++;
            be.Download(grads.Embedding!, x);
            for (int i = 0; i < count; i++) result[start + i] = x.AsSpan(i * T * d, T * d).ToArray();
        }
        return result;
    }

    public void Dispose() => _pass.Dispose();
}
