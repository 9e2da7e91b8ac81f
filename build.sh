#!/usr/bin/env bash
# Builds NeuronTrace: the kernels (PTX + the host library the kernel tests run), the solution, and the CLI that
# ./neurontrace runs (artifacts/cli). Needs the .NET 10 SDK; installs cmake and clang from Debian when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/ensure-tools.sh
bash native/build.sh
dotnet build NeuronTrace.sln -c Release -v q -nologo
dotnet publish src/Cli/NeuronTrace.Cli.csproj -c Release -o artifacts/cli -v q -nologo --no-build
mkdir -p artifacts/cli/ptx && cp native/build/ptx/*.ptx artifacts/cli/ptx/
echo "built: ./neurontrace --help"
