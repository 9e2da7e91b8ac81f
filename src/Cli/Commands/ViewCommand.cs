using System.CommandLine;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using NeuronTrace.Tracing.View;
using NeuronTrace.Runtime;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>view</c>: one self-contained HTML page of a run's circuit (graph, dataset examples, sweep chart) plus graph.json.</summary>
internal static class ViewCommand
{
    public static Command Create()
    {
        var run = new Option<string>("--run") { Description = "Trace run folder (written by trace).", Required = true };
        var (output, force) = CommonOptions.Output("HTML file to write (default: RUN/view.html); graph.json is written beside it. RUN/view.html and RUN/graph.json are replaced freely; any other existing file only with --force.",
            "Replace an existing --out file (and graph.json beside it); never a file of the run folder other than its view.html and graph.json.");
        var site = CommonOptions.Choice<NodeSite?>("--site", "Circuit site (default: mlp_act).", NodeSites.All.Select(s => (s.Name(), (NodeSite?)s)).ToArray());
        var method = CommonOptions.CircuitMethod("Circuit method (default: the run's first).");
        var task = TaskOptions.Task();
        task.Description = "Task whose prompt labels the position axis and whose clean prompts give each neuron's top-activating tokens (default: the task recorded in RUN/summary.json).";
        var model = CommonOptions.Model();
        model.Description = "Model whose tokenizer splits the drawn prompt and which runs the dataset examples (default: the model recorded in the run; the bundled stories260K only when the run records none).";
        var device = CommonOptions.Device();
        var maxNodes = CommonOptions.Int("--max-nodes", "Draw at most this many circuit nodes (largest |score| first).", 60, 1, 10_000);
        var maxEdges = CommonOptions.Int("--max-edges", "Draw at most this many edges: causal ones by largest |final_attr|, else co-attribution ones by largest |weight|.", 300, 0, 1_000_000);
        var edges = new Option<string?>("--edges") { Description = "Causal edges to draw (written by `neurontrace edges`; default: RUN/edges.csv when present, else co-attribution edges, labelled as such)." };
        var promptLine = CommonOptions.OptionalInt("--prompt-line", "Task line (an example line of the task) whose clean prompt's tokens label the position axis (default: the first of the longest prompts).", 1, int.MaxValue);
        var examples = CommonOptions.Int("--examples", "Top-activating dataset tokens per neuron (mlp_act only; 0 = none: the model is then only loaded for its tokenizer).", 5, 0, 1000);
        var cmd = new Command("view", """
            Write one self-contained HTML page (no network access needed) showing a run's circuit: nodes laid out by layer
            and by the tokens of a prompt of the run's task (start to end, the answers shown), each labelled with its
            layer/neuron and top-activating tokens; the causal edges of RUN/edges.csv (or --edges) with their weights, or
            without one co-attribution edges (score product, NOT causal, labelled so); a searchable, sortable table of the
            circuit linking to each neuron's dataset examples; and the faithfulness/completeness sweep with its random
            control. Also writes graph.json (schema: docs/circuit-graph-schema.md).
            """)
        {
            run, output, force, site, method, task, model, device, maxNodes, maxEdges, edges, promptLine, examples,
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
                [r.GetValue(task), folder.TaskPath, r.GetValue(model), folder.ModelPath, r.GetValue(edges)], dir, ["view.html", "graph.json"]);
            var (htmlFull, jsonFull) = CheckOut();

            bool wantExamples = r.GetValue(examples) > 0 && circuit.Site == NodeSite.MlpAct;
            // Without a task here the axis falls back to positions from the end, unless examples or --prompt-line need it.
            string? taskPath = wantExamples || r.GetValue(promptLine) is not null || r.GetValue(task) is not null || folder.TaskPath is { } rec && File.Exists(rec)
                ? inputs.TaskPath("pass --task or --examples 0") : null;
            var view = new RunViewOptions { MaxNodes = r.GetValue(maxNodes), MaxEdges = r.GetValue(maxEdges), TaskPath = taskPath, PromptLine = r.GetValue(promptLine) };
            if (taskPath is not null)
            {
                // The model's tokenizer splits the drawn prompt into the axis tokens; its forward pass runs only for examples.
                var loaded = inputs.LoadModel();
                // The dataset examples come from every line, training ones included.
                var pt = inputs.LoadTask(taskPath, loaded, heldOut: false, requireEqualLengths: false);
                // Positions are checked against the run's own task (another --task only supplies dataset examples).
                circuit.CheckFits(loaded.Config, loaded.Path, r.GetValue(task) is null ? pt.Pairs.Max(p => p.CleanIds.Length) : null, taskPath);
                if (r.GetValue(promptLine) is { } line && pt.Pairs.All(p => p.Line != line))
                    throw new UsageException($"--prompt-line {line}: {taskPath} has no example on that line");
                view = view with { Task = pt, Tokenizer = loaded.RequireTokenizer(), Layers = loaded.Config.Layers };
                if (wantExamples)
                {
                    using var traced = TracedModel.Create(loaded, CommonOptions.OpenBackend(r.GetValue(device)!));
                    var shown = circuit.Nodes.OrderByDescending(n => Math.Abs(n.Score)).Take(r.GetValue(maxNodes)).Select(n => (n.Node.Layer, n.Node.Index));
                    view = view with { Examples = traced.TopActivations(pt, shown, r.GetValue(examples)) };
                }
            }
            // RUN/edges.csv holds mlp_act edges: another site's circuit draws co-attribution edges unless --edges insists.
            string? edgesPath = r.GetValue(edges)
                ?? (circuit.Site == NodeSite.MlpAct && File.Exists(Path.Combine(dir, "edges.csv")) ? Path.Combine(dir, "edges.csv") : null);
            if (edgesPath is not null)
            {
                if (!File.Exists(edgesPath)) throw new UsageException($"--edges: no file {ErrorText.Quote(edgesPath)}");
                if (circuit.Site != NodeSite.MlpAct) throw new UsageException($"edges.csv holds mlp_act edges; the {circuit.Site.Name()} circuit cannot show them (pass --site mlp_act)");
            }
            var page = RunView.Render(folder, circuit, view with { EdgesPath = edgesPath });
            var (graph, html, causal) = (page.Graph, page.Html, page.CausalEdges);
            OutputPaths.WriteFiles(() => CheckOut(), (jsonFull, jsonPath, graph.ToJson()), (htmlFull, outPath, html));
            Console.WriteLine(causal is null
                ? $"{circuit.Method} {circuit.Site.Name()} circuit: {circuit.Nodes.Count} nodes, drew {graph.Nodes.Count} and {graph.Edges.Count} co-attribution edges (no edges.csv)"
                : $"{circuit.Method} {circuit.Site.Name()} circuit: {circuit.Nodes.Count} nodes, drew {graph.Nodes.Count} and the causal edges of {edgesPath} among them ({causal.Count} in the file)");
            Console.WriteLine($"wrote {outPath} and {jsonPath}");
            return 0;
        });
        return cmd;
    }
}
