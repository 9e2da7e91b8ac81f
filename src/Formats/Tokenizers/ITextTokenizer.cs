namespace NeuronTrace.Formats.Tokenizers;

/// <summary>Text to token ids and back, with the model's own conventions.</summary>
public interface ITextTokenizer
{
    /// <summary>Number of token ids.</summary>
    int VocabSize { get; }
    /// <summary>The beginning-of-sequence id.</summary>
    int BosId { get; }
    /// <summary>The end-of-sequence id.</summary>
    int EosId { get; }
    /// <summary>Encodes text; prepends BOS when <paramref name="addBos"/>. Special-token text is encoded as plain text.</summary>
    /// <param name="text">The text.</param>
    /// <param name="addBos">Whether to prepend <see cref="BosId"/>.</param>
    int[] Encode(string text, bool addBos);
    /// <summary>The text a token contributes, as a streaming decoder would print it after <paramref name="previous"/>.</summary>
    /// <param name="previous">The token before (some tokenizers drop a leading space after BOS).</param>
    /// <param name="token">The token to decode.</param>
    string Decode(int previous, int token);
    /// <summary>Decodes a whole id sequence (BOS/EOS dropped).</summary>
    /// <param name="ids">The token ids.</param>
    string Decode(IReadOnlyList<int> ids);
    /// <summary>A readable form of one token, for tables and reports.</summary>
    /// <param name="id">A token id.</param>
    string Piece(int id);
}
