using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// A Llama decoder on a backend: the forward and the hand-written backward, written once in terms of
/// <see cref="IBackend"/> ops. Exact gradients and RelP differ only in the <see cref="BackwardRules"/> passed in.
/// Each layer runs on the backend its <see cref="LayerPlacement"/> gives (one for the whole model unless it is split
/// over devices); callers put a layer's tensors on <see cref="LayerBackend"/> and read logits from <see cref="HeadBackend"/>.
/// </summary>
internal sealed class Llama : IDisposable
{
    readonly DeviceWeights _w;
    readonly LayerPlacement _placement;
    // RoPE tables per device, grown (never shrunk) to the longest batch seen. Forwards may run on two threads at once
    // (the attribution runs the patch forward beside the clean one on the CPU), so growth is locked and replaced
    // tables are kept until Dispose: a forward still rotating with the old ones must not see them freed.
    readonly Dictionary<IBackend, (Tensor Cos, Tensor Sin, int Positions)> _rope = new(ReferenceEqualityComparer.Instance);
    readonly Lock _ropeLock = new();
    readonly List<Tensor> _oldRopeTables = [];

    public Llama(LlamaWeights weights, IBackend backend) : this(weights, LayerPlacement.Single(backend, weights.Config.Layers)) { }

    /// <summary>The model with each layer's weights on the device <paramref name="placement"/> gives it.</summary>
    public Llama(LlamaWeights weights, LayerPlacement placement)
        : this(weights.Config, placement, DeviceWeights.Upload(weights, Checked(placement, weights.Config))) { }

    Llama(LlamaConfig config, LayerPlacement placement, DeviceWeights weights)
    {
        Config = config;
        _placement = placement;
        _w = weights;
    }

    static LayerPlacement Checked(LayerPlacement p, LlamaConfig c) =>
        p.LayerCount == c.Layers ? p : throw new ArgumentException($"the placement covers {p.LayerCount} layers, the model has {c.Layers}");

    /// <summary>A model whose weights are allocated on <paramref name="backend"/> but never set (see <see cref="DeviceWeights.AllocateUninitialized"/>).</summary>
    public static Llama WithUninitializedWeights(LlamaConfig config, IBackend backend) =>
        WithUninitializedWeights(config, LayerPlacement.Single(backend, config.Layers));

    /// <summary>As <see cref="WithUninitializedWeights(LlamaConfig, IBackend)"/>, each layer on its device.</summary>
    public static Llama WithUninitializedWeights(LlamaConfig config, LayerPlacement placement) =>
        new(config, Checked(placement, config), DeviceWeights.AllocateUninitialized(config, placement));

    public LlamaConfig Config { get; }
    /// <summary>The backend of the embedding and layer 0: the only one unless the model is split over devices.</summary>
    public IBackend Backend => _placement.First;
    /// <summary>The backend of the final norm, the classifier and the logits (the last layer's).</summary>
    public IBackend HeadBackend => _placement.Last;
    /// <summary>The backend layer <paramref name="layer"/>'s weights, states and gradients live on.</summary>
    public IBackend LayerBackend(int layer) => _placement.Of(layer);
    public LayerPlacement Placement => _placement;
    /// <summary>Where <see cref="ForwardLayer"/> expects layer <paramref name="layer"/>'s input: where the layer below left it (the embedding's device for layer 0).</summary>
    internal IBackend InputBackend(int layer) => layer == 0 ? Backend : LayerBackend(layer - 1);

    /// <summary>Runs the batch through the model, applying <paramref name="plan"/>'s edits at their sites.</summary>
    /// <param name="batch">The prompts' tokens, one row per token.</param>
    /// <param name="logitRows">Which rows get logits: all, each prompt's last token, or none.</param>
    /// <param name="plan">Edits applied in the forward (scale/offset or mean ablation at a site); null runs the plain model.</param>
    /// <param name="checkpoint">Activation checkpointing: keep only each layer's input r_l; a layer's state is recomputed
    /// from it when read (<see cref="ForwardPass.Layer"/>), as the backward does layer by layer.</param>
    public ForwardPass Forward(TokenBatch batch, LogitRows logitRows = LogitRows.Last, InterventionPlan? plan = null, bool checkpoint = false) =>
        Forward(batch, logitRows, plan, batch.Size, checkpoint);

