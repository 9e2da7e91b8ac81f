namespace NeuronTrace.Runtime;

/// <summary>
/// The row groups of a keep-k product (<see cref="ISweepOps.SparseMlp"/>, <see cref="ISweepOps.KeptOutputs"/>), host
/// tables checked once when made: group g keeps units Kept[GroupKept[g] .. GroupKept[g+1]) for rows
/// RowsOfGroups[GroupRows[g] .. GroupRows[g+1]), plus what the device kernels derive (each group's first pair, each
/// row's group and place in it). A row is in at most one group and every group row is a real row (mean row ≥ 0).
/// A device backend sends all eight tables in one copy per op (<see cref="Words"/>).
/// </summary>
internal sealed class KeepKGroups
{
    KeepKGroups(int meanRows, int units, long pairs, int[][] tables)
    {
        MeanRows = meanRows; Units = units; Pairs = pairs; _tables = tables;
    }

    readonly int[][] _tables;

    /// <summary>Rows of the product's input and output.</summary>
    public int Rows => MeanRow.Length;
    public int Groups => GroupKept.Length - 1;
    /// <summary>Mean rows the tables index (rows of C and of the means).</summary>
    public int MeanRows { get; }
    /// <summary>The units' count the kept units are below (hidden for the MLP, the output width for kept outputs).</summary>
    public int Units { get; }
    /// <summary>(kept unit, row) pairs over all groups: the product computes this many dot products (pairs).</summary>
    public long Pairs { get; }
    /// <summary>Per row its mean row, −1 for a padding row.</summary>
    public int[] MeanRow => _tables[0];
    public int[] GroupKept => _tables[1];
    public int[] Kept => _tables[2];
    public int[] GroupRows => _tables[3];
    public int[] RowsOfGroups => _tables[4];
    /// <summary>[groups + 1]: group g's pairs start at PairBase[g] (kept-major: pair (j, q) at PairBase[g] + j·rows_g + q).</summary>
    public int[] PairBase => _tables[5];
    /// <summary>Per row its group, −1 for none.</summary>
    public int[] RowGroup => _tables[6];
    /// <summary>Per row its place q in its group's rows.</summary>
    public int[] RowIndex => _tables[7];

    /// <summary>The eight tables one after another, in the order above (an empty table as one unused 0, so every table has an address).</summary>
    public int[] Words(out int[] offsets)
    {
        offsets = new int[_tables.Length];
        int n = 0;
        for (int i = 0; i < _tables.Length; i++) { offsets[i] = n; n += Math.Max(1, _tables[i].Length); }
        var words = new int[n];
        for (int i = 0; i < _tables.Length; i++) _tables[i].CopyTo(words, offsets[i]);
        return words;
    }

    /// <param name="meanRow">Per row its mean row, −1 for a padding row.</param>
    /// <param name="meanRows">Rows of the means table; every mean row is below it.</param>
    /// <param name="groupKept">[groups + 1] offsets into <paramref name="kept"/>, from 0, never decreasing.</param>
    /// <param name="kept">The kept units of all groups, group after group.</param>
    /// <param name="groupRows">[groups + 1] offsets into <paramref name="rowsOfGroups"/>, from 0, never decreasing.</param>
    /// <param name="rowsOfGroups">The rows of all groups, group after group; each a real row, in one group at most.</param>
    /// <param name="units">The units' count (hidden for the MLP, the output width for kept outputs): every kept unit is below it.</param>
    public static KeepKGroups Make(int[] meanRow, int meanRows, int[] groupKept, int[] kept, int[] groupRows, int[] rowsOfGroups, int units)
    {
        int rows = meanRow.Length, groups = groupKept.Length - 1;
        if (groups < 0 || groupRows.Length != groupKept.Length || groupKept[0] != 0 || groupRows[0] != 0)
            throw new ArgumentException("KeepK: group tables have the wrong length or do not start at 0");
        if (groupKept[^1] > kept.Length || groupRows[^1] > rowsOfGroups.Length) throw new ArgumentException("KeepK: group offsets run past their tables");
        SweepOps.CheckRows(meanRow, meanRows, "KeepK mean rows");
        foreach (int i in kept)
            if ((uint)i >= (uint)units) throw new ArgumentOutOfRangeException(nameof(kept), $"KeepK: unit {i} outside [0, {units})");
        var pairBase = new int[groups + 1];
        var rowGroup = new int[rows];
        var rowIndex = new int[rows];
        Array.Fill(rowGroup, -1);
        long pairs = 0;
        for (int g = 0; g < groups; g++)
        {
            if (groupKept[g] > groupKept[g + 1] || groupRows[g] > groupRows[g + 1]) throw new ArgumentException("KeepK: group offsets decrease");
            pairBase[g] = checked((int)pairs);
            pairs += (long)(groupKept[g + 1] - groupKept[g]) * (groupRows[g + 1] - groupRows[g]);
            for (int q = groupRows[g]; q < groupRows[g + 1]; q++)
            {
                int r = rowsOfGroups[q];
                if ((uint)r >= (uint)rows || meanRow[r] < 0) throw new ArgumentOutOfRangeException(nameof(rowsOfGroups), $"KeepK: group row {r} is not a real row");
                if (rowGroup[r] >= 0) throw new ArgumentException($"KeepK: row {r} is in two groups");
                rowGroup[r] = g;
                rowIndex[r] = q - groupRows[g];
            }
        }
        pairBase[groups] = checked((int)pairs);
        return new KeepKGroups(meanRows, units, pairs, [meanRow, groupKept, kept, groupRows, rowsOfGroups, pairBase, rowGroup, rowIndex]);
    }
}

/// <summary>
/// A layer's keep-k MLP tables for one sweep (<see cref="ISweepOps.PrepareKeepKMlp"/>): C = W_down · mean [mean rows, dim],
/// the contribution of every neuron at its mean, and, where the backend's product reads them so, W_down's columns as
/// contiguous rows [hidden, dim] (the CPU; a device reads W_down in place: null).
/// </summary>
internal sealed class KeepKMlp(Tensor constants, Tensor? downColumns) : IDisposable
{
    public Tensor Constants { get; } = constants;
    public Tensor? DownColumns { get; } = downColumns;

    public void Dispose()
    {
        Constants.Dispose();
        DownColumns?.Dispose();
    }
}
