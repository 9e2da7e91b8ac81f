namespace NeuronTrace.Formats;

/// <summary>
/// The tokenizer stored in a GGUF's <c>tokenizer.ggml.*</c> metadata, as found there (pieces use U+2581 for a space in
/// SentencePiece vocabularies). <see cref="Model"/> is <c>tokenizer.ggml.model</c> ("llama" for SentencePiece,
/// "gpt2" for byte-level BPE, whose merge rules are in <see cref="Merges"/>). Ids absent from the file are -1;
/// absent scores are 0 and absent token types are 1 (normal).
/// </summary>
internal sealed record GgufVocabulary(
    string[] Pieces,
    float[] Scores,
    int[] TokenTypes,
    int BosId,
    int EosId,
    int UnkId,
    string Model,
    string[]? Merges = null);
