namespace NeuronTrace.Formats.Tokenizers;

/// <summary>
/// The merge loop shared by the BPE tokenizers. The symbols are adjacent substrings of one text; the adjacent pair
/// with the best score merges first (the leftmost pair on ties), until no pair may merge. That is the loop of both
/// SentencePiece's BPE model and llama2.c's <c>encode</c>. A heap of candidate pairs over a linked list of symbols
/// keeps it O(n log n): rescanning every pair after each merge, as llama2.c does, is O(n²) on a long text.
/// </summary>
internal static class BpeMerger
{
    /// <summary>
    /// Scores merging the symbol at <paramref name="start"/> (<paramref name="leftLength"/> chars) with the one right
    /// after it (<paramref name="rightLength"/> chars). Higher is better; false when the pair may not merge.
    /// </summary>
    public delegate bool PairScore(int start, int leftLength, int rightLength, out float score);

    /// <param name="lengths">the initial symbols' lengths in chars, back to back from offset 0 of the text</param>
    /// <param name="score">the pair scorer, reading the text by offsets</param>
    /// <param name="frozen">optional, per initial symbol: true for symbols that never merge</param>
    /// <returns>the final symbols as (start, length), left to right</returns>
    public static List<(int Start, int Length)> Merge(IReadOnlyList<int> lengths, PairScore score, IReadOnlyList<bool>? frozen = null)
    {
        int n = lengths.Count;
        var start = new int[n];
        var length = new int[n];
        var prev = new int[n];
        var next = new int[n];
        for (int i = 0, offset = 0; i < n; i++)
        {
            start[i] = offset;
            length[i] = lengths[i];
            offset += lengths[i];
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }

        // Heap entries are pairs (left, right) with the length the merged symbol had when the pair was scored;
        // a merge elsewhere can make an entry stale, which the pop checks (SentencePiece does the same).
        var agenda = new PriorityQueue<(int Left, int Right, int Length), (float Score, int Left)>(n, BestFirst.Instance);
        void Offer(int left, int right)
        {
            if (left < 0 || right < 0) return;
            if (frozen is not null && (frozen[left] || frozen[right])) return;
            if (score(start[left], length[left], length[right], out float s))
                agenda.Enqueue((left, right, length[left] + length[right]), (s, left));
        }
        for (int i = 0; i + 1 < n; i++) Offer(i, i + 1);

        while (agenda.TryDequeue(out var pair, out _))
        {
            int l = pair.Left, r = pair.Right;
            if (length[l] == 0 || length[r] == 0 || next[l] != r || length[l] + length[r] != pair.Length) continue;
            length[l] += length[r];
            length[r] = 0;
            next[l] = next[r];
            if (next[r] >= 0) prev[next[r]] = l;
            Offer(prev[l], l);
            Offer(l, next[l]);
        }

        var result = new List<(int, int)>();
        for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) result.Add((start[i], length[i]));
        return result;
    }

    /// <summary>Min-heap order that puts the highest score first, then the leftmost pair.</summary>
    sealed class BestFirst : IComparer<(float Score, int Left)>
    {
        public static readonly BestFirst Instance = new();
        public int Compare((float Score, int Left) a, (float Score, int Left) b) =>
            a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left);
    }
}