    /// <param name="batch">The prompts' tokens, one row per token.</param>
    /// <param name="logitRows">Which rows get logits: all, each prompt's last token, or none.</param>
    /// <param name="plan">Edits applied in the forward; null runs the plain model.</param>
    /// <param name="logitPrompts">With <see cref="LogitRows.Last"/>, only the first this many prompts get logits (the
    /// clean half of a <see cref="PairedForward"/>).</param>
    /// <param name="checkpoint">Keep only each layer's input and recompute its state when read (activation checkpointing).</param>
    internal ForwardPass Forward(TokenBatch batch, LogitRows logitRows, InterventionPlan? plan, int logitPrompts, bool checkpoint = false)
    {
        var c = Config;
        CheckLength(batch);
        var embedded = Embed(batch, plan);
        var layers = new LayerState[c.Layers];
        // Checkpointed: each layer's input is kept and the rest of its state freed as soon as the next layer has its input.
        var inputs = checkpoint ? new Tensor[c.Layers] : null;
        Tensor x = embedded;
        for (int l = 0; l < c.Layers; l++)
        {
            if (inputs is null) { x = (layers[l] = ForwardLayer(l, x, batch, plan)).Output; continue; }
            inputs[l] = x;
            x = ForwardLayer(l, x, batch, plan).DisposeAllButOutput();
        }

        if (logitRows == LogitRows.None)
        {
            if (inputs is not null) x.Dispose();
            return new ForwardPass(this, batch, embedded, layers, null, null, null, logitRows, []) { LayerInputs = inputs, Plan = plan };
        }
        var (finalInput, rstd, logits, index) = Head(x, batch, logitRows, logitPrompts);
        if (inputs is not null) x.Dispose();   // r_L: the top layer's recomputation makes it again
        return new ForwardPass(this, batch, embedded, layers, finalInput, rstd, logits, logitRows, index) { LayerInputs = inputs, Plan = plan };
    }

    internal void CheckLength(TokenBatch batch)
    {
        if (batch.SeqLen > Config.MaxSeqLen) throw new ArgumentException($"prompt of {batch.SeqLen} tokens exceeds the model's context of {Config.MaxSeqLen}");
    }

    /// <summary>The token embeddings of <paramref name="batch"/> ([rows, dim]) with <paramref name="plan"/>'s edit there, if any.</summary>
    internal Tensor Embed(TokenBatch batch, InterventionPlan? plan)
    {
        var be = Backend;
        // Every tensor of the forward is overwritten in full by the op that produces it, so none is cleared first.
        var embedded = be.AllocateUninitialized(batch.Rows, Config.Dim);
        be.Embedding(batch.Tokens, _w.TokenEmbedding, embedded);
        if (plan is not null && plan.TryGetEmbedding(out var embScale, out var embOffset)) be.Intervene(embedded, embScale, embOffset);
        return embedded;
    }

    /// <summary>
    /// Final norm and logits of <paramref name="x"/> (the last layer's output) at the rows <paramref name="logitRows"/> names.
    /// <paramref name="logits"/> false keeps only what the backward reads (the norm's input and statistic): a backward
    /// seeded sparsely never reads the logits (issue 20: at the 1B shape their product is a read of the whole classifier).
    /// </summary>
    internal (Tensor FinalInput, Tensor Rstd, Tensor? Logits, int[] Index) Head(Tensor x, TokenBatch batch, LogitRows logitRows, int logitPrompts, bool logits = true)
    {
        var c = Config; var be = HeadBackend;
        int[] index = logitRows == LogitRows.All ? Enumerable.Range(0, batch.Rows).ToArray() : batch.LastRows()[..logitPrompts];
        var finalInput = be.AllocateUninitialized(index.Length, c.Dim);
        be.GatherRows(x, index, finalInput);
        var normed = be.AllocateUninitialized(index.Length, c.Dim);
        var rstd = be.AllocateUninitialized(index.Length);
        be.RmsNorm(finalInput, _w.FinalNorm, c.NormEps, normed, rstd);
        Tensor? product = null;
        if (logits)
        {
            product = be.AllocateUninitialized(index.Length, c.VocabSize);
            be.MatMul(normed, _w.Classifier, product, false);
        }
        normed.Dispose();
        return (finalInput, rstd, product, index);
    }

