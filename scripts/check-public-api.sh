#!/usr/bin/env bash
# Checks that the public-API baselines bite: in a scratch copy of the repository's build files and src/, adds one
# undocumented public member to a kept public type of NeuronTrace.Model, and an internal method that documents one of
# its two parameters, and builds that library; the build must fail with RS0016 (the member is not in
# PublicAPI.Shipped.txt), CS1591 (it has no XML doc) and CS1573 (the parameter without a param tag). Then checks that
# the unmodified copy builds. CI runs this after the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp Directory.Build.props "$work/"
mkdir -p "$work/src"
for p in Runtime Model; do
  (cd src && tar --exclude=bin --exclude=obj -cf - "$p") | (cd "$work/src" && tar -xf -)
done
cp src/Directory.Build.props "$work/src/"
file="$work/src/Model/NodeId.cs"
grep -q '^public readonly record struct NodeId' "$file"
# A new member at the end of NodeId (a public type of the baseline), neither documented nor declared.
perl -0pi -e 's/\}\s*\z/    public int AddedByCheckPublicApi => 0;\n    \/\/\/ <summary>Half documented.<\/summary>\n    \/\/\/ <param name="a">The first.<\/param>\n    internal static int HalfDocumentedByCheckPublicApi(int a, int b) => a + b;\n}\n/' "$file"
if log="$(dotnet build "$work/src/Model" -c Release -v q -nologo 2>&1)"; then
  echo "check-public-api.sh: the build PASSED with an undeclared, undocumented public member" >&2; exit 1
fi
grep -q "error RS0016: Symbol 'NeuronTrace.Model.NodeId.AddedByCheckPublicApi.get -> int'" <<<"$log" \
  || { echo "check-public-api.sh: the build failed, but not with RS0016 for the new member:" >&2; grep ' error ' <<<"$log" | sort -u >&2; exit 1; }
grep -q "error CS1591: .*NodeId.AddedByCheckPublicApi" <<<"$log" \
  || { echo "check-public-api.sh: no CS1591 error for the undocumented member" >&2; exit 1; }
grep -q "error CS1573: .*'b'" <<<"$log" \
  || { echo "check-public-api.sh: no CS1573 error for the parameter without a param tag" >&2; exit 1; }
cp src/Model/NodeId.cs "$file"
dotnet build "$work/src/Model" -c Release -v q -nologo >/dev/null \
  || { echo "check-public-api.sh: the unmodified copy does not build" >&2; exit 1; }
echo "public API: an undeclared, undocumented public member and a half-documented method fail the build (RS0016, CS1591, CS1573); the baselines match the sources"
