using NeuronTrace.Formats;
using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Sharding;
using NeuronTrace.Runtime;

namespace NeuronTrace.Cli.Commands;

/// <summary>
/// <c>slurm trace</c>: a sharded trace as four Slurm jobs, each started when the one before succeeded
/// (<c>--dependency=afterok</c>): the attribution shards (a job array), their merge, the sweep shards (an array),
/// the merge into the run folder. Each array task runs <c>trace --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT</c>
/// and resumes from its checkpoint when requeued. <c>slurm status</c> says which shards finished.
/// </summary>
internal static class SlurmCommand
{
    const string PlanFile = "plan.json";
    static readonly string[] Stages = ["attribute", "merge-attribute", "sweep", "report"];
    // trace options the jobs set themselves
    static readonly string[] Reserved = ["--out", "-o", "--shard", "--scores", "--force"];

    public static Command Create() => new("slurm", "Run a trace as Slurm job arrays (sharded attribution and sweep, merged by dependent jobs).")
    {
        TraceJobs(), Status(),
    };

    static Command TraceJobs()
    {
        var shards = new Option<int>("--shards") { Description = "Array tasks per stage (1..4096).", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "The run folder the last job writes (must not exist).", Required = true };
        var work = new Option<string?>("--work") { Description = "Folder for the job scripts, shard folders and logs (default: OUT.slurm)." };
        var gpus = new Option<int>("--gpus-per-shard") { Description = "GPUs per array task (0..16; 0 = CPU). Slurm sets CUDA_VISIBLE_DEVICES, so pass --device cuda to trace.", DefaultValueFactory = _ => 0 };
        var sbatch = new Option<string[]>("--sbatch") { Description = "An sbatch option for every job, e.g. --sbatch=--partition=gpu --sbatch=--time=4:00:00 (repeatable).", AllowMultipleArgumentsPerToken = false };
        var submit = new Option<bool>("--submit") { Description = "Submit the jobs with sbatch (otherwise only write the scripts and submit.sh)." };
        var exe = new Option<string?>("--neurontrace") { Description = "The neurontrace command the jobs run (default: this one)." };
        var cmd = new Command("trace", """
            Write (and with --submit, submit) a sharded trace as Slurm jobs. Every option not listed here is passed to
            `neurontrace trace` (e.g. --model, --task, --method, --device). Logs go to WORK/logs, one per shard.
            """)
        { shards, output, work, gpus, sbatch, submit, exe };
        cmd.TreatUnmatchedTokensAsErrors = false;
        cmd.SetAction(r =>
        {
            int n = r.GetValue(shards);
            if (n is < 1 or > ShardSlice.MaxCount) throw new UsageException($"--shards {n}: must be in 1..{ShardSlice.MaxCount}");
            int g = r.GetValue(gpus);
            if (g is < 0 or > 16) throw new UsageException($"--gpus-per-shard {g}: must be in 0..16");
            var sbatchOptions = r.GetValue(sbatch) ?? [];
            foreach (var o in sbatchOptions)
                if (!o.StartsWith("--", StringComparison.Ordinal) || o.Contains('\n'))
                    throw new UsageException($"--sbatch {ErrorText.Quote(o)}: give one long sbatch option, e.g. --sbatch=--partition=gpu");
            var traceArgs = r.UnmatchedTokens.ToArray();
            if (traceArgs.FirstOrDefault(a => Reserved.Contains(a.Split('=')[0])) is { } taken)
                throw new UsageException($"slurm trace sets {ErrorText.Quote(taken)} of each job itself; give the run folder as --out");
            var check = NeuronTraceCli.CreateRoot().Parse(["trace", .. traceArgs, "--out", "x"]);
            if (check.Errors.Count > 0) throw new UsageException($"trace options: {check.Errors[0].Message}");

            string run = Path.GetFullPath(r.GetValue(output)!);
            if (Directory.Exists(run) || File.Exists(run)) throw new UsageException($"--out {r.GetValue(output)} exists; the last job writes a new run folder there");
            string dir = Path.GetFullPath(r.GetValue(work) ?? run + ".slurm");
            if (Directory.Exists(dir) && File.Exists(Path.Combine(dir, PlanFile)))
                throw new UsageException($"--work {dir} already holds a submitted plan; give another (or delete it)");
            Directory.CreateDirectory(Path.Combine(dir, "logs"));
            string nt = r.GetValue(exe) ?? ThisCommand();

            string Shard(string stage) => Path.Combine(dir, stage, "shard-$SLURM_ARRAY_TASK_ID");
            string ShardList(string stage) => string.Join(" ", Enumerable.Range(0, n).Select(i => Quote(Path.Combine(dir, stage, $"shard-{i}"))));
            string merged = Path.Combine(dir, "attribute", "merged");
            string trace = $"{nt} trace {string.Join(" ", traceArgs.Select(Quote))}";
            string slice = "--shard \"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT\"";
            var bodies = new Dictionary<string, string>
            {
                ["attribute"] = $"exec {trace} {slice} --out \"{Shard("attribute")}\"",
                ["merge-attribute"] = $"exec {nt} merge {ShardList("attribute")} --out {Quote(merged)} --force",
                ["sweep"] = $"exec {trace} {slice} --scores {Quote(merged)} --out \"{Shard("sweep")}\"",
                ["report"] = $"{nt} merge {ShardList("sweep")} --out {Quote(run)}\n{nt} slurm status {Quote(dir)}",
            };
            foreach (var stage in Stages)
            {
                bool array = stage is "attribute" or "sweep";
                var sb = new StringBuilder("#!/bin/bash\n");
                sb.Append($"#SBATCH --job-name=nt-{stage}\n");
                if (array)
                {
                    sb.Append($"#SBATCH --array=0-{n - 1}\n#SBATCH --output={dir}/logs/{stage}-%a.log\n");
                    // pre-emption: SIGTERM to the shard (exec'd as the batch shell) 120 s ahead; it checkpoints and exits
                    sb.Append("#SBATCH --signal=B:TERM@120\n");
                    if (g > 0) sb.Append($"#SBATCH --ntasks=1\n#SBATCH --gpus-per-task={g}\n");
                }
                else sb.Append($"#SBATCH --output={dir}/logs/{stage}.log\n");
                foreach (var o in sbatchOptions) sb.Append($"#SBATCH {o}\n");
                sb.Append("set -euo pipefail\n").Append(bodies[stage]).Append('\n');
                OutputFiles.WriteText(Path.Combine(dir, stage + ".sbatch"), sb.ToString());
            }
            var submitSh = new StringBuilder("#!/bin/bash\n# Submits the four jobs, each after the previous one succeeded.\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n");
            submitSh.Append("a=$(sbatch --parsable attribute.sbatch)\n");
            submitSh.Append("m=$(sbatch --parsable --kill-on-invalid-dep=yes --dependency=afterok:${a%%;*} merge-attribute.sbatch)\n");
            submitSh.Append("s=$(sbatch --parsable --kill-on-invalid-dep=yes --dependency=afterok:${m%%;*} sweep.sbatch)\n");
            submitSh.Append("r=$(sbatch --parsable --kill-on-invalid-dep=yes --dependency=afterok:${s%%;*} report.sbatch)\n");
            submitSh.Append("echo \"attribute ${a%%;*} merge-attribute ${m%%;*} sweep ${s%%;*} report ${r%%;*}\" | tee jobs.txt\n");
            OutputFiles.WriteText(Path.Combine(dir, "submit.sh"), submitSh.ToString());
            OutputFiles.WriteText(Path.Combine(dir, PlanFile), JsonSerializer.Serialize(new { shards = n, run }));
            Console.WriteLine($"wrote {dir}/ (attribute.sbatch, merge-attribute.sbatch, sweep.sbatch, report.sbatch, submit.sh)");
            if (!r.GetValue(submit))
            {
                Console.WriteLine($"submit with: bash {Path.Combine(dir, "submit.sh")}");
                return 0;
            }
            string ids = RunSubmit(dir);
            Console.WriteLine($"submitted jobs: {ids}; logs in {dir}/logs; progress: neurontrace slurm status {dir}");
            return 0;
        });
        return cmd;
    }