    /// <summary>
    /// One decoder block over <paramref name="x"/> (r_l, [rows, dim]) with <paramref name="plan"/>'s edits. The sweep
    /// (<see cref="MeanAblationSweep"/>) starts it above a shared prefix and may compute some products itself through
    /// <paramref name="shortcuts"/> (each hook returns true when it filled its output; what it skipped stays unwritten).
    /// <paramref name="x"/> is on <see cref="InputBackend"/>(l), where the layer below left it.
    /// </summary>
    internal LayerState ForwardLayer(int l, Tensor x, TokenBatch batch, InterventionPlan? plan, ILayerShortcuts? shortcuts = null)
    {
        var c = Config; var be = LayerBackend(l);
        int rows = batch.Rows, T = batch.SeqLen, d = c.Dim;
        var (cosTable, sinTable) = EnsureRope(T, be);
        var shape = new AttentionShape(batch.Size, T, c.Heads, c.KvHeads, c.HeadDim);
        var w = _w.Layers[l];
        // The first layer of a device takes the residual stream from the previous device (a copy this state owns).
        bool crossed = !ReferenceEquals(InputBackend(l), be);
        if (crossed) x = LayerPlacement.Transfer(x, InputBackend(l), be);
        be.PushRange(RangeName(l, backward: false));
        var s = new LayerState
        {
            Input = x, OwnsInput = crossed,
            AttnNormed = be.AllocateUninitialized(rows, d), AttnRstd = be.AllocateUninitialized(rows),
            Q = be.AllocateUninitialized(rows, d), K = be.AllocateUninitialized(rows, c.KvDim), V = be.AllocateUninitialized(rows, c.KvDim),
            Lse = be.AllocateUninitialized(batch.Size, c.Heads, T), Z = be.AllocateUninitialized(rows, d), AttnOut = be.AllocateUninitialized(rows, d),
            Mid = be.AllocateUninitialized(rows, d), FfnNormed = be.AllocateUninitialized(rows, d), FfnRstd = be.AllocateUninitialized(rows),
            Gate = be.AllocateUninitialized(rows, c.HiddenDim), Up = be.AllocateUninitialized(rows, c.HiddenDim), Act = be.AllocateUninitialized(rows, c.HiddenDim),
            MlpOut = be.AllocateUninitialized(rows, d), Output = be.AllocateUninitialized(rows, d),
        };
        be.RmsNorm(x, w.AttnNorm, c.NormEps, s.AttnNormed, s.AttnRstd);
        if (shortcuts?.Attention(s) != true)
        {
            bool interleaved = c.RopeLayout == RopeLayout.Interleaved;
            // A sweep's shortcut writes q, k, v before RoPE (clean rows copied, changed rows computed); RoPE then runs on all rows.
            if (shortcuts?.QkvProjection(s) == true)
            {
                be.Rope(s.Q, c.Heads, T, cosTable, sinTable, interleaved, inverse: false);
                be.Rope(s.K, c.KvHeads, T, cosTable, sinTable, interleaved, inverse: false);
            }
            else be.QkvProjection(s.AttnNormed, [w.Wq, w.Wk, w.Wv], s.Q, s.K, s.V, c.Heads, c.KvHeads, T, cosTable, sinTable, interleaved);
            be.StreamingAttention(s.Q, s.K, s.V, shape, s.Z, s.Lse);
            // Only the backward reads q, k, v again (a sweep's shortcuts read its own layer states: they stay as made).
            if (shortcuts is null) { s.Q = be.StoreForBackward(s.Q); s.K = be.StoreForBackward(s.K); s.V = be.StoreForBackward(s.V); }
        }
        if (EditsAt(plan, NodeSite.AttnZ, l))
        {
            s.RawZ = be.AllocateUninitialized(rows, d);
            be.Copy(s.Z, s.RawZ);
        }
        Edit(plan, NodeSite.AttnZ, l, s.Z);
        if (shortcuts?.OutputProjection(s) != true) be.MatMul(s.Z, w.Wo, s.AttnOut, false);
        Edit(plan, NodeSite.Attn, l, s.AttnOut);
        be.AddRmsNorm(x, s.AttnOut, s.Mid, w.FfnNorm, c.NormEps, s.FfnNormed, s.FfnRstd);
        if (shortcuts?.Mlp(s) != true)
        {
            if (shortcuts is null) (s.Gate, s.Up) = be.GateUpSwiGluForBackward(s.FfnNormed, w.W1, w.W3, s.Gate, s.Up, s.Act);
            else
            {
                // A sweep's shortcuts read gate and up as made (fp32): not the stored pair.
                be.MatMulShared(s.FfnNormed, [w.W1, w.W3], [s.Gate, s.Up]);
                be.SwiGlu(s.Gate, s.Up, s.Act);
            }
            Edit(plan, NodeSite.MlpAct, l, s.Act);
            if (shortcuts?.DownProjection(s) != true) be.MatMul(s.Act, w.W2, s.MlpOut, false);
        }
        Edit(plan, NodeSite.MlpOut, l, s.MlpOut);
        be.AddInto(s.Mid, s.MlpOut, s.Output);
        Edit(plan, NodeSite.Resid, l, s.Output);
        be.PopRange();
        return s;
    }

