#!/usr/bin/env bash
# Checks that the documentation and the comments cite only files that exist: every repository path (docs/, src/, tests/,
# scripts/, native/, bench/, samples/, data/, models/, golden/) named in a tracked text file must exist, as a path from the
# repository root or from the citing file's folder (a test class named without .cs counts when its .cs file exists; a
# brace list such as reference.{json,f32} is expanded). Paths with a wildcard or a placeholder are patterns, not
# citations. The few paths of other repositories that the method notes quote (their source key names the repository)
# and the folders a benchmark writes are listed below with the file that cites them. CI runs this after the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
/usr/bin/python3 - <<'PY'
import os, re, subprocess, sys

# (citing file, path): paths in other repositories (the citing line names the repository) or written by a run.
NOT_OURS = {
    ("docs/method.md", "scripts/case_studies/capitals"), ("docs/method.md", "scripts/case_studies/capitals/capitals.py"),
    ("docs/method.md", "scripts/case_studies/sva/make_plot.py"), ("docs/method.md", "scripts/fc_evals"),
    ("docs/method.md", "scripts/fc_evals/edge_eval.sh"), ("docs/method.md", "scripts/eval.py"),
    ("docs/method.md", "scripts/train.py"), ("docs/method.md", "data/feature_circuits"),
    ("docs/method.md", "src/eap/attribute.py"),                          # TransluceAI/circuits, hannamw/EAP-IG
    ("docs/sae-format.md", "src/llamascopium/models/sae.py"),            # OpenMOSS Language-Model-SAEs
    ("models/stories260K/NOTICE.md", "tests/testdata/stories260K.gguf"), # cozy-creator/python-gen-worker
    ("bench/README.md", "bench/results/synthetic-wide"),                 # written by `bench ksweep --model wide`
    ("bench/results/attribution-1b-2026-12-07.txt", "bench/results/llama3.2-1b-shape"),  # written by the benchmark
    ("scripts/gpu/build-bundle.sh", "bench/check"),                       # prose: "the bench/check executable"
}
ROOTS = "docs|src|tests|scripts|native|bench|samples|data|models|golden"
PATH = re.compile(r"(?<![A-Za-z0-9_./-])((?:" + ROOTS + r")/[A-Za-z0-9_.+/-]*[A-Za-z0-9_])(\.\{[A-Za-z0-9_,]+\})?")
TEXT = (".md", ".cs", ".sh", ".cu", ".h", ".props", ".csproj", ".py", ".ps1", ".yaml", ".yml", ".txt")

files = subprocess.run(["git", "ls-files", "-z"], capture_output=True, text=True, check=True).stdout.split("\0")
bad = []
cited = 0
_ignored = {}
def ignored(path):
    if path not in _ignored:
        _ignored[path] = any(subprocess.run(["git", "check-ignore", "-q", "--no-index", p]).returncode == 0 for p in (path, path.rstrip("/") + "/"))  # a folder pattern matches only with its slash
    return _ignored[path]
for f in files:
    if not f.endswith(TEXT) or not os.path.isfile(f) or f == "scripts/check-doc-paths.sh": continue  # not this list
    try: lines = open(f, encoding="utf-8").read().split("\n")
    except UnicodeDecodeError: continue
    for n, line in enumerate(lines, 1):
        for m in PATH.finditer(line):
            path, braces = m.group(1), m.group(2)
            rest = re.match(r"[^\s`'\"),;|]*", line[m.end():]).group(0)  # the rest of the word: a wildcard makes it a pattern
            if "*" in rest or "<" in rest or re.search(r"[A-Z]{3,}", path.split("/")[-1]) and not path.endswith((".md", ".cs")): continue
            if (f, path) in NOT_OURS: continue
            # build outputs (paths git ignores: bin/, obj/, native/build/ …) are made by a build, not files the
            # repository carries: skipped, so the check does not depend on what was built before it ran
            if ignored(path): continue
            cited += 1
            names = [path + "." + b for b in braces.strip(".{}").split(",")] if braces else [path]
            ok = all(any(os.path.exists(c) or os.path.exists(c + ".cs") for c in (p, os.path.join(os.path.dirname(f), p))) for p in names)
            if not ok: bad.append(f"{f}:{n}: cites {path}{braces or ''}, which is not in the repository")
if bad:
    print("\n".join(bad), file=sys.stderr)
    print(f"check-doc-paths.sh: {len(bad)} cited paths do not exist", file=sys.stderr)
    sys.exit(1)
print(f"doc paths: all {cited} repository paths cited in docs and comments exist")
PY