    static Command Status()
    {
        var work = new Argument<string>("work") { Description = "The --work folder of `slurm trace`." };
        var cmd = new Command("status", "Which shards of a `slurm trace` finished, which stopped at a checkpoint, which did not start.") { work };
        cmd.SetAction(r =>
        {
            string dir = r.GetValue(work)!;
            string plan = Path.Combine(dir, PlanFile);
            if (!File.Exists(plan)) throw new UsageException($"{dir}: no {PlanFile} (not a folder written by slurm trace)");
            using var doc = JsonDocument.Parse(File.ReadAllText(plan));
            int n = doc.RootElement.GetProperty("shards").GetInt32();
            string run = doc.RootElement.GetProperty("run").GetString()!;
            bool all = true;
            foreach (var stage in new[] { "attribute", "sweep" })
            {
                var finished = new List<int>();
                var lines = new List<string>();
                for (int i = 0; i < n; i++)
                {
                    var m = ShardManifest.TryRead(Path.Combine(dir, stage, $"shard-{i}"));
                    if (m is { Complete: true }) finished.Add(i);
                    else lines.Add(m is null ? $"  shard {i}: not started" : $"  shard {i}: checkpoint at {m.Done} of {m.End - m.First}");
                }
                all &= finished.Count == n;
                Console.WriteLine($"{stage}: {finished.Count} of {n} shards finished");
                foreach (var l in lines) Console.WriteLine(l);
            }
            bool done = File.Exists(Path.Combine(run, "summary.json"));
            Console.WriteLine(done ? $"run folder: {run}" : $"run folder: not written yet ({run})");
            return all && done ? 0 : 1;
        });
        return cmd;
    }

    static string RunSubmit(string dir)
    {
        var psi = new ProcessStartInfo("bash", [Path.Combine(dir, "submit.sh")]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi) ?? throw new IOException("could not start bash to run sbatch");
        string stdout = p.StandardOutput.ReadToEnd(), stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new IOException($"sbatch failed (exit {p.ExitCode}): {ErrorText.Quote(stderr.Trim().Split('\n').LastOrDefault() ?? "")}; the scripts are in {dir}");
        return stdout.Trim();
    }

    /// <summary>How this process was started: the apphost, or <c>dotnet neurontrace.dll</c>.</summary>
    static string ThisCommand()
    {
        string process = Environment.ProcessPath ?? "neurontrace";
        string dll = typeof(SlurmCommand).Assembly.Location;
        return Path.GetFileNameWithoutExtension(process) == "dotnet" ? $"{Quote(process)} {Quote(dll)}" : Quote(process);
    }

    static string Quote(string s) => s.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,+".Contains(c)) ? s : "'" + s.Replace("'", "'\\''") + "'";
}
