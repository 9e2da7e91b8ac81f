namespace NeuronTrace.Runtime;

/// <summary>
/// The op set the Llama forward and backward are written in. Every op has a managed CPU implementation
/// (<see cref="Cpu.CpuBackend"/>, the reference) and a CUDA one. Tensors are 2-D <c>[rows, columns]</c> unless stated;
/// "accumulate" ops add into their output, all others overwrite it.
/// </summary>
internal interface IBackend : IDisposable
{
    string Name { get; }

    /// <summary>
    /// Whether ops may be called from several threads at once on distinct tensors (the CPU backend: its ops share no
    /// mutable state). Callers use it to overlap independent work, such as two forwards; a GPU backend runs one stream
    /// from one thread and says false.
    /// </summary>
    bool SupportsConcurrentCalls => false;

    /// <summary>
    /// Opens a named profiling range around the ops that follow, until <see cref="PopRange"/> (NVTX on the GPU, so
    /// Nsight shows "layer 12 backward" over that layer's op ranges). Ranges nest. No-ops by default (the CPU backend).
    /// </summary>
    void PushRange(string name) { }
    void PopRange() { }

    /// <summary>A zero-filled tensor.</summary>
    Tensor Allocate(params int[] shape);
    /// <summary>
    /// A tensor whose contents are unspecified, for the output of an op that overwrites all of it: clearing memory that
    /// is about to be overwritten cost a forward of a small model as much as its arithmetic. Defaults to
    /// <see cref="Allocate"/>.
    /// </summary>
    Tensor AllocateUninitialized(params int[] shape) => Allocate(shape);
    Tensor Upload(ReadOnlySpan<float> data, params int[] shape);
    /// <summary>
    /// A tensor of values that never change while it lives (the model's weights): the CPU backend wraps
    /// <paramref name="data"/> without copying (so the caller must not change it), a GPU backend uploads it once and
    /// may keep derived copies (bf16). Defaults to <see cref="Upload"/>.
    /// </summary>
    Tensor UploadConstant(float[] data, params int[] shape) => Upload(data, shape);

    /// <summary>16-bit weights as a constant: widened to fp32 on upload unless the backend keeps them 16-bit (the CPU does).</summary>
    Tensor UploadConstant(HalfWeights data, params int[] shape) => UploadConstant(data.ToFloats(), shape);
    /// <summary>
    /// A constant tensor (as <see cref="UploadConstant(float[], int[])"/>) whose values are never set: weights for a run whose values do
    /// not matter, such as the launch ledger of <c>bench gpu-plan</c>. Defaults to <see cref="AllocateUninitialized"/>.
    /// </summary>
    Tensor AllocateConstant(params int[] shape) => AllocateUninitialized(shape);
    /// <summary>
    /// What a forward keeps for its backward in place of <paramref name="t"/>, which the call takes over (the caller
    /// keeps only the result): <paramref name="t"/> itself by default (the CPU stores fp32). A backend may return a
    /// narrower copy holding what its backward ops read and free <paramref name="t"/>: the CUDA backend under bf16
    /// products a bf16 tensor, which only attention's and SwiGLU's backward (and the bf16 attention) take.
    /// </summary>
    Tensor StoreForBackward(Tensor t) => t;
    void Download(Tensor source, Span<float> destination);
    /// <summary>
    /// Hands <paramref name="source"/>'s values to <paramref name="read"/> on the host, valid only during the call, so a
    /// large result is read without a host array of its own. A GPU backend downloads into page-locked memory it keeps:
    /// one asynchronous copy and one wait, at the copy engine's bandwidth (a pageable download gets a fraction of it).
    /// The default downloads into a new array.
    /// </summary>
    void ReadOnHost(Tensor source, HostValuesReader read)
    {
        var host = new float[source.Length];
        Download(source, host);
        read(host);
    }
    /// <summary>
    /// Queues a copy of rows [<paramref name="firstRow"/>, + <paramref name="rows"/>) of <paramref name="source"/> to the
    /// host and returns at once; the compute goes on meanwhile (a GPU backend copies into page-locked memory on a second
    /// stream, after the work issued so far). The values are read with <see cref="PendingHostRead.Read"/>; those rows
    /// must stay unchanged until then. The default reads them then (<see cref="ReadOnHost"/>, sliced).
    /// </summary>
    PendingHostRead StartReadOnHost(Tensor source, int firstRow, int rows)
    {
        OpContracts.RowRange(source, firstRow, rows, "StartReadOnHost");
        return new ReadLater(this, source, checked((int)((long)firstRow * source.Columns)), checked(rows * source.Columns));
    }