    // Profiling range names ("layer 12 forward"), made once per layer rather than per call.
    static readonly string[][] RangeNames = [new string[256], new string[256]];
    static string RangeName(int layer, bool backward)
    {
        var names = RangeNames[backward ? 1 : 0];
        if (layer >= names.Length) return $"layer {layer} {(backward ? "backward" : "forward")}";
        return names[layer] ??= $"layer {layer} {(backward ? "backward" : "forward")}";
    }

    /// <summary>The weights as the sweep's own MLP path reads them.</summary>
    internal DeviceWeights Weights => _w;

    /// <summary>Last-position logits of the block output <paramref name="x"/> (the forward's head, for a forward run layer by layer).</summary>
    internal float[] LastLogits(Tensor x, TokenBatch batch)
    {
        var c = Config; var be = HeadBackend;
        int[] index = batch.LastRows();
        using var finalInput = be.AllocateUninitialized(index.Length, c.Dim);
        be.GatherRows(x, index, finalInput);
        using var normed = be.AllocateUninitialized(index.Length, c.Dim);
        using var rstd = be.AllocateUninitialized(index.Length);
        be.RmsNorm(finalInput, _w.FinalNorm, c.NormEps, normed, rstd);
        using var logits = be.AllocateUninitialized(index.Length, c.VocabSize);
        be.MatMul(normed, _w.Classifier, logits, false);
        var h = new float[logits.Length];
        be.Download(logits, h);
        return h;
    }

    /// <summary>
    /// Backpropagates <paramref name="logitGrad"/> ([logit rows, vocab], ∂metric/∂logits) through the forward under
    /// <paramref name="rules"/>, returning the gradient at every requested site of every layer. No weight gradients.
    /// </summary>
    /// <param name="pass">The forward to differentiate; it must have computed logits.</param>
    /// <param name="logitGrad">∂metric/∂logits, [logit rows, vocab].</param>
    /// <param name="rules">How the norms, the attention softmax and the SwiGLU gate are differentiated (exact, or a RelP rule).</param>
    /// <param name="sites">The sites whose gradients are returned.</param>
    /// <param name="plan">The forward's edits: a gradient passes an edited site times its scale; mean-ablation edits are refused.</param>
    /// <param name="lowestLayer">Stop after this layer (gradients below it are not needed, e.g. per-site IG).</param>
    /// <param name="stopMlp">Layers whose MLP output is detached (forward value kept, no gradient into the MLP).</param>
    public SiteGradients Backward(ForwardPass pass, Tensor logitGrad, BackwardRules rules, IReadOnlyCollection<NodeSite> sites,
        InterventionPlan? plan = null, int lowestLayer = 0, Func<int, bool>? stopMlp = null) =>
        Backward(pass, LogitGradient.FromDense(logitGrad), rules, sites, plan, lowestLayer, stopMlp);

    /// <summary>As <see cref="Backward(ForwardPass, Tensor, BackwardRules, IReadOnlyCollection{NodeSite}, InterventionPlan?, int, Func{int, bool}?)"/>, from a dense or sparse logit gradient.</summary>
    public SiteGradients Backward(ForwardPass pass, LogitGradient logitGrad, BackwardRules rules, IReadOnlyCollection<NodeSite> sites,
        InterventionPlan? plan = null, int lowestLayer = 0, Func<int, bool>? stopMlp = null)
    {
        var dR = BackwardHead(pass, logitGrad, rules, plan);
        return BackwardLayers(pass, dR, Config.Layers - 1, null, rules, sites, plan, lowestLayer, stopMlp, sink: null)!;
    }

