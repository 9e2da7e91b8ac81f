#!/usr/bin/env bash
# Packs the CLI as a dotnet tool, installs it from that package into a temporary tool path (no network: the package
# carries its dependencies) and runs it on the model the package bundles. CI runs this after the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dotnet pack src/Cli -c Release -o "$work/package" -v q -nologo -p:TreatWarningsAsErrors=true >/dev/null
version="$(basename "$work"/package/NeuronTrace.*.nupkg .nupkg)"; version="${version#NeuronTrace.}"
dotnet tool install NeuronTrace --version "$version" --tool-path "$work/tools" --add-source "$work/package" >/dev/null
# One version from one place (Directory.Build.props): the package's and the one the tool reports.
want="$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props)"
reported="$("$work/tools/neurontrace" --version)"
[ "$version" = "$want" ] && [ "${reported%%+*}" = "$want" ] \
  || { echo "tool package: version $version, neurontrace --version $reported, Directory.Build.props $want: they must agree" >&2; exit 1; }
# The bf16 CPU math kernel (native/cpu) must sit beside the installed tool's neurontrace.dll, where it is looked for.
app_dir="$(dirname "$(find "$work/tools/.store" -name neurontrace.dll -print -quit)")"
[ -f "$app_dir/libneurontrace_cpu.so" ] \
  || { echo "tool package: libneurontrace_cpu.so is not beside neurontrace.dll in the installed tool ($app_dir); run native/build.sh before packing" >&2; exit 1; }
info="$("$work/tools/neurontrace" info)"
for field in "dim +64" "layers +5" "vocab +512"; do
  if ! grep -Eq "^$field\$" <<<"$info"; then
    echo "tool package: 'neurontrace info' on the bundled model lacks \"$field\":" >&2
    echo "$info" >&2
    exit 1
  fi
done
echo "tool package NeuronTrace $version (= Directory.Build.props, = neurontrace --version): installs and runs ('neurontrace info' on the bundled stories260K), libneurontrace_cpu.so beside it"
