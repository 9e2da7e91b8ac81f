namespace NeuronTrace.Model;

/// <summary>A model, tokenizer or data file is missing, truncated or malformed. The message is one line naming the file.</summary>
public sealed class ModelFormatException(string file, string problem) : Exception($"{file}: {problem}")
{
    public string File { get; } = file;
    public string Problem { get; } = problem;
}