    /// <summary>
    /// The backward that hands each requested site gradient to <paramref name="sink"/> where it is produced, instead of
    /// copying it into a <see cref="SiteGradients"/>: the tensor is the backward's own working buffer, valid only during
    /// the call (read it, do not keep or change it). Sites are visited top layer first, each layer resid, mlp_out,
    /// mlp_act, attn, attn_z. Used by attribution to add the node scores without a copy of any gradient.
    /// With <paramref name="rows"/>, where it applies (<see cref="BackwardRows.AppliesTo"/>), only those rows are
    /// computed (their gradients bit for bit those of the full backward) and every other row reads zero at every site.
    /// </summary>
    public void Backward(ForwardPass pass, LogitGradient logitGrad, BackwardRules rules, IReadOnlyCollection<NodeSite> sites, SiteGradientSink sink,
        InterventionPlan? plan = null, int lowestLayer = 0, BackwardRows? rows = null)
    {
        if (rows is not null && rows.TotalRows != pass.Batch.Rows) throw new ArgumentException($"backward rows of a {rows.TotalRows}-row batch for a {pass.Batch.Rows}-row forward");
        var dR = BackwardHead(pass, logitGrad, rules, plan);
        BackwardLayers(pass, dR, Config.Layers - 1, null, rules, sites, plan, lowestLayer, null, sink, rows is not null && rows.AppliesTo(this) ? rows : null);
    }

    /// <summary>Classifier and final norm, then into the residual rows the logits were read at: ∂m/∂r_L (owned by the caller).</summary>
    Tensor BackwardHead(ForwardPass pass, LogitGradient logitGrad, BackwardRules rules, InterventionPlan? plan)
    {
        if (pass.FinalInput is null || pass.FinalRstd is null)
            throw new InvalidOperationException("backward needs a forward that computed its head (logit rows)");
        RefuseForwardOnly(plan);
        var c = Config; var be = HeadBackend; var batch = pass.Batch;
        int rows = batch.Rows, d = c.Dim, n = pass.LogitRowIndex.Length;
        if (logitGrad.Rows != n) throw new ArgumentException($"logit gradient of {logitGrad.Rows} rows for a forward of {n} logit rows");

        using var dNormed = be.Allocate(n, d);
        if (logitGrad.Dense is { } dense) be.MatMulInputGrad(dense, _w.Classifier, dNormed, false);
        else be.SparseMatMulInputGrad(logitGrad.Tokens, logitGrad.Weights, logitGrad.PerRow, _w.Classifier, dNormed);
        using var dFinal = be.Allocate(n, d);
        be.RmsNormBackward(dNormed, pass.FinalInput, _w.FinalNorm, pass.FinalRstd, rules.Norm, dFinal);
        var dR = be.Allocate(rows, d);
        be.ScatterAddRows(dFinal, pass.LogitRowIndex, dR);
        return dR;
    }

