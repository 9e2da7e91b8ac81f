using System.CommandLine;
using NeuronTrace.Formats;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>info</c>: the model's configuration and format.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var cmd = new Command("info", "Print a model's configuration.") { model };
        cmd.SetAction(r =>
        {
            // Headers only: info must not read (or, for fp32 files, widen) gigabytes of weights to print a config.
            var m = ModelLoader.Describe(r.GetValue(model));
            var c = m.Config;
            Console.WriteLine($"model          {Path.GetFullPath(m.Path)}");
            Console.WriteLine($"format         {m.Format}");
            Console.WriteLine($"dim            {c.Dim}");
            Console.WriteLine($"hidden_dim     {c.HiddenDim}");
            Console.WriteLine($"layers         {c.Layers}");
            Console.WriteLine($"heads          {c.Heads} (kv heads {c.KvHeads}, head size {c.HeadDim})");
            Console.WriteLine($"vocab          {c.VocabSize}");
            Console.WriteLine($"max_seq_len    {c.MaxSeqLen}");
            Console.WriteLine($"norm_eps       {c.NormEps:G}");
            Console.WriteLine($"rope           theta {c.RopeTheta:G}, {(c.RopeLayout == Model.RopeLayout.Interleaved ? "interleaved pairs" : "rotate_half")}{(c.RopeScaling is { } s ? $", llama3 scaling factor {s.Factor:G} (low {s.LowFreqFactor:G}, high {s.HighFreqFactor:G}, original {s.OriginalMaxPositionEmbeddings})" : "")}");
            Console.WriteLine($"classifier     {(c.TiedEmbeddings ? "tied to the token embedding" : "separate")}");
            Console.WriteLine($"parameters     {c.ParameterCount:N0}");
            Console.WriteLine($"tokenizer      {(m.Tokenizer is null ? "none found" : m.Tokenizer.GetType().Name)}");
            Console.WriteLine($"neurons        {c.Layers} x {c.HiddenDim} = {(long)c.Layers * c.HiddenDim:N0} MLP activations per position");
            return 0;
        });
        return cmd;
    }
}
