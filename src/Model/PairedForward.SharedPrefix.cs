using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;

namespace NeuronTrace.Model;

internal static partial class PairedForward
{
    /// <summary>
    /// The rows of a paired batch (clean prompts, then the patch prompts) that the per-row products must compute: every
    /// clean row, and a patch row only from its prompt's first token that differs from the clean prompt on. Before that
    /// token the two prompts are the same tokens and every op is causal, so the patch row's values are the clean row's,
    /// bit for bit (attribution patching's pairs usually differ in one token: in the 1B benchmark's random pairs about
    /// half the patch rows are such a shared prefix). <see cref="Expand"/> maps each row of the batch to its computed
    /// row (a shared patch row to its clean twin). Null when no row is shared or when the computed row count would take
    /// another product kernel than the clean rows alone (then a row's sums could run in another order).
    /// </summary>
    internal sealed record SharedPrefix(int[] Computed, int[] Expand)
    {
        /// <summary>Computed rows come in multiples of this (16 floats: one 512-bit vector of any row width).</summary>
        const int RowMultiple = 16;

        public static SharedPrefix? Of(TokenBatch clean, TokenBatch patch)
        {
            int size = clean.Size, T = clean.SeqLen;
            if (patch.SeqLen != T) return null;
            var computed = new List<int>(2 * clean.Rows);
            var expand = new int[2 * clean.Rows];
            for (int r = 0; r < clean.Rows; r++) { expand[r] = computed.Count; computed.Add(r); }
            for (int b = 0; b < size; b++)
            {
                bool same = true;
                for (int i = 0; i < T; i++)
                {
                    int row = b * T + i;
                    same &= clean.Tokens[row] == patch.Tokens[row];
                    if (same) expand[clean.Rows + row] = row;   // computed[row] == row: the clean rows come first
                    else { expand[clean.Rows + row] = computed.Count; computed.Add(clean.Rows + row); }
                }
            }
            // The element-wise ops (SwiGLU) take a scalar tail past the last whole vector of a tensor, whose exp may
            // differ in the last bit from the vector one: padded to a multiple of RowMultiple rows (repeats of row 0,
            // never read back), no computed row falls in such a tail.
            while (computed.Count % RowMultiple != 0) computed.Add(0);
            if (computed.Count >= expand.Length || !Gemm.SameRowArithmetic(computed.Count, clean.Rows)) return null;
            return new SharedPrefix(computed.ToArray(), expand);
        }
    }

    /// <summary>The MLP of the compact rows <paramref name="x"/>: gate, up, act and its output, new tensors the caller disposes.</summary>
    static (Tensor Gate, Tensor Up, Tensor Act, Tensor Out) CompactMlp(IBackend be, DeviceWeights.DeviceLayer w, Tensor x)
    {
        int n = x.Rows, hidden = w.W1.Shape[0];
        Tensor gate = be.AllocateUninitialized(n, hidden), up = be.AllocateUninitialized(n, hidden), act = be.AllocateUninitialized(n, hidden),
            o = be.AllocateUninitialized(n, w.W2.Shape[0]);
        try
        {
            be.MatMulShared(x, [w.W1, w.W3], [gate, up]);
            be.SwiGlu(gate, up, act);
            be.MatMul(act, w.W2, o, false);
            return (gate, up, act, o);
        }
        catch
        {
            gate.Dispose(); up.Dispose(); act.Dispose(); o.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A paired layer's Q/K/V, W_o and MLP products over the <see cref="SharedPrefix.Computed"/> rows only, expanded back
    /// to every row of the layer state (a copy of the clean twin's row where the patch row is shared). The attention runs
    /// on every row as usual.
    /// </summary>
    sealed class SharedPrefixShortcuts(Llama model, int layer, SharedPrefix rows) : ILayerShortcuts
    {
        IBackend Be => model.LayerBackend(layer);
        DeviceWeights.DeviceLayer W => model.Weights.Layers[layer];

        public bool Attention(LayerState s) => false;
        // The attention reads every row's key and value, so q, k and v are expanded to every row (a shared patch row's are
        // its clean twin's: same tokens, causal ops); RoPE then runs on all rows as usual.
        public bool QkvProjection(LayerState s)
        {
            using var x = Compact(s.AttnNormed);
            using var q = Be.AllocateUninitialized(x.Rows, s.Q.Columns);
            using var k = Be.AllocateUninitialized(x.Rows, s.K.Columns);
            using var v = Be.AllocateUninitialized(x.Rows, s.V.Columns);
            Be.MatMulShared(x, [W.Wq, W.Wk, W.Wv], [q, k, v]);
            GatherRows(Be, q, rows.Expand, s.Q);
            GatherRows(Be, k, rows.Expand, s.K);
            GatherRows(Be, v, rows.Expand, s.V);
            return true;
        }

        public bool OutputProjection(LayerState s)
        {
            using var z = Compact(s.Z);
            using var o = Be.AllocateUninitialized(z.Rows, s.AttnOut.Columns);
            Be.MatMul(z, W.Wo, o, false);
            GatherRows(Be, o, rows.Expand, s.AttnOut);
            return true;
        }

        public bool Mlp(LayerState s)
        {
            using var x = Compact(s.FfnNormed);
            var (gate, up, act, o) = CompactMlp(Be, W, x);
            using var _g = gate; using var _u = up; using var _a = act; using var _o = o;
            // Gate and up are read by the clean pass's backward only (no patch pass keeps them, nor reads them after this):
            // their patch half stays unwritten. The clean rows are computed rows 0.. in order.
            int clean = s.Gate.Rows / 2;
            GatherRows(Be, gate, rows.Expand.AsSpan(0, clean), s.Gate);
            GatherRows(Be, up, rows.Expand.AsSpan(0, clean), s.Up);
            GatherRows(Be, act, rows.Expand, s.Act);
            GatherRows(Be, o, rows.Expand, s.MlpOut);
            return true;
        }

        public bool DownProjection(LayerState s) => false;

        Tensor Compact(Tensor full)
        {
            var t = Be.AllocateUninitialized(rows.Computed.Length, full.Columns);
            GatherRows(Be, full, rows.Computed, t);
            return t;
        }
    }
}
