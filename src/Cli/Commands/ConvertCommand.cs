using System.CommandLine;
using NeuronTrace.Model.Formats;
using NeuronTrace.Model.Tokenizers;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>convert</c>: write a model in another format (Hugging Face folder; Q/K permuted for rotate_half).</summary>
public static class ConvertCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var to = new Option<string>("--to") { Description = "Target format: hf (a Hugging Face LlamaForCausalLM folder, tokenizer file copied) or gguf (weights only).", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (hf) or file (gguf).", Required = true };
        var cmd = new Command("convert", "Convert a model to another format.") { model, to, output };
        cmd.SetAction(r =>
        {
            var m = CommonOptions.LoadModel(r.GetValue(model));
            string dest = r.GetValue(output)!;
            switch (r.GetValue(to))
            {
                case "hf":
                    string? tokenizerFile = FindTokenizerFile(m.Path);
                    HfFolderWriter.Write(m.Weights, dest, tokenizerFile);
                    break;
                case "gguf":
                    GgufFormat.Write(m.Weights, dest);
                    break;
                default:
                    throw new UsageException($"unknown --to \"{r.GetValue(to)}\" (hf or gguf)");
            }
            Console.WriteLine($"wrote {dest}");
            return 0;
        });
        return cmd;
    }

    static string? FindTokenizerFile(string modelPath) =>
        TokenizerFiles.FindInFolder(Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(Path.GetFullPath(modelPath))!);
}
