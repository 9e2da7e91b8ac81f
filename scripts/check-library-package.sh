#!/usr/bin/env bash
# Packs the libraries (Runtime, Model, Formats, Tracing, Api) with a one-off version, builds samples/Consumer against the
# packed NeuronTrace.Api package (a PackageReference, not a project reference) in a temporary folder, runs it, and checks
# that it prints what the CLI computes for the same run: the top-20 mlp_act RelP scores of `trace`'s attribution half and
# the faithfulness of k = 20 in `trace`'s sweep (41 log-spaced k points over the bundled task's 9460 mlp_act nodes
# include 20). The sample stays within 20 lines of code. CI runs this after the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
code_lines="$(grep -cvE '^[[:space:]]*(//.*)?$' samples/Consumer/Program.cs)"
[ "$code_lines" -le 20 ] || { echo "check-library-package.sh: samples/Consumer/Program.cs has $code_lines lines of code; the sample promises at most 20" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
version="0.2.0-check.$(date +%s)"
# Quiet on success; on failure the build's own errors, not a bare exit code.
quiet() { "$@" >"$work/log" 2>&1 || { grep -E ': error |error' "$work/log" | sort -u | head -20 >&2; echo "check-library-package.sh: failed: $*" >&2; exit 1; }; }
for p in Runtime Model Formats Tracing Api; do
  quiet dotnet pack "src/$p" -c Release -o "$work/packages" -p:Version="$version" -v q -nologo
done
# What a package promises a user: one version, real metadata, XML docs and pdbs beside each dll, and (in the facade's
# package) every kernel's PTX, the bundled model, the bundled tasks and the bf16 CPU kernel (libneurontrace_cpu.so) as
# content files, so the defaults work from NuGet.
/usr/bin/python3 - "$work/packages" "$version" <<'PY'
import glob, os, re, sys, zipfile
folder, version = sys.argv[1], sys.argv[2]
kernels = {os.path.basename(f)[:-3] for f in glob.glob("native/kernels/*.cu")}
tasks = {os.path.basename(f) for f in glob.glob("data/tasks/*.jsonl")}
for name in ["Runtime", "Model", "Formats", "Tracing", "Api"]:
    pkg = f"NeuronTrace.{name}"
    with zipfile.ZipFile(os.path.join(folder, f"{pkg}.{version}.nupkg")) as z:
        files = set(z.namelist())
        nuspec = z.read(f"{pkg}.nuspec").decode("utf-8")
        def field(tag):
            m = re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", nuspec, re.S)
            return m.group(1).strip() if m else ""
        assert field("version") == version, f"{pkg}: version {field('version')}, expected {version}"
        assert field("description") and field("description") != "Package Description", f"{pkg}: no description"
        assert field("license") == "MIT" and field("tags") and field("readme") == "README.md" and "README.md" in files, f"{pkg}: licence, tags or readme missing"
        assert '<repository type="git"' in nuspec, f"{pkg}: no repository element"
        for ext in ("dll", "xml", "pdb"):
            assert f"lib/net10.0/{pkg}.{ext}" in files, f"{pkg}: lib/net10.0/{pkg}.{ext} is not in the package"
        if name == "Api":
            content = {f[len("contentFiles/any/any/"):] for f in files if f.startswith("contentFiles/any/any/")}
            wanted = ({f"ptx/{k}.ptx" for k in kernels} | {f"data/tasks/{t}" for t in tasks}
                      | {"models/stories260K/stories260K.bin", "models/stories260K/tok512.bin", "libneurontrace_cpu.so"})
            missing = sorted(wanted - content)
            assert not missing, f"{pkg}: content files missing: {missing}"
print(f"library packages {version}: metadata, XML docs, pdbs, {len(kernels)} kernels' PTX, the bundled model, {len(tasks)} tasks and the bf16 CPU kernel")
PY
cp -r samples/Consumer "$work/consumer"
quiet dotnet build "$work/consumer" -c Release -v q -nologo -p:NeuronTraceVersion="$version" \
  -p:RestoreAdditionalProjectSources="$work/packages" -o "$work/consumer/out"
# The content file lands where CpuBf16Library looks first: next to the consumer's own dll.
[ -f "$work/consumer/out/libneurontrace_cpu.so" ] || { echo "check-library-package.sh: libneurontrace_cpu.so is not in the consumer's output" >&2; exit 1; }

# The CLI's run: a trace whose sweep has a k the sample then evaluates.
# The CLI as the tests built it (Release), not a publish: this script runs after ./test.sh in CI.
dotnet src/Cli/bin/Release/net10.0/neurontrace.dll trace --sites mlp_act --k-points 41 --out "$work/run" --quiet >/dev/null
k=20
/usr/bin/python3 - "$work/run/sweep.csv" "$k" <<'PY'
import csv, sys
ks = [int(r["k"]) for r in csv.DictReader(open(sys.argv[1])) if r["site"] == "mlp_act" and r["method"] == "relp"]
assert int(sys.argv[2]) in ks, f"the trace's sweep has no k = {sys.argv[2]} (k points {ks}): pick --k-points so that it does"
PY
(cd "$work/consumer/out" && dotnet Consumer.dll) > "$work/sample.txt"   # the sample's own default: the top 20
/usr/bin/python3 - "$work/sample.txt" "$work/run" "$k" <<'PY'
import csv, sys, os
sample, run, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(sample).read().split("\n")
nodes = [l.split(" ") for l in lines if l and not l.startswith("faithfulness")]
faith = [l for l in lines if l.startswith("faithfulness")][0].split(" ")
assert len(nodes) == k, f"sample printed {len(nodes)} nodes, expected {k}"
scores = {r["node"]: float(r["score"]) for r in csv.DictReader(open(os.path.join(run, "scores", "relp", "scores.csv")))}
for node, score in nodes:
    assert node in scores, f"sample node {node} is not in the trace's scores.csv"
    assert abs(scores[node] - float(score)) <= 1e-6 * max(1.0, abs(float(score))), f"{node}: sample {score}, trace {scores[node]}"
top = sorted(scores.values(), key=abs, reverse=True)[:k]
assert abs(abs(top[-1]) - abs(float(nodes[-1][1]))) <= 1e-6, "the sample's k-th node is not the trace's k-th by |score|"
row = [r for r in csv.DictReader(open(os.path.join(run, "sweep.csv"))) if r["site"] == "mlp_act" and r["method"] == "relp" and int(r["k"]) == k][0]
for name, value in (("faithfulness", faith[1]), ("completeness", faith[3])):
    assert abs(float(row[name]) - float(value)) <= 1e-6, f"{name}: sample {value}, trace sweep {row[name]}"
print(f"library package NeuronTrace.Api: the sample's top-{k} RelP neurons and their faithfulness {float(faith[1]):.4f} equal the CLI's trace")
PY
