using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;

namespace NeuronTrace.Model;

internal static partial class PairedForward
{
    /// <summary>
    /// The rows of a paired batch (clean prompts, then patch prompts) whose top-layer values AtP and RelP read: each
    /// prompt's last row. Every other row of the top layer reaches no logit (the logits are the last rows' only) and so
    /// carries no gradient: its score is zero whatever its values. Padded with the first other rows to a multiple of
    /// 16 rows, at least 17, so that the products and SwiGLU compute each row as over every row (the packed kernel, no
    /// scalar tail; <see cref="SharedPrefix"/>'s padding); null when that is no fewer rows than the layer's products take
    /// (<paramref name="productRows"/>), or when the full layer's SwiGLU over them would take a scalar tail (its last
    /// row's last values, which the compact rows would compute by the vector path).
    /// </summary>
    internal static int[]? TopLayerRows(TokenBatch both, int productRows, int hiddenDim)
    {
        if ((long)productRows * hiddenDim % 16 != 0) return null;
        var rows = new SortedSet<int>(both.LastRows());
        for (int r = 0; r < both.Rows && (rows.Count % 16 != 0 || rows.Count <= Gemm.SmallMTransposedB); r++) rows.Add(r);
        return rows.Count >= productRows || !Gemm.SameRowArithmetic(rows.Count, productRows) ? null : [.. rows];
    }

    /// <summary>
    /// The top layer of a paired forward whose only readers are AtP's and RelP's scores and backward: K and V on every row
    /// the layer below computed (all, or <see cref="SharedPrefix.Computed"/>), Q, W_o and the MLP on
    /// <paramref name="rows"/> (<see cref="TopLayerRows"/>) only. The attention, the norms and the residual run on every
    /// row as usual; Q, AttnOut, Gate, Up, Act and MlpOut are zero at the other rows, so the layer's tensors there are
    /// finite values of no meaning, each multiplied by a zero gradient. The last rows' values are the full layer's, bit for
    /// bit: the same products at the same kernel, row by row.
    /// </summary>
    sealed class TopLayerShortcuts(Llama model, int layer, SharedPrefix? shared, int[] rows) : ILayerShortcuts
    {
        IBackend Be => model.LayerBackend(layer);
        DeviceWeights.DeviceLayer W => model.Weights.Layers[layer];

        public bool Attention(LayerState s) => false;

        public bool QkvProjection(LayerState s)
        {
            if (shared is null) Be.MatMulShared(s.AttnNormed, [W.Wk, W.Wv], [s.K, s.V]);
            else
            {
                using var x = Gather(s.AttnNormed, shared.Computed);
                using var k = Be.AllocateUninitialized(x.Rows, s.K.Columns);
                using var v = Be.AllocateUninitialized(x.Rows, s.V.Columns);
                Be.MatMulShared(x, [W.Wk, W.Wv], [k, v]);
                GatherRows(Be, k, shared.Expand, s.K);
                GatherRows(Be, v, shared.Expand, s.V);
            }
            OnRows(s.AttnNormed, W.Wq, s.Q);
            return true;
        }

        public bool OutputProjection(LayerState s)
        {
            OnRows(s.Z, W.Wo, s.AttnOut);
            return true;
        }

        public bool Mlp(LayerState s)
        {
            using var x = Gather(s.FfnNormed, rows);
            var (gate, up, act, o) = CompactMlp(Be, W, x);
            using var _g = gate; using var _u = up; using var _a = act; using var _o = o;
            Put(gate, s.Gate);
            Put(up, s.Up);
            Put(act, s.Act);
            Put(o, s.MlpOut);
            return true;
        }

        public bool DownProjection(LayerState s) => false;

        // y = 0 but at the rows, where y = x · wᵀ.
        void OnRows(Tensor x, Tensor w, Tensor y)
        {
            using var xr = Gather(x, rows);
            using var yr = Be.AllocateUninitialized(rows.Length, y.Columns);
            Be.MatMul(xr, w, yr, false);
            Put(yr, y);
        }

        Tensor Gather(Tensor full, int[] which)
        {
            var t = Be.AllocateUninitialized(which.Length, full.Columns);
            GatherRows(Be, full, which, t);
            return t;
        }

        // destination = 0 but at the rows, where it takes the compact rows in order.
        void Put(Tensor compact, Tensor destination)
        {
            Be.Fill(destination, 0f);
            ScatterRows(compact, rows, destination);
        }
    }
}
