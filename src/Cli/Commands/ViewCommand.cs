using System.CommandLine;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using NeuronTrace.Tracing.View;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>view</c>: one self-contained HTML page of a run's circuit (graph, dataset examples, sweep chart) plus graph.json.</summary>
public static class ViewCommand
{
    public static Command Create()
    {
        var run = new Option<string>("--run") { Description = "Trace run folder (written by trace).", Required = true };
        var (output, force) = CommonOptions.Output("HTML file to write (default: RUN/view.html); graph.json is written beside it. RUN/view.html and RUN/graph.json are replaced freely; any other existing file only with --force.",
            "Replace an existing --out file (and graph.json beside it); never a file of the run folder other than its view.html and graph.json.");
        var site = CommonOptions.Choice<NodeSite?>("--site", "Circuit site (default: mlp_act).", NodeSites.All.Select(s => (s.Name(), (NodeSite?)s)).ToArray());
        var method = CommonOptions.CircuitMethod("Circuit method (default: the run's first).");
        var task = TaskOptions.Task();
        task.Description = "Task whose clean prompts give each neuron's top-activating tokens (default: the task recorded in RUN/summary.json).";
        var model = CommonOptions.Model();
        model.Description = "Model for the dataset examples (default: the model recorded in the run; the bundled stories260K only when the run records none).";
        var device = CommonOptions.Device();
        var maxNodes = CommonOptions.Int("--max-nodes", "Draw at most this many circuit nodes (largest |score| first).", 60, 1, 10_000);
        var maxEdges = CommonOptions.Int("--max-edges", "Draw at most this many co-attribution edges (largest |weight| first).", 300, 0, 1_000_000);
        var examples = CommonOptions.Int("--examples", "Top-activating dataset tokens per neuron (mlp_act only; 0 = none, no model run).", 5, 0, 1000);
        var cmd = new Command("view", """
            Write one self-contained HTML page (no network access needed) showing a run's circuit: nodes laid out by layer
            and position from the end, sized and coloured by score; co-attribution edges (score product, NOT causal edge
            weights); hover tooltips with each neuron's top-activating tokens on the task's clean prompts; and the
            faithfulness/completeness sweep. Also writes graph.json (schema: docs/circuit-graph-schema.md).
            """)
        {
            run, output, force, site, method, task, model, device, maxNodes, maxEdges, examples,
        };
        cmd.SetAction(r =>
        {
            var inputs = RunInputs.Open(r.GetValue(run)!, r.GetValue(task), r.GetValue(model));
            string dir = inputs.Dir;
            var folder = inputs.Folder;
            var circuit = folder.ReadCircuit(r.GetValue(method)?.Name(), r.GetValue(site)?.Name());
            string outPath = r.GetValue(output) ?? Path.Combine(dir, "view.html");
            string jsonPath = Path.Combine(Path.GetDirectoryName(outPath) ?? "", "graph.json");
            (string, string) CheckOut() => OutputPaths.CheckPair(outPath, jsonPath, r.GetValue(force),
                [r.GetValue(task), folder.TaskPath, r.GetValue(model), folder.ModelPath], dir, ["view.html", "graph.json"]);
            var (htmlFull, jsonFull) = CheckOut();

            Dictionary<(int, int), List<NeuronExample>>? ex = null;
            string? taskPath = null;
            int? layers = null;
            if (r.GetValue(examples) > 0 && circuit.Site == NodeSite.MlpAct)
            {
                taskPath = inputs.TaskPath("pass --task or --examples 0");
                var loaded = inputs.LoadModel();
                layers = loaded.Config.Layers;
                // The dataset examples come from every line, training ones included.
                var pt = inputs.LoadTask(taskPath, loaded, heldOut: false, requireEqualLengths: false);
                // Positions are checked against the run's own task (another --task only supplies dataset examples).
                circuit.CheckFits(loaded.Config, loaded.Path, r.GetValue(task) is null ? pt.Pairs.Max(p => p.CleanIds.Length) : null, taskPath);
                using var llama = new Llama(loaded.Weights, CommonOptions.OpenBackend(r.GetValue(device)!));
                var shown = circuit.Nodes.OrderByDescending(n => Math.Abs(n.Score)).Take(r.GetValue(maxNodes)).Select(n => (n.Node.Layer, n.Node.Index));
                ex = NeuronExamples.Collect(llama, pt, loaded.RequireTokenizer(), shown, r.GetValue(examples));
            }
            var graph = CircuitGraph.Build(folder, circuit, r.GetValue(maxNodes), r.GetValue(maxEdges), ex, layers, taskPath);
            OutputPaths.WriteFiles(() => CheckOut(), (jsonFull, jsonPath, graph.ToJson()), (htmlFull, outPath, CircuitView.Render(graph)));
            Console.WriteLine($"{circuit.Method} {circuit.Site.Name()} circuit: {circuit.Nodes.Count} nodes, drew {graph.Nodes.Count} and {graph.Edges.Count} co-attribution edges");
            Console.WriteLine($"wrote {outPath} and {jsonPath}");
            return 0;
        });
        return cmd;
    }
}