    /// <summary>
    /// Backpropagates an arbitrary gradient <paramref name="siteGrad"/> ([rows, site width]) placed at <paramref name="site"/>
    /// of <paramref name="layer"/> (nothing flows from above that point), down to <paramref name="lowestLayer"/>, under
    /// <paramref name="rules"/>. Same per-layer code as <see cref="Backward(ForwardPass, Tensor, BackwardRules, IReadOnlyCollection{NodeSite}, InterventionPlan?, int, Func{int, bool}?)"/>. Rows of the batch are independent, so
    /// replicating a prompt and seeding each replica differently gives many vector-Jacobian products in one pass.
    /// </summary>
    /// <param name="pass">The forward to differentiate (logits not needed).</param>
    /// <param name="site">The site the seed gradient is placed at.</param>
    /// <param name="layer">The seed's layer, in [0, layers).</param>
    /// <param name="siteGrad">The seed gradient, [rows, site width].</param>
    /// <param name="rules">How the norms, the attention softmax and the SwiGLU gate are differentiated (exact, or a RelP rule).</param>
    /// <param name="sites">The sites whose gradients are returned.</param>
    /// <param name="lowestLayer">Stop after this layer, at most <paramref name="layer"/>.</param>
    /// <param name="plan">The forward's edits: a gradient passes an edited site times its scale; mean-ablation edits are refused.</param>
    /// <param name="stopMlp">Layers whose MLP output is detached (forward value kept); a seed inside such an MLP still flows down.</param>
    public SiteGradients BackwardFromSite(ForwardPass pass, NodeSite site, int layer, Tensor siteGrad, BackwardRules rules,
        IReadOnlyCollection<NodeSite> sites, int lowestLayer = 0, InterventionPlan? plan = null, Func<int, bool>? stopMlp = null)
    {
        var c = Config;
        if (layer < 0 || layer >= c.Layers) throw new ArgumentOutOfRangeException(nameof(layer));
        if (lowestLayer > layer) throw new ArgumentOutOfRangeException(nameof(lowestLayer), "lowest layer above the seed layer");
        if (siteGrad.Length != (long)pass.Batch.Rows * site.Width(c)) throw new ArgumentException("seed gradient is not [rows, site width]");
        RefuseForwardOnly(plan);
        var dR = LayerBackend(layer).Allocate(pass.Batch.Rows, c.Dim);
        LayerBackend(layer).Fill(dR, 0f);
        return BackwardLayers(pass, dR, layer, (site, siteGrad), rules, sites, plan, lowestLayer, stopMlp, sink: null)!;
    }