    sealed class ReadLater(IBackend backend, Tensor source, int start, int length) : PendingHostRead
    {
        public override void Read(HostValuesReader read) => backend.ReadOnHost(source, v => read(v.Slice(start, length)));
    }

    /// <summary>
    /// The <paramref name="k"/> nodes of <paramref name="block"/> of largest |mean|, mean = sum · scales[position] (rounded
    /// once, as <see cref="GatherScaledRows"/>), in NodeRanking's order: larger |mean| first, NaN last, ties by the lower
    /// flat index; fewer when the block has fewer nodes. Only the k results reach the host. The default reads the slab
    /// on the host (<see cref="ReadOnHost"/>) and selects there (<see cref="Cpu.TopKOps"/>).
    /// </summary>
    ScoredNode[] TopKByMagnitude(Tensor sums, TopKBlock block, ReadOnlySpan<float> scales, int k)
    {
        OpContracts.TopKByMagnitude(sums, block, scales, k);
        ScoredNode[] top = [];
        var s = scales.ToArray();
        ReadOnHost(sums, host => top = Cpu.TopKOps.Select(host, sums.Columns, block, s, k));
        return top;
    }

    void Fill(Tensor tensor, float value);
    void Copy(Tensor source, Tensor destination);

    /// <summary>y[r, n] (+)= Σ_k x[r, k] w[n, k]  (x W^T, the nn.Linear product).</summary>
    void MatMul(Tensor x, Tensor w, Tensor y, bool accumulate);
    /// <summary>dx[r, k] (+)= Σ_n dy[r, n] w[n, k]  (the input gradient of <see cref="MatMul"/>).</summary>
    void MatMulInputGrad(Tensor dy, Tensor w, Tensor dx, bool accumulate);

    /// <summary>
    /// outputs[i] = x · weights[i]ᵀ for each i (<see cref="MatMul"/>, overwriting): products sharing an input (Q, K, V;
    /// gate, up), which a backend may run as one product against weights <see cref="StackConstants"/> made adjacent.
    /// </summary>
    void MatMulShared(Tensor x, ReadOnlySpan<Tensor> weights, ReadOnlySpan<Tensor> outputs)
    {
        if (weights.Length != outputs.Length) throw new ArgumentException($"MatMulShared: {weights.Length} weights for {outputs.Length} outputs");
        for (int i = 0; i < weights.Length; i++) MatMul(x, weights[i], outputs[i], false);
    }

    /// <summary>
    /// The attention's projections: q, k, v = x · Wqᵀ, x · Wkᵀ, x · Wvᵀ (<see cref="MatMulShared"/>), then q and k rotated
    /// (<see cref="Rope"/>, forward; <paramref name="heads"/> and <paramref name="kvHeads"/> heads), which a backend may
    /// fuse. Defaults to those three calls, which it must equal bit for bit.
    /// </summary>
    void QkvProjection(Tensor x, ReadOnlySpan<Tensor> weights, Tensor q, Tensor k, Tensor v, int heads, int kvHeads, int seqLen,
        Tensor cos, Tensor sin, bool interleaved)
    {
        MatMulShared(x, weights, [q, k, v]);
        Rope(q, heads, seqLen, cos, sin, interleaved, inverse: false);
        Rope(k, kvHeads, seqLen, cos, sin, interleaved, inverse: false);
    }

    /// <summary>
    /// The forward's gate and up for a backward: gate, up = x · W1ᵀ, x · W3ᵀ (<see cref="MatMulShared"/>), act =
    /// <see cref="SwiGlu"/>(gate, up), then gate and up as <see cref="StoreForBackward"/> keeps them, returned (the
    /// tensors passed in are consumed: do not use them after). A backend may run the two products as one and read
    /// gate and up from its output in place. Defaults to those calls, which it must equal bit for bit.
    /// </summary>
    (Tensor Gate, Tensor Up) GateUpSwiGluForBackward(Tensor x, Tensor w1, Tensor w3, Tensor gate, Tensor up, Tensor act)
    {
        MatMulShared(x, [w1, w3], [gate, up]);
        SwiGlu(gate, up, act);
        return (StoreForBackward(gate), StoreForBackward(up));
    }

