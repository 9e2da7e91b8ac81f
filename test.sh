#!/usr/bin/env bash
# Runs every test: builds the kernels first (the kernel tests execute the CUDA sources on the CPU), then the suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash native/build.sh
dotnet test NeuronTrace.sln -c Release -v q -nologo "$@"
