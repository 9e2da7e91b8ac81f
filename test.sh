#!/usr/bin/env bash
# Runs every test. Builds the kernels first: the kernel tests execute the CUDA sources on the CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/ensure-tools.sh --browser
bash native/build.sh
dotnet test NeuronTrace.sln -c Release -v q -nologo "$@"
