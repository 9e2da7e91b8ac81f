#!/usr/bin/env bash
# Rewrites src/Api/PublicAPI.Shipped.txt from the facade's current public surface. The build fails (RS0016/RS0017)
# whenever the surface and the file differ, so an API change is always a deliberate edit of this file: run this script,
# read the diff of PublicAPI.Shipped.txt, commit it with the change.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
api=src/Api/PublicAPI.Shipped.txt
printf '#nullable enable\n' > "$api"
log="$(dotnet build src/Api -c Release -v q -nologo --no-incremental -p:WarningsAsErrors= 2>&1 || true)"
grep -o "RS0016: Symbol '.*' is not part of the declared public API" <<<"$log" \
  | sed -E "s/^RS0016: Symbol '(.*)' is not part of the declared public API$/\1/" | LC_ALL=C sort -u >> "$api"
echo "$api: $(($(wc -l < "$api") - 1)) public symbols"
