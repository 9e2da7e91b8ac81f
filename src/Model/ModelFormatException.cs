namespace NeuronTrace.Model;

/// <summary>A model, tokenizer or data file is missing, truncated or malformed. The message is one line naming the file.</summary>
/// <param name="file">The file (or folder) at fault.</param>
/// <param name="problem">What is wrong with it, one line.</param>
public sealed class ModelFormatException(string file, string problem) : Exception($"{file}: {problem}")
{
    /// <summary>The file (or folder) at fault.</summary>
    public string File { get; } = file;
    /// <summary>What is wrong with it, without the file name.</summary>
    public string Problem { get; } = problem;
}
