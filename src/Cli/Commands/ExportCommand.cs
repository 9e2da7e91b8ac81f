using System.CommandLine;
using System.Text.Json.Nodes;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Tasks;
using NeuronTrace.Tracing.View;
using NeuronTrace.Runtime;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>export</c>: a run's mlp_act circuit on one prompt as the attribution-graph JSON circuit-tracer and Neuronpedia open.</summary>
internal static class ExportCommand
{
    public static Command Create()
    {
        var run = new Option<string>("--run") { Description = "Trace run folder (written by trace).", Required = true };
        var format = new Option<string>("--format") { Description = "neuronpedia (the graph JSON to upload) or circuit-tracer (the same JSON, named SLUG.json, with graph-metadata.json beside it for its local viewer).", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "Graph JSON file to write.", Required = true };
        var force = new Option<bool>("--force") { Description = "Replace an existing --out file (and, for circuit-tracer, update graph-metadata.json beside it)." };
        var method = new Option<string?>("--method") { Description = "Whose mlp_act circuit to export (default: the run's first method)." };
        var line = new Option<int?>("--line") { Description = "Task file line of the prompt to show (default: the run's first evaluation example)." };
        var maxNodes = new Option<int>("--max-nodes") { Description = "Export at most this many circuit neurons (largest |score| first), 1 to 100000.", DefaultValueFactory = _ => 200 };
        var examples = new Option<int>("--examples") { Description = "Top-activating task tokens named in each neuron's label (clerp), 0 to 50.", DefaultValueFactory = _ => 3 };
        var slug = new Option<string?>("--slug") { Description = "Graph slug (default: the --out file name without .json; circuit-tracer requires the two to agree)." };
        var scan = new Option<string?>("--scan") { Description = "Neuronpedia scan (model id) to record (default: the model's file or folder name)." };
        var task = TaskOptions.Task();
        task.Description = "Task holding the prompt (default: the task recorded in RUN/summary.json).";
        var model = CommonOptions.Model();
        model.Description = "Model (default: the model recorded in the run).";
        var device = CommonOptions.Device();
        var cmd = new Command("export", """
            Export a run's mlp_act circuit on one prompt as an attribution graph that circuit-tracer's viewer and
            Neuronpedia open (schema: docs/circuit-graph-schema.md ("Exported attribution graph")): embedding nodes for every prompt token, the circuit
            neurons at their positions (from the start), the answer's logit node, and the causal edges of RUN/edges.csv
            (written by `edges`; without it the graph has no links).
            """)
        {
            run, format, output, force, method, line, maxNodes, examples, slug, scan, task, model, device,
        };
        cmd.SetAction(r =>
        {
            string fmt = r.GetValue(format)!;
            if (fmt is not ("neuronpedia" or "circuit-tracer")) throw new UsageException($"unknown --format {ErrorText.Quote(fmt)} (neuronpedia or circuit-tracer)");
            int top = r.GetValue(maxNodes), nExamples = r.GetValue(examples);
            if (top is < 1 or > 100_000) throw new UsageException($"--max-nodes {top}: must be 1 to 100000");
            if (nExamples is < 0 or > 50) throw new UsageException($"--examples {nExamples}: must be 0 to 50");
            string outPath = r.GetValue(output)!;
            string stem = Path.GetFileNameWithoutExtension(outPath);
            string graphSlug = r.GetValue(slug) ?? stem;
            if (graphSlug.Length == 0 || graphSlug.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')))
                throw new UsageException($"--slug {ErrorText.Quote(graphSlug)}: use letters, digits, '-', '_' and '.' only");
            if (fmt == "circuit-tracer" && (graphSlug != stem || !outPath.EndsWith(".json", StringComparison.Ordinal)))
                throw new UsageException($"circuit-tracer's viewer loads SLUG.json: name --out {graphSlug}.json (or drop --slug)");

            string dir = r.GetValue(run)!;
            var folder = RunFolder.Open(dir);
            var circuit = folder.ReadCircuit(r.GetValue(method), "mlp_act");
            string taskPath = r.GetValue(task) is { } t ? TaskOptions.TaskPath(t)
                : folder.TaskPath is { } rec && File.Exists(rec) ? rec
                : throw new UsageException($"the task recorded in {dir}/summary.json ({folder.TaskPath ?? "none"}) is not here; pass --task");
            string metaPath = Path.Combine(Path.GetDirectoryName(outPath) ?? "", NeuronpediaGraph.MetadataFile);
            string?[] inputs = [r.GetValue(task), taskPath, r.GetValue(model), folder.ModelPath];
            string CheckOut() => OutputPaths.CheckFile(outPath, r.GetValue(force), inputs, dir, []);
            string outFull = CheckOut();
            // graph-metadata.json lists every graph of its folder: it is updated (other slugs kept), never refused for existing.
            string metaFull = Path.GetFullPath(metaPath);
            if (fmt == "circuit-tracer" && (metaFull == outFull || Directory.Exists(metaFull)))
                throw new UsageException($"{metaPath} (written beside --out) {(metaFull == outFull ? "cannot be --out" : "is a folder")}");

            var loaded = CommonOptions.LoadModel(folder.ModelToLoad(r.GetValue(model)));
            var tokenizer = loaded.RequireTokenizer();
            var pt = PromptTask.Load(taskPath, tokenizer, requireEqualLengths: false);
            PromptPair pair = r.GetValue(line) is { } want
                ? pt.Pairs.FirstOrDefault(p => p.Line == want) ?? throw new UsageException($"--line {want}: not an example line of {taskPath}")
                : (r.GetValue(task) is null ? folder.HeldOut(pt, taskPath) : pt).Pairs[0];
            circuit.CheckFits(loaded.Config, loaded.Path);

            string edgesPath = Path.Combine(dir, RunFormat.EdgesFile);
            var edges = File.Exists(edgesPath) ? EdgeCsv.Read(edgesPath) : null;
            if (edges is null) Console.Error.WriteLine($"no {edgesPath}: the graph has no links (run `neurontrace edges --run {dir}` first for causal edges)");

            using var traced = TracedModel.Create(loaded, CommonOptions.OpenBackend(r.GetValue(device)!));
            var exported = traced.ExportGraph(circuit, pt, pair, new GraphExportOptions
            {
                Slug = graphSlug, Scan = r.GetValue(scan), MaxNodes = top, Examples = nExamples, Edges = edges,
                NodeThreshold = TargetOf(folder) ?? 0.8, Generator = "neurontrace", GeneratorVersion = RunInfo.ToolVersion, Source = Path.GetFullPath(dir),
            });
            var graph = exported.Json;

            if (fmt == "circuit-tracer")
            {
                JsonNode? existing = File.Exists(metaFull) ? JsonNode.Parse(JsonFields.ReadObject(metaFull).GetRawText()) : null;
                OutputPaths.WriteFiles(() => CheckOut(),
                    (outFull, outPath, NeuronpediaGraph.ToJson(graph)), (metaFull, metaPath, NeuronpediaGraph.MetadataIndex(graph, existing)));
                Console.WriteLine($"wrote {outPath} and {metaPath}");
            }
            else
            {
                OutputPaths.WriteFiles(() => CheckOut(), (outFull, outPath, NeuronpediaGraph.ToJson(graph)));
                Console.WriteLine($"wrote {outPath}");
            }
            Console.WriteLine($"{circuit.Method} mlp_act circuit on line {pair.Line}: {exported.Neurons} neurons, {exported.Links} links, {exported.Tokens} tokens");
            return 0;
        });
        return cmd;
    }


    /// <summary>The faithfulness target the run recorded (summary.json options.target), if any.</summary>
    static double? TargetOf(RunFolder folder)
    {
        var root = JsonFields.ReadObject(folder.SummaryPath);
        return JsonFields.Get(root, "options") is { ValueKind: System.Text.Json.JsonValueKind.Object } o
            ? JsonFields.OptionalNumber(folder.SummaryPath, o, "target", "options.") : null;
    }
}