    /// <summary>dx = Σ_i dys[i] · weights[i] (<see cref="MatMulInputGrad"/> per pair, the first overwriting dx): the input gradient of <see cref="MatMulShared"/>.</summary>
    void MatMulInputGradSum(ReadOnlySpan<Tensor> dys, ReadOnlySpan<Tensor> weights, Tensor dx)
    {
        if (weights.Length != dys.Length || dys.Length == 0) throw new ArgumentException($"MatMulInputGradSum: {weights.Length} weights for {dys.Length} gradients");
        for (int i = 0; i < weights.Length; i++) MatMulInputGrad(dys[i], weights[i], dx, i > 0);
    }

    /// <summary>
    /// The residual add fused with the norm after it: sum = x + delta, then <see cref="RmsNorm"/>(sum) into y and
    /// rstd. Defaults to Copy, Add and RmsNorm, which it must equal bit for bit.
    /// </summary>
    void AddRmsNorm(Tensor x, Tensor delta, Tensor sum, Tensor weight, float eps, Tensor y, Tensor rstd)
    {
        Copy(x, sum);
        Add(sum, delta);
        RmsNorm(sum, weight, eps, y, rstd);
    }

    /// <summary>
    /// Constants that are row blocks of one matrix ([Wq; Wk; Wv]): tensors of the same values, which a backend may move
    /// next to each other (disposing the inputs) so <see cref="MatMulShared"/> and <see cref="MatMulInputGradSum"/> run
    /// them as one product. Defaults to the blocks themselves.
    /// </summary>
    Tensor[] StackConstants(Tensor[] blocks) => blocks;

    /// <summary>output[r, :] = table[tokens[r], :].</summary>
    void Embedding(ReadOnlySpan<int> tokens, Tensor table, Tensor output);

