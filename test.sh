#!/usr/bin/env bash
# Runs every test. Builds the kernels first: the kernel tests execute the CUDA sources on the CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/ensure-tools.sh --browser
bash native/build.sh
dotnet test NeuronTrace.sln -c Release -v q -nologo "$@"
# The kernel tests as the GPU bundle ships them (xUnit v3, not in the solution): built on every run so they always compile,
# and started once on a small class (its "gpu" cases report skipped without a GPU).
dotnet build tests/GpuKernelTests -c Release -v q -nologo
dotnet run --no-build --project tests/GpuKernelTests -c Release -- -class NeuronTrace.Runtime.Tests.Kernels.ElementwiseKernelTests
