#!/usr/bin/env bash
# Rewrites PublicAPI.Shipped.txt of every packed library (src/Runtime, Model, Formats, Tracing, Api) from its current
# public surface, and empties PublicAPI.Unshipped.txt. The build fails (RS0016/RS0017, src/Directory.Build.props)
# whenever a library's surface and its file differ, so an API change is always a deliberate edit of these files: run
# this script, read the diff of the PublicAPI.Shipped.txt files, commit them with the change.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
libraries=(Runtime Model Formats Tracing Api)
for p in "${libraries[@]}"; do
  printf '#nullable enable\n' > "src/$p/PublicAPI.Shipped.txt"
  printf '#nullable enable\n' > "src/$p/PublicAPI.Unshipped.txt"
done
# Api references the other four, so one build reports every library's undeclared symbols (RS0016, as warnings here).
log="$(dotnet build src/Api -c Release -v q -nologo --no-incremental -p:WarningsAsErrors= 2>&1 || true)"
if grep -q ': error ' <<<"$log"; then
  grep ': error ' <<<"$log" | sort -u >&2
  echo "update-public-api.sh: the libraries do not build; fix the errors above first" >&2
  exit 1
fi
for p in "${libraries[@]}"; do
  api="src/$p/PublicAPI.Shipped.txt"
  grep -F "[$PWD/src/$p/NeuronTrace.$p.csproj]" <<<"$log" \
    | grep -o "RS0016: Symbol '.*' is not part of the declared public API" \
    | sed -E "s/^RS0016: Symbol '(.*)' is not part of the declared public API$/\1/" | LC_ALL=C sort -u >> "$api" || true
  echo "$api: $(($(wc -l < "$api") - 1)) public symbols"
done