    /// <summary>y = w ⊙ x · rstd, rstd[r] = 1/sqrt(mean(x[r]²) + eps). rstd has shape [rows].</summary>
    void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y, Tensor rstd);
    /// <summary>dx += backward of <see cref="RmsNorm"/> under <paramref name="rule"/>.</summary>
    void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, NormRule rule, Tensor dx);

    /// <summary>
    /// Rotates x [rows, heads·headDim] in place; row r has position r mod seqLen. cos/sin are [seqLen, headDim/2].
    /// Interleaved pairs (2i, 2i+1) or halves (i, i+headDim/2). <paramref name="inverse"/> rotates by −θ (the backward).
    /// </summary>
    void Rope(Tensor x, int heads, int seqLen, Tensor cos, Tensor sin, bool interleaved, bool inverse);

    /// <summary>Causal GQA attention: z [rows, heads·hd] and the pattern probs [batch, heads, T, T] (zero above the diagonal).</summary>
    void Attention(Tensor q, Tensor k, Tensor v, AttentionShape shape, Tensor z, Tensor probs);
    /// <summary>Overwrites dq, dk, dv. Under <see cref="AttentionRule.FreezePattern"/> dq and dk are zero.</summary>
    void AttentionBackward(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor probs, AttentionShape shape, AttentionRule rule,
        Tensor dq, Tensor dk, Tensor dv);
    /// <summary>
    /// Streaming (flash-style) causal GQA attention: z as <see cref="Attention"/> and lse [batch, heads, T], the row
    /// statistic L = m + log ℓ the backward recomputes the pattern from. Nothing of size T² is kept.
    /// </summary>
    void StreamingAttention(Tensor q, Tensor k, Tensor v, AttentionShape shape, Tensor z, Tensor lse);
    /// <summary>
    /// Backward of <see cref="StreamingAttention"/>; overwrites dq, dk, dv. <paramref name="o"/> is the op's z before any
    /// edit (read under <see cref="AttentionRule.Gradient"/> only). Under FreezePattern dq and dk are zero.
    /// </summary>
    void StreamingAttentionBackward(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionShape shape,
        AttentionRule rule, Tensor dq, Tensor dk, Tensor dv);

    /// <summary>h = silu(gate) ⊙ up.</summary>
    void SwiGlu(Tensor gate, Tensor up, Tensor h);
    /// <summary>Overwrites dgate, dup with the backward of <see cref="SwiGlu"/> under <paramref name="rule"/>.</summary>
    void SwiGluBackward(Tensor dh, Tensor gate, Tensor up, GateRule rule, Tensor dgate, Tensor dup);

    /// <summary>destination += source.</summary>
    void Add(Tensor destination, Tensor source);
    /// <summary>sum = a + b (all one length; sum may be a or b): defaults to <see cref="Copy"/> then <see cref="Add"/>, which a backend's one op must equal bit for bit.</summary>
    void AddInto(Tensor a, Tensor b, Tensor sum)
    {
        if (ReferenceEquals(b, sum)) { Add(sum, a); return; }   // b + a: the same bits (fp32 addition commutes)
        if (!ReferenceEquals(a, sum)) Copy(a, sum);
        Add(sum, b);
    }
    /// <summary>x = x ⊙ scale + offset (the intervention op: ablation, patching, steering). All three have one shape.</summary>
    void Intervene(Tensor x, Tensor scale, Tensor offset);
    /// <summary>
    /// Mean ablation of x [rows, W] in place. A row r with meanRow[r] &lt; 0 is left alone (padding); otherwise
    /// x[r, i] = means[meanRow[r], i] unless the node is kept: keepRow[r] ≥ 0 and bit i of mask row keepRow[r] is set.
    /// <paramref name="keepBits"/> holds mask rows of <see cref="AblationMask.WordsPerRow"/>(W) words each, bit i % 32
    /// of word i / 32, so a sweep uploads one bit per node and mask row instead of a float per prompt row.
    /// </summary>
    void MeanAblate(Tensor x, Tensor means, ReadOnlySpan<uint> keepBits, ReadOnlySpan<int> keepRow, ReadOnlySpan<int> meanRow);
    /// <summary>x ⊙= scale.</summary>
    void Multiply(Tensor x, Tensor scale);
    /// <summary>destination[i, :] = source[rows[i], :].</summary>
    void GatherRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination);
    /// <summary>destination[rows[i], :] += source[i, :].</summary>
    void ScatterAddRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination);

    /// <summary>
    /// Node-score accumulation of attribution: for every row r with <paramref name="positionOf"/>[r] = p,
    /// sums[firstRow + p, firstColumn + c] += ((base[r, c] − clean[r, c]) · gradient[r, c]) · scale, each product and sum
    /// rounded on its own, the rows of one p in ascending order (so deterministic, and equal to a per-row scatter-add of
    /// the products). clean and gradient are [rows, width]; the base is read as <paramref name="baseline"/> says (a
    /// per-position base at row firstRow + p of its tensor). The score rows p are 0 ≤ p &lt; sums.Rows − firstRow.
    /// </summary>
    void AccumulateScores(Tensor clean, ScoreBaseline baseline, Tensor gradient, float scale, ReadOnlySpan<int> positionOf,
        Tensor sums, int firstRow, int firstColumn);
    /// <summary>destination[i, :] = source[rows[i], :] · scales[i] (one rounding each).</summary>
    void GatherScaledRows(Tensor source, ReadOnlySpan<int> rows, ReadOnlySpan<float> scales, Tensor destination);
    /// <summary>
    /// <see cref="MatMulInputGrad"/> for a dy with at most <paramref name="perRow"/> non-zeros per row, given as entries
    /// (columns[r·perRow + j], values[r·perRow + j]), a column of −1 an empty slot: dx[r, :] = Σ_j value · w[column, :],
    /// j in order, each term a fused multiply-add (overwrites dx). The output layer's backward under a logit metric
    /// reads the answers' classifier rows instead of a full-vocabulary product.
    /// </summary>
    void SparseMatMulInputGrad(ReadOnlySpan<int> columns, ReadOnlySpan<float> values, int perRow, Tensor w, Tensor dx);
}

/// <summary>Reads values that live elsewhere (see <see cref="IBackend.ReadOnHost"/>); the span is valid only during the call.</summary>
internal delegate void HostValuesReader(ReadOnlySpan<float> values);
