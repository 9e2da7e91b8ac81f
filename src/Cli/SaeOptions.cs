using System.CommandLine;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Sae;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Cli;

/// <summary><c>--sae PATH...</c> of <c>attribute</c> and <c>trace</c>: SAE folders whose feature and error nodes are scored at the SAE's own hook point.</summary>
internal static class SaeOptions
{
    public static Option<string[]> Sae() => new("--sae")
    {
        Description = "SAE folder(s), SAELens (cfg.json + sae_weights.safetensors) or Llama Scope (hyperparams.json + checkpoints/final.safetensors). Each SAE's feature and error nodes are scored at the hook point its own config names (e.g. blocks.2.hook_resid_post → resid layer 2). Repeat the option or give several paths.",
        AllowMultipleArgumentsPerToken = true,
        DefaultValueFactory = _ => [],
    };

    /// <summary>The bytes the SAEs will hold once loaded, from their configs alone: the memory plan counts them before they are read.</summary>
    public static long PlannedBytes(string[]? paths) => (paths ?? []).Sum(SparseAutoencoder.PlannedBytes);

    /// <summary>Loads every SAE and checks its hook point and width against the model (one-line errors naming the folder); after the plan.</summary>
    public static IReadOnlyList<SparseAutoencoder> Load(string[]? paths, LlamaConfig config)
    {
        return (paths ?? []).Select(p => TracedModel.LoadSae(p, config)).ToList();
    }

    /// <summary>The RQ1 table: k reaching the target faithfulness per basis, neuron circuits (per site) beside SAE circuits.</summary>
    public static void PrintBases(TraceResult trace, IReadOnlyList<SaeCircuitSummary> saes, double target)
    {
        Console.WriteLine($"\nk for {target:P0} faithfulness per basis:");
        var rows = new List<IReadOnlyList<string>>();
        foreach (var c in trace.Circuits)
            rows.Add([$"neurons", $"{c.Site.Name()} (all layers)", c.Method.Name(), c.TotalNodes.ToString(),
                c.AtTarget?.K.ToString() ?? "not reached", c.AtTarget is { } p ? $"{p.Faithfulness:F3}" : "-", "-"]);
        foreach (var s in saes)
            rows.Add([$"sae {s.Name}", $"{s.Site.Name()} L{s.Layer}", s.Method.Name(), s.TotalNodes.ToString(),
                s.AtTarget?.K.ToString() ?? "not reached", s.AtTarget is { } p ? $"{p.Faithfulness:F3}" : "-", s.ErrorNodesInCircuit.ToString()]);
        Tables.Print(["basis", "site", "method", "nodes", "k", "faithful", "error nodes"], rows);
    }
}
