using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// The per-layer gradient scratch of <see cref="Llama"/>'s backward loop, on the device of the layers being run: a
/// model split over devices gets a fresh set at each device boundary (the previous one freed), one device one set.
/// </summary>
internal sealed class BackwardScratch(int rows, LlamaConfig c) : IDisposable
{
    Tensor[] _tensors = [];

    /// <summary>dZ, dUpstream, dNorm, dQ [rows, dim]; dAct, dGate, dUp [rows, hidden]; dK, dV [rows, kv dim], zeroed, on <paramref name="be"/>.</summary>
    public (Tensor DZ, Tensor DUpstream, Tensor DAct, Tensor DGate, Tensor DUp, Tensor DNorm, Tensor DQ, Tensor DK, Tensor DV) On(IBackend be)
    {
        Dispose();
        int d = c.Dim, h = c.HiddenDim, kv = c.KvDim;
        _tensors = [be.Allocate(rows, d), be.Allocate(rows, d), be.Allocate(rows, h), be.Allocate(rows, h), be.Allocate(rows, h),
            be.Allocate(rows, d), be.Allocate(rows, d), be.Allocate(rows, kv), be.Allocate(rows, kv)];
        var t = _tensors;
        return (t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]);
    }

    public void Dispose()
    {
        foreach (var t in _tensors) t.Dispose();
        _tensors = [];
    }
}
