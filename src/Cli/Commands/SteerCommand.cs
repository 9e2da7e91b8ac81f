using System.CommandLine;
using System.Globalization;
using NeuronTrace.Model;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Steering;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli.Commands;

/// <summary>
/// <c>steer</c>: edit <c>mlp_act</c> neurons of a prompt (scale, set, or copy from a source prompt) and compare the next
/// tokens and greedy continuations; or, with <c>--run</c>, the interchange flip rate of a run's circuit versus random neurons.
/// </summary>
internal static class SteerCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        var prompt = new Option<string?>("--prompt", "-p") { Description = "Prompt to steer (BOS is prepended)." };
        var edit = new Option<string[]>("--edit", "-e")
        {
            Description = "Neuron edit, repeatable: L<layer>/N<neuron>[@P<pos-from-end>|@A<abs-pos>|@all]=x<mult> (scale), =c<value> (set) or =src (value from --source at the same position from the end). No position = @P0, the last token.",
            AllowMultipleArgumentsPerToken = false,
        };
        var source = new Option<string?>("--source") { Description = "Source prompt for =src edits." };
        var top = CommonOptions.Int("--top", "Next-token candidates to list.", 10, 1, 1000);
        var steps = CommonOptions.Int("--steps", "Tokens of greedy continuation, before and after the edits.", 20, 0, 100_000, aliases: "-n");
        var run = new Option<string?>("--run") { Description = "Flip-rate mode: a trace run folder whose mlp_act circuit is patched from the patch prompts into the clean prompts." };
        var task = TaskOptions.Task();
        var method = CommonOptions.CircuitMethod("Flip-rate mode: the run's circuit of this method (default: the first).");
        var k = CommonOptions.OptionalInt("--k", "Flip-rate mode: patch only the top k nodes of the circuit (default: all of them).", 1, int.MaxValue);
        var seed = new Option<int>("--seed") { Description = "Flip-rate mode: seed of the random-neuron control.", DefaultValueFactory = _ => 0 };
        var cmd = new Command("steer", """
            Steer mlp_act neurons (down_proj inputs). With --prompt and --edit: run the prompt with and without the edits and
            print the top next tokens and both greedy continuations (edits re-applied at the same prompt positions every
            step; generated positions are never edited). With --run: for every line of the task (default: the task the run
            recorded), copy the run's mlp_act circuit neurons from the patch prompt into the clean prompt's run and count how
            often the patch answer overtakes the clean answer, beside the same number of random neurons (on the run's own
            task only the held-out examples count).
            """)
        {
            model, device, prompt, edit, source, top, steps, run, task, method, k, seed,
        };
        cmd.SetAction(r =>
        {
            bool flip = r.GetValue(run) is not null;
            // Options of the other mode would be silently ignored: refuse them.
            foreach (var (opt, runMode) in new (Option, bool)[] { (top, false), (steps, false), (source, false), (task, true), (method, true), (k, true), (seed, true) })
                if (runMode != flip && r.GetResult(opt) is { Implicit: false })
                    throw new UsageException(runMode ? $"{opt.Name} applies to --run mode only" : $"{opt.Name} applies to --prompt mode only, not --run");
            if (r.GetValue(run) is { } runDir) return FlipMode(r, runDir, model, device, task, method, k, seed, prompt, edit);
            string? text = r.GetValue(prompt);
            var specs = r.GetValue(edit) ?? [];
            if (text is null) throw new UsageException("steer needs --prompt with --edit, or --run for the flip rate");
            if (specs.Length == 0) throw new UsageException("steer needs at least one --edit (e.g. --edit L3/N17=x2)");
            var edits = specs.Select(s =>
            {
                try { return NeuronEdit.Parse(s); }
                catch (FormatException e) { throw new UsageException(e.Message); }
            }).ToList();
            string? src = r.GetValue(source);
            if (edits.Any(e => e.Mode == EditMode.FromSource) && src is null) throw new UsageException("an =src edit needs --source");
            if (src is not null && edits.All(e => e.Mode != EditMode.FromSource)) Console.Error.WriteLine("note: --source is unused (no =src edit)");

            var loaded = CommonOptions.LoadModel(r.GetValue(model));
            var tok = loaded.RequireTokenizer();
            using var traced = TracedModel.Create(loaded, CommonOptions.OpenBackend(r.GetValue(device)!));
            var ids = tok.Encode(text, addBos: true); // for the printout; Steer tokenizes the same way
            SteeringResult res;
            try { res = traced.Steer(text, edits, r.GetValue(top), r.GetValue(steps), src); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }

            Console.WriteLine($"prompt: {ids.Length} tokens; {edits.Count} edit(s) at mlp_act, {res.EditedValues} value(s) changed: {string.Join(" ", edits)}");
            Console.WriteLine($"\nnext token (position {ids.Length}):");
            Tables.Print(["rank", "before", "logit", "prob", "after", "logit", "prob"],
                Enumerable.Range(0, Math.Max(res.Before.Count, res.After.Count)).Select(i => (IReadOnlyList<string>)
                [
                    (i + 1).ToString(CultureInfo.InvariantCulture),
                    .. Cells(res.Before, i), .. Cells(res.After, i),
                ]));
            Console.WriteLine($"\ncontinuation before: {text}{Decode(tok, ids[^1], res.ContinuationBefore)}");
            Console.WriteLine($"continuation after:  {text}{Decode(tok, ids[^1], res.ContinuationAfter)}");
            return 0;
        });
        return cmd;
    }

    static string[] Cells(IReadOnlyList<TokenScore> list, int i) => i < list.Count
        ? [Show(list[i].Piece ?? list[i].Id.ToString(CultureInfo.InvariantCulture)), list[i].Logit.ToString("F3", CultureInfo.InvariantCulture), list[i].Prob.ToString("P1", CultureInfo.InvariantCulture)]
        : ["", "", ""];

    static string Show(string piece) => "\"" + piece.Replace("\n", "\\n") + "\"";

    static string Decode(ITextTokenizer tok, int prev, IReadOnlyList<int> ids)
    {
        var sb = new System.Text.StringBuilder();
        foreach (int t in ids) { sb.Append(tok.Decode(prev, t)); prev = t; }
        return sb.ToString().Replace("\n", "\\n");
    }

    static int FlipMode(ParseResult r, string runDir, Option<string?> model, Option<string> device, Option<string?> task, Option<AttributionMethod?> method,
        Option<int?> k, Option<int> seed, Option<string?> prompt, Option<string[]> edit)
    {
        if (r.GetValue(prompt) is not null || (r.GetValue(edit)?.Length ?? 0) > 0)
            throw new UsageException("--run (flip rate) does not take --prompt or --edit");
        var inputs = RunInputs.Open(runDir, r.GetValue(task), r.GetValue(model));
        var circuit = inputs.Folder.ReadCircuit(r.GetValue(method)?.Name(), "mlp_act");
        int? top = r.GetValue(k);
        var nodes = circuit.Nodes.Take(top ?? circuit.Nodes.Count).Select(n => n.Node).ToList();
        if (nodes.Count == 0) throw new UsageException($"{runDir}: the {circuit.Method} mlp_act circuit is empty (no k reached the target); pass --k");
        string taskPath = inputs.TaskPath();
        var loaded = inputs.LoadModel();
        var pt = inputs.LoadTask(taskPath, loaded, heldOut: true, requireEqualLengths: true);
        string lines = inputs.TaskOption is null ? "the run's held-out examples" : "all lines";
        circuit.CheckFits(loaded.Config, loaded.Path, pt.Pairs.Max(p => p.CleanIds.Length), taskPath);
        if (top is null && nodes.Count * 2 >= circuit.TotalNodes)
            Console.Error.WriteLine($"note: the circuit holds {nodes.Count} of {circuit.TotalNodes} nodes, so the random control is nearly the same set; pass --k for a smaller circuit");
        using var traced = TracedModel.Create(loaded, CommonOptions.OpenBackend(r.GetValue(device)!));
        var rates = traced.FlipRate(pt, nodes, r.GetValue(seed));
        Console.WriteLine($"{pt.Name}: {rates.Lines} lines ({lines}); patching mlp_act neurons from the patch prompt into the clean run (interchange)");
        Console.WriteLine("flip = logit(patch answer) > logit(clean answer) after patching");
        Tables.Print(["neurons", "count", "flip rate"],
        [
            ["none (clean run)", "0", rates.BaselineRate.ToString("P1", CultureInfo.InvariantCulture)],
            [$"{circuit.Method} circuit (top {nodes.Count})", nodes.Count.ToString(CultureInfo.InvariantCulture), rates.CircuitRate.ToString("P1", CultureInfo.InvariantCulture)],
            [$"random (seed {r.GetValue(seed)})", rates.Nodes.ToString(CultureInfo.InvariantCulture), rates.RandomRate.ToString("P1", CultureInfo.InvariantCulture)],
        ]);
        return 0;
    }
}
