using NeuronTrace.Formats;
using NeuronTrace.Model;

namespace NeuronTrace.Tracing.Pipeline;

/// <summary>
/// A model's shape without reading its weights, for <see cref="MemoryPlan"/>: what <see cref="ModelLoader.Describe"/>
/// reads (a Hugging Face folder's config.json, a GGUF file's metadata and tensor table, the llama2.c header).
/// </summary>
internal static class ModelShape
{
    public static LlamaConfig Read(string? path = null) => ModelLoader.Describe(path).Config;
}
