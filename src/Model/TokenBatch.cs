namespace NeuronTrace.Model;

/// <summary>
/// Prompts as one right-padded block of token ids, row b·SeqLen + t. Causal attention means padding after a prompt never
/// changes its real positions, so no attention mask is needed; metrics read each prompt's own last row.
/// </summary>
internal sealed class TokenBatch
{
    public TokenBatch(IReadOnlyList<int[]> prompts, int padId = 0)
    {
        if (prompts.Count == 0) throw new ArgumentException("a batch needs at least one prompt");
        Lengths = prompts.Select(p => p.Length).ToArray();
        if (Lengths.Any(l => l == 0)) throw new ArgumentException("a prompt has no tokens");
        SeqLen = Lengths.Max();
        Tokens = new int[prompts.Count * SeqLen];
        Array.Fill(Tokens, padId);
        for (int b = 0; b < prompts.Count; b++) prompts[b].CopyTo(Tokens, b * SeqLen);
    }

    public int[] Tokens { get; }
    public int[] Lengths { get; }
    public int SeqLen { get; }
    public int Size => Lengths.Length;
    public int Rows => Tokens.Length;

    /// <summary>The row of prompt b's last token.</summary>
    public int LastRow(int b) => b * SeqLen + Lengths[b] - 1;
    public int[] LastRows() => Enumerable.Range(0, Size).Select(LastRow).ToArray();

    /// <summary>The row of prompt b at position-from-end p, or −1 when the prompt is shorter.</summary>
    public int RowFromEnd(int b, int positionFromEnd) => positionFromEnd < Lengths[b] ? b * SeqLen + Lengths[b] - 1 - positionFromEnd : -1;
}