    /// <summary>
    /// The layer loop of every backward: dR holds ∂m/∂r_{top+1} (owned; becomes the embedding gradient or is disposed).
    /// A seed adds a gradient at one site of the top layer; stages of the top layer above the seed's site are skipped.
    /// With a <paramref name="sink"/> the site gradients go to it (no copies) and the result is null.
    /// With <paramref name="computed"/> (no seed; CPU tensors) only those rows enter the input-gradient products: the other
    /// rows of dR are zeroed first and every other gradient's stay zero (products write the computed rows only, and the
    /// norms' backward adds nothing where its input gradient is zero).
    /// </summary>
    SiteGradients? BackwardLayers(ForwardPass pass, Tensor dR, int topLayer, (NodeSite Site, Tensor Grad)? seed, BackwardRules rules,
        IReadOnlyCollection<NodeSite> sites, InterventionPlan? plan, int lowestLayer, Func<int, bool>? stopMlp, SiteGradientSink? sink,
        BackwardRows? computed = null)
    {
        var c = Config; var batch = pass.Batch;
        int rows = batch.Rows, d = c.Dim;
        var shape = new AttentionShape(batch.Size, batch.SeqLen, c.Heads, c.KvHeads, c.HeadDim);
        var grads = sink is null ? new SiteGradients(LayerBackend, c.Layers) : null;

        // The scratch lives on the device of the layer being run: made again (and dR moved) where the layers change device.
        if (computed is not null && seed is not null) throw new ArgumentException("a seeded backward computes every row");
        using var scratch = new BackwardScratch(rows, c, computed?.Computed.Length);
        computed?.ClearOthers(dR);
        // At the top layer the residual gradient is the head's, non-zero at the logit rows only (no seed there).
        var topRows = seed is null ? computed?.TopLayer(pass.LogitRowIndex) : null;
        IBackend be = null!;
        Tensor cosTable = null!, sinTable = null!, dZ = null!, dUpstream = null!, dAct = null!, dGate = null!, dUp = null!, dNorm = null!,
            dQ = null!, dK = null!, dV = null!;
        for (int l = topLayer; l >= lowestLayer; l--)
        {
            if (!ReferenceEquals(be, LayerBackend(l)))
            {
                // dR starts on the top layer's device (the head's is the last layer's); below, it follows the layers.
                if (be is not null) { var moved = LayerPlacement.Transfer(dR, be, LayerBackend(l)); dR.Dispose(); dR = moved; }
                be = LayerBackend(l);
                (cosTable, sinTable) = EnsureRope(batch.SeqLen, be);   // the forward made them; this takes a snapshot
                (dZ, dUpstream, dAct, dGate, dUp, dNorm, dQ, dK, dV) = scratch.On(be);
            }
            var s = pass.Layer(l);   // recomputed here from its input when the forward was checkpointed
            var w = _w.Layers[l];
            be.PushRange(RangeName(l, backward: true));
            var seedHere = l == topLayer ? seed?.Site : null;
            bool stopped = stopMlp?.Invoke(l) == true;
            // dR: ∂m/∂r_{l+1}.
            if (seedHere == NodeSite.Resid) be.Add(dR, seed!.Value.Grad);
            Record(NodeSite.Resid, l, dR);
            ScaleByEdit(NodeSite.Resid, l, dR);
            // MLP branch: r_{l+1} = r' + mlp_out. Skipped in the top layer when the seed sits in the attention branch.
            if (seedHere != NodeSite.Attn && seedHere != NodeSite.AttnZ)
            {
                Record(NodeSite.MlpOut, l, dR);
                var dMlpOut = ThroughEdit(NodeSite.MlpOut, l, dR, dUpstream);
                if (seedHere == NodeSite.MlpOut) { be.Copy(seed!.Value.Grad, dUpstream); dMlpOut = dUpstream; stopped = false; }
                if (stopped) be.Fill(dAct, 0f);
                else InputGradient([dMlpOut], [w.W2], dAct, l == topLayer ? topRows : computed);
                if (seedHere == NodeSite.MlpAct) { be.Add(dAct, seed!.Value.Grad); stopped = false; }
                Record(NodeSite.MlpAct, l, dAct);
                if (!stopped)
                {
                    ScaleByEdit(NodeSite.MlpAct, l, dAct);
                    be.SwiGluBackward(dAct, s.Gate, s.Up, rules.Gate, dGate, dUp);
                    InputGradient([dGate, dUp], [w.W1, w.W3], dNorm, l == topLayer ? topRows : computed);
                    be.RmsNormBackward(dNorm, s.Mid, w.FfnNorm, s.FfnRstd, rules.Norm, dR);
                }
            }
            // dR: ∂m/∂r'. Attention branch: r' = r_l + attn_out.
            Record(NodeSite.Attn, l, dR);
            var dAttnOut = ThroughEdit(NodeSite.Attn, l, dR, dUpstream);
            if (seedHere == NodeSite.Attn) { be.Copy(seed!.Value.Grad, dUpstream); dAttnOut = dUpstream; }
            InputGradient([dAttnOut], [w.Wo], dZ, l == topLayer ? topRows : computed);
            if (seedHere == NodeSite.AttnZ) be.Add(dZ, seed!.Value.Grad);
            Record(NodeSite.AttnZ, l, dZ);
            ScaleByEdit(NodeSite.AttnZ, l, dZ);
            be.StreamingAttentionBackward(dZ, s.Q, s.K, s.V, s.RawZ ?? s.Z, s.Lse, shape, rules.Attention, dQ, dK, dV);
            bool interleaved = c.RopeLayout == RopeLayout.Interleaved;
            be.Rope(dQ, c.Heads, batch.SeqLen, cosTable, sinTable, interleaved, inverse: true);
            be.Rope(dK, c.KvHeads, batch.SeqLen, cosTable, sinTable, interleaved, inverse: true);
            InputGradient([dQ, dK, dV], [w.Wq, w.Wk, w.Wv], dNorm, computed);
            be.RmsNormBackward(dNorm, s.Input, w.AttnNorm, s.AttnRstd, rules.Norm, dR);
            be.PopRange();
            // dR: ∂m/∂r_l, the previous block's (edited) output.
        }
        if (lowestLayer == 0 && grads is not null) grads.Embedding = dR; else dR.Dispose();
        return grads;

        // dx = Σ dys[i]·ws[i]: over every row, or over the computed rows in compact scratch (a slot per operand of a
        // width, the result in the next slot of its width).
        void InputGradient(ReadOnlySpan<Tensor> dys, ReadOnlySpan<Tensor> ws, Tensor dx, BackwardRows? rowsHere)
        {
            if (rowsHere is null)
            {
                if (dys.Length == 1) be.MatMulInputGrad(dys[0], ws[0], dx, false);
                else be.MatMulInputGradSum(dys, ws, dx);
                return;
            }
            int n = rowsHere.Computed.Length;
            var compactDys = new Tensor[dys.Length];
            for (int i = 0; i < dys.Length; i++) compactDys[i] = scratch.Compact(n, dys[i].Columns, SlotsBefore(dys, i, dys[i].Columns));
            var compactDx = scratch.Compact(n, dx.Columns, SlotsBefore(dys, dys.Length, dx.Columns));
            rowsHere.InputGradient(be, dys, ws, dx, compactDys, compactDx);
        }

        static int SlotsBefore(ReadOnlySpan<Tensor> dys, int end, int width)
        {
            int n = 0;
            for (int i = 0; i < end; i++) if (dys[i].Columns == width) n++;
            return n;
        }

        void Record(NodeSite site, int layer, Tensor g)
        {
            if (!sites.Contains(site)) return;
            if (sink is not null) { sink(site, layer, g); return; }
            var copy = be.AllocateUninitialized(g.Shape);
            be.Copy(g, copy);
            grads!.Set(site, layer, copy);
        }

        // The gradient upstream of an edited site is the gradient at its edited value times Scale; dR itself must stay
        // unscaled for the residual path, so the scaled copy goes to a scratch tensor.
        Tensor ThroughEdit(NodeSite site, int layer, Tensor g, Tensor scratch)
        {
            if (plan is null || !plan.TryGet(site, layer, out var scale, out _)) return g;
            be.Copy(g, scratch);
            be.Multiply(scratch, scale);
            return scratch;
        }

        void ScaleByEdit(NodeSite site, int layer, Tensor g)
        {
            if (plan is not null && plan.TryGet(site, layer, out var scale, out _)) be.Multiply(g, scale);
        }
    }

