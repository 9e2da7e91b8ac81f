using System.CommandLine;
using NeuronTrace.Formats;
using NeuronTrace.Formats.Tokenizers;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>convert</c>: write a model in another format (Hugging Face folder; Q/K permuted for rotate_half).</summary>
internal static class ConvertCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var to = CommonOptions.Choice("--to", "Target format: hf (a Hugging Face LlamaForCausalLM folder, tokenizer file copied) or gguf (weights only).",
            [("hf", TargetFormat.Hf), ("gguf", TargetFormat.Gguf)]);
        to.Required = true;
        var (output, force) = CommonOptions.Output("Output folder (hf) or file (gguf). Must not exist unless --force.",
            "Replace an existing output: a gguf file, or an hf folder that is empty or holds only what convert writes (config.json, *.safetensors, the index and a tokenizer file). Never the input model.", required: true);
        var cmd = new Command("convert", "Convert a model to another format.") { model, to, output, force };
        cmd.SetAction(r =>
        {
            var format = r.GetValue(to);
            string dest = OutputPaths.NotEmpty(r.GetValue(output));
            var m = CommonOptions.LoadModel(r.GetValue(model));
            string? tokenizerFile = FindTokenizerFile(m.Path);
            string?[] inputs = [r.GetValue(model), m.Path, tokenizerFile];
            if (format == TargetFormat.Hf)
            {
                OutputPaths.CheckFolder(dest, r.GetValue(force), "a model folder written by convert", IsConvertedFolder, inputs);
                HfFolderWriter.Write(m.Weights, dest, tokenizerFile, overwrite: r.GetValue(force));
            }
            else
            {
                OutputPaths.CheckFile(dest, r.GetValue(force), inputs);
                GgufFormat.Write(m.Weights, dest);
            }
            Console.WriteLine($"wrote {dest}");
            return 0;
        });
        return cmd;
    }

    enum TargetFormat { Hf, Gguf }

    /// <summary>A folder of regular files only, with config.json, all of them names that <c>convert --to hf</c> writes.</summary>
    static bool IsConvertedFolder(string dir) =>
        File.Exists(Path.Combine(dir, HfConfig.FileName)) && !Directory.EnumerateDirectories(dir).Any()
        && Directory.EnumerateFiles(dir).Select(Path.GetFileName).All(n => n is HfConfig.FileName or HfFolderFormat.IndexFileName
            or "tokenizer.json" or "tokenizer.model" or "tok512.bin" or "tokenizer.bin"
            || System.Text.RegularExpressions.Regex.IsMatch(n!, @"^model(-\d{5}-of-\d{5})?\.safetensors$"));

    static string? FindTokenizerFile(string modelPath) =>
        TokenizerFiles.FindInFolder(Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(Path.GetFullPath(modelPath))!);
}
