using System.CommandLine;
using System.Text.Json;
using NeuronTrace.Formats;
using NeuronTrace.Formats.Tokenizers;

namespace NeuronTrace.Cli;

/// <summary><c>--special-tokens</c> and the prompt encoder the commands share (chat template from the model folder, warnings on stderr).</summary>
internal static class PromptOptions
{
    public static Option<bool> SpecialTokens() => new("--special-tokens")
    {
        Description = "Parse special-token text in prompts (<|begin_of_text|>, <|eot_id|>, ...) as the special tokens. Without it such text is tokenized as plain text, with a warning. Chat prompts (a \"messages\" list) get their template's special tokens either way.",
    };

    /// <summary>The encoder for a model: its folder's tokenizer_config.json chat template where present, else Llama 3.1's.</summary>
    public static PromptEncoder Encoder(LoadedModel model, bool specialTokens, string? source = null) => Encoder(model.Description, specialTokens, source);

    /// <summary>The same encoder from the model's description (trace and attribute tokenise and plan before reading the weights).</summary>
    public static PromptEncoder Encoder(ModelDescription model, bool specialTokens, string? source = null) =>
        PromptEncoder.ForModel(model, specialTokens, message => Console.Error.WriteLine($"warning: {(source is null ? "" : source + ": ")}{message}"));

    /// <summary>Encodes a <c>--prompt</c>: a JSON messages list (starting with <c>[{</c>) as a chat prompt, anything else as text.</summary>
    public static int[] EncodePrompt(PromptEncoder encoder, string prompt)
    {
        if (!PromptEncoder.LooksLikeMessages(prompt)) return encoder.EncodeText(prompt, "--prompt");
        JsonElement list;
        try { list = JsonDocument.Parse(prompt).RootElement.Clone(); }
        catch (JsonException e) { throw new UsageException($"--prompt looks like a messages list but is not valid JSON ({e.Message.Split('\n')[0].Trim()})"); }
        try { return encoder.EncodeChat(PromptEncoder.ParseMessages(list, "--prompt"), "--prompt"); }
        catch (FormatException e) { throw new UsageException(e.Message); }
    }
}