    // A mean ablation replaces values by constants the backward does not know about (it would need the mask to zero
    // the ablated entries' gradients); failing loudly beats gradients that silently ignore the edit.
    static void RefuseForwardOnly(InterventionPlan? plan)
    {
        if (plan is not null && plan.HasMeanAblations)
            throw new NotSupportedException("the intervention plan has mean-ablation edits (SetMeanAblation), which are forward-only; " +
                "express the ablation as scale/offset edits (InterventionPlan.Set) to take gradients through it");
    }

    static bool EditsAt(InterventionPlan? plan, NodeSite site, int layer) =>
        plan is not null && (plan.TryGet(site, layer, out _, out _) || plan.TryGetMeanAblation(site, layer, out _) ||
                             plan.TryGetTransform(site, layer, out _));

    void Edit(InterventionPlan? plan, NodeSite site, int layer, Tensor value)
    {
        if (plan is not null && plan.TryGet(site, layer, out var scale, out var offset)) LayerBackend(layer).Intervene(value, scale, offset);
        if (plan is not null && plan.TryGetMeanAblation(site, layer, out var a)) LayerBackend(layer).MeanAblate(value, a.Means, a.KeepBits, a.KeepRow, a.MeanRow);
        if (plan is not null && plan.TryGetTransform(site, layer, out var transform)) transform(value);
    }

    /// <summary>Tables on <paramref name="be"/> covering at least <paramref name="positions"/> positions (rows beyond a batch's length are unused).</summary>
    (Tensor Cos, Tensor Sin) EnsureRope(int positions, IBackend be)
    {
        lock (_ropeLock)
        {
            if (_rope.TryGetValue(be, out var t) && positions <= t.Positions) return (t.Cos, t.Sin);
            int n = Math.Max(positions, Math.Min(Config.MaxSeqLen, 256));
            var (cos, sin) = RopeTables.Build(Config, n);
            if (t.Cos is not null) { _oldRopeTables.Add(t.Cos); _oldRopeTables.Add(t.Sin); }
            t = (be.Upload(cos, n, Config.HeadDim / 2), be.Upload(sin, n, Config.HeadDim / 2), n);
            _rope[be] = t;
            return (t.Cos, t.Sin);
        }
    }

    public void Dispose()
    {
        _w.Dispose();
        foreach (var t in _rope.Values) { t.Cos.Dispose(); t.Sin.Dispose(); }
        foreach (var t in _oldRopeTables) t.Dispose();
    }
}

/// <summary>Receives one site gradient of a backward where it is produced (see <see cref="Llama.Backward(ForwardPass, LogitGradient, BackwardRules, IReadOnlyCollection{NodeSite}, SiteGradientSink, InterventionPlan?, int, BackwardRows?)"/>).</summary>
internal delegate void SiteGradientSink(NodeSite site, int layer, Tensor gradient);
