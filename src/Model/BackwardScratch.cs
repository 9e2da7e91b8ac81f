using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// The per-layer gradient scratch of <see cref="Llama"/>'s backward loop, on the device of the layers being run: a
/// model split over devices gets a fresh set at each device boundary (the previous one freed), one device one set.
/// </summary>
/// <remarks>
/// A backward that computes only some rows (<see cref="BackwardRows"/>, <paramref name="compactRows"/> of them) adds the
/// compact operands and results of its input-gradient products (<see cref="Compact"/>): at the 1B shape two
/// [rows, hidden], two [rows, dim] and two [rows, kv dim] tensors, and a set of fewer rows for the top layer's MLP and
/// W_o (<see cref="BackwardRows.TopLayer"/>).
/// </remarks>
internal sealed class BackwardScratch(int rows, LlamaConfig c, int? compactRows = null) : IDisposable
{
    Tensor[] _tensors = [];
    readonly Dictionary<(int Rows, int Width, int Slot), Tensor> _compact = [];
    IBackend? _be;

    /// <summary>dZ, dUpstream, dNorm, dQ [rows, dim]; dAct, dGate, dUp [rows, hidden]; dK, dV [rows, kv dim], zeroed, on <paramref name="be"/>.</summary>
    public (Tensor DZ, Tensor DUpstream, Tensor DAct, Tensor DGate, Tensor DUp, Tensor DNorm, Tensor DQ, Tensor DK, Tensor DV) On(IBackend be)
    {
        Dispose();
        _be = be;
        int d = c.Dim, h = c.HiddenDim, kv = c.KvDim;
        _tensors = [be.Allocate(rows, d), be.Allocate(rows, d), be.Allocate(rows, h), be.Allocate(rows, h), be.Allocate(rows, h),
            be.Allocate(rows, d), be.Allocate(rows, d), be.Allocate(rows, kv), be.Allocate(rows, kv)];
        var t = _tensors;
        return (t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]);
    }

    /// <summary>
    /// The compact tensor [<paramref name="rows"/>, <paramref name="width"/>] number <paramref name="slot"/> on the last
    /// <see cref="On"/> device, made on first use: distinct slots of one shape are distinct tensors. At most the compact
    /// rows (the top layer's MLP and W_o products take fewer, BackwardRows.TopLayer).
    /// </summary>
    public Tensor Compact(int rows, int width, int slot)
    {
        if (compactRows is not int n || _be is null) throw new InvalidOperationException("this backward scratch has no compact rows");
        if (rows > n) throw new ArgumentOutOfRangeException(nameof(rows), $"{rows} compact rows, the scratch has {n}");
        if (!_compact.TryGetValue((rows, width, slot), out var t)) _compact[(rows, width, slot)] = t = _be.AllocateUninitialized(rows, width);
        return t;
    }

    public void Dispose()
    {
        foreach (var t in _tensors) t.Dispose();
        foreach (var t in _compact.Values) t.Dispose();
        _tensors = [];
        _compact.Clear();
    }
}
