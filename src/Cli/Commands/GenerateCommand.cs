using System.CommandLine;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>generate</c>: greedy (temperature 0) continuation of a prompt, streamed to stdout.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        var prompt = new Option<string>("--prompt", "-p") { Description = "Prompt text (default: empty, i.e. BOS only), or a chat prompt as a JSON messages list, e.g. [{\"role\": \"user\", \"content\": \"Hi\"}], rendered with the model's chat template (Llama 3.1's unless the model folder's tokenizer_config.json has a supported one).", DefaultValueFactory = _ => "" };
        var steps = CommonOptions.Int("--steps", "Positions to run, prompt included (llama2.c's -n; at most the model's context).", 256, 1, 1_000_000, aliases: "-n");
        var specialTokens = PromptOptions.SpecialTokens();
        var cmd = new Command("generate", "Greedy generation from a prompt (a quick check that the model runs).") { model, device, prompt, steps, specialTokens };
        cmd.SetAction(r =>
        {
            int n = r.GetValue(steps);
            var loaded = CommonOptions.LoadModel(r.GetValue(model));
            var tok = loaded.RequireTokenizer();
            using var traced = TracedModel.Create(loaded, CommonOptions.OpenBackend(r.GetValue(device)!));
            string text = r.GetValue(prompt) ?? "";
            Tracing.Tasks.PromptTask.RequireLengthFits(tok, text, traced.Config.MaxSeqLen, "--prompt");
            var ids = PromptOptions.EncodePrompt(PromptOptions.Encoder(loaded, r.GetValue(specialTokens)), text);
            if (ids.Length > traced.Config.MaxSeqLen)
                throw new ArgumentException($"prompt of {ids.Length} tokens exceeds the model's context of {traced.Config.MaxSeqLen}");
            for (int i = 1; i < ids.Length; i++) Console.Write(tok.Decode(ids[i - 1], ids[i]));
            int prev = ids[^1];
            var watch = System.Diagnostics.Stopwatch.StartNew();
            var all = traced.Generate(ids, n, t => { Console.Write(tok.Decode(prev, t)); prev = t; });
            Console.WriteLine();
            int generated = all.Count - ids.Length;
            Console.Error.WriteLine($"{generated} tokens in {watch.Elapsed.TotalSeconds:F2} s ({generated / Math.Max(1e-9, watch.Elapsed.TotalSeconds):F1} tok/s)");
            return 0;
        });
        return cmd;
    }
}
