namespace NeuronTrace.Formats.Tokenizers;

/// <summary>Text to token ids and back, with the model's own conventions.</summary>
public interface ITextTokenizer
{
    int VocabSize { get; }
    int BosId { get; }
    int EosId { get; }
    /// <summary>Encodes text; prepends BOS when <paramref name="addBos"/>. Special-token text is encoded as plain text.</summary>
    int[] Encode(string text, bool addBos);
    /// <summary>The text a token contributes, as a streaming decoder would print it after <paramref name="previous"/>.</summary>
    string Decode(int previous, int token);
    /// <summary>Decodes a whole id sequence (BOS/EOS dropped).</summary>
    string Decode(IReadOnlyList<int> ids);
    /// <summary>A readable form of one token, for tables and reports.</summary>
    string Piece(int id);
}
