#!/usr/bin/env bash
# Installs, from Debian's packages, the build tools a fresh machine may lack: cmake and clang (kernels: PTX and the
# host build the tests run), python3-numpy (a scores test) and, with --browser, chromium (the HTML view test). Uses sudo when not root.
set -euo pipefail
if ! dotnet --list-sdks 2>/dev/null | grep -q '^10\.'; then
  echo "NeuronTrace needs the .NET 10 SDK (dotnet on PATH); it is not a Debian package here: see https://dot.net" >&2
  exit 1
fi
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v clang++ >/dev/null 2>&1 || need+=(clang)
# numpy: the test that reads a run's scores.safetensors the way a researcher would (tests/tools/check_scores_safetensors.py).
/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1 || need+=(python3-numpy)
if [ "${1:-}" = "--browser" ]; then command -v chromium >/dev/null 2>&1 || need+=(chromium); fi
[ ${#need[@]} -eq 0 ] && exit 0
sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
echo "installing ${need[*]} (Debian packages)" >&2
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
