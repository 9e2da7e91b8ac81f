using System.CommandLine;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Edges;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>edges</c>: CLJA neuron-to-neuron edges among a run's mlp_act circuit nodes, and the edge sweep.</summary>
internal static class EdgesCommand
{
    public static Command Create()
    {
        var run = new Option<string>("--run") { Description = "Trace run folder (written by trace).", Required = true };
        var task = TaskOptions.Task();
        task.Description = "Task whose examples the edges are averaged over and the sweep evaluates (default: the run's evaluation examples of the task recorded in RUN/summary.json).";
        var model = CommonOptions.Model();
        model.Description = "Model (default: the model recorded in the run; the bundled stories260K only when the run records none).";
        var device = CommonOptions.Device();
        var method = CommonOptions.CircuitMethod("Whose mlp_act circuit to use (default: the run's first method).");
        var topNodes = CommonOptions.Int("--top-nodes", "Connect at most this many circuit nodes (largest |score| first).", 200, 1, 100_000);
        var chunk = CommonOptions.Int("--chunk", "Target neurons per multi-right-hand-side backward.", 50, 1, 4096);
        var (output, force) = CommonOptions.Output("Edge CSV to write (default: RUN/edges.csv); edge_sweep.csv is written beside it. RUN/edges.csv and RUN/edge_sweep.csv are replaced freely; any other existing file only with --force.",
            "Replace an existing --out file (and edge_sweep.csv beside it); never a file of the run folder other than its edges.csv and edge_sweep.csv.");
        var noEndpoints = new Option<bool>("--no-endpoint-edges") { Description = "Skip embedding -> neuron and neuron -> logit edges (the sweep then treats the lowest circuit layer as fed by the embeddings and the highest as feeding the logits)." };
        var relpAttention = TaskOptions.RelPAttention();
        var masks = CommonOptions.MasksPerForward();
        var sweepPathOption = CommonOptions.SweepPathOption();
        var cmd = new Command("edges", """
            Compute neuron-to-neuron edges (docs/method.md 6.2, "CLJA") among a trace run's mlp_act circuit nodes: for every
            layer pair src < tgt, the RelP Jacobian of each target neuron w.r.t. the source layer's neurons with the MLPs
            in between stopped (direct effect through attention and the residual stream), as the relative weight
            w = J*a_src/(a_tgt + eps) and the flow to the metric F = w*a_tgt*grad_tgt, averaged over the examples.
            Also embedding -> neuron and neuron -> logit edges. Writes edges.csv and edge_sweep.csv: the top p% of
            edges by |F| kept, a neuron kept iff it has a kept incoming and outgoing edge, evaluated by mean ablation.
            """)
        {
            run, task, model, device, method, topNodes, chunk, output, force, noEndpoints, relpAttention, masks, sweepPathOption,
        };
        cmd.SetAction(r =>
        {
            var inputs = RunInputs.Open(r.GetValue(run)!, r.GetValue(task), r.GetValue(model));
            string dir = inputs.Dir;
            var folder = inputs.Folder;
            var circuit = folder.ReadCircuit(r.GetValue(method)?.Name(), "mlp_act");
            var neurons = circuit.Nodes.OrderByDescending(n => Math.Abs(n.Score)).Take(r.GetValue(topNodes))
                .Select(n => EdgeEnd.Neuron(n.Node.Layer, n.Node.Position, n.Node.Index)).ToList();
            if (neurons.Count == 0) throw new UsageException($"the {circuit.Method} mlp_act circuit of {dir} has no nodes");

            string taskPath = inputs.TaskPath();
            var loaded = inputs.LoadModel();
            var examples = inputs.LoadTask(taskPath, loaded, heldOut: true, requireEqualLengths: false);
            circuit.CheckFits(loaded.Config, loaded.Path, examples.Pairs.Max(p => p.CleanIds.Length), taskPath);

            // Both outputs are checked before the (long) computation and written together at its end.
            if (!examples.IsPaired) throw new UsageException("the edge sweep needs paired prompts (its mean ablation uses the patch prompts)");
            string outPath = r.GetValue(output) ?? Path.Combine(dir, "edges.csv");
            string sweepPath = Path.Combine(Path.GetDirectoryName(outPath) ?? "", "edge_sweep.csv");
            (string, string) CheckOut() => OutputPaths.CheckPair(outPath, sweepPath, r.GetValue(force),
                [r.GetValue(task), taskPath, r.GetValue(model), loaded.Path], dir, ["edges.csv", "edge_sweep.csv"]);
            var (outFull, sweepFull) = CheckOut();
            Console.Error.WriteLine($"{circuit.Method} mlp_act circuit: {neurons.Count} nodes in layers {neurons.Min(n => n.Layer)}..{neurons.Max(n => n.Layer)}; {examples.Count} examples of {taskPath}");
            using var traced = TracedModel.Create(loaded, CommonOptions.OpenBackend(r.GetValue(device)!));
            using var bar = new ProgressBar();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var graph = traced.Edges(examples, neurons, new EdgeOptions
            {
                Chunk = r.GetValue(chunk), EndpointEdges = !r.GetValue(noEndpoints), Rules = r.GetValue(relpAttention)!,
            }, bar);
            double edgeSeconds = clock.Elapsed.TotalSeconds;
            var sweep = traced.EvaluateEdges(graph, examples, r.GetValue(masks), r.GetValue(sweepPathOption), bar);
            OutputPaths.WriteFiles(() => CheckOut(), (outFull, outPath, graph.ToCsv()), (sweepFull, sweepPath, EdgeSweep.ToCsv(sweep)));

            int neuronEdges = graph.NeuronEdges.Count();
            Console.WriteLine($"{graph.Edges.Count} edges ({neuronEdges} neuron -> neuron, {graph.Edges.Count - neuronEdges} embedding/logit) among {neurons.Count} neurons, metric {graph.Metric}, {edgeSeconds:F1} s");
            Tables.Print(["edges %", "edges", "neurons", "faithful", "complete"],
                sweep.Select(p => (IReadOnlyList<string>)[$"{p.Percent:G4}", p.EdgesKept.ToString(), p.NodesKept.ToString(), $"{p.Faithfulness:F3}", $"{p.Completeness:F3}"]));
            Console.WriteLine($"wrote {outPath} and {sweepPath}");
            return 0;
        });
        return cmd;
    }
}
