#!/usr/bin/env bash
# Builds, here, what the GPU machine runs (it has no dotnet): a self-contained linux-x64 publish of the bench/check
# executable, the PTX, the kernel sources (nvcc rebuilds them there), the small model files and the PyTorch scripts,
# into gpu-bundle/ (git-ignored; pass it in `carry`). Then, there: bash gpu-bundle/scripts/gpu/gpu-all.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=gpu-bundle
rm -rf "$out"; mkdir -p "$out"
bash native/build.sh >/dev/null
dotnet publish bench/NeuronTrace.Bench -c Release -r linux-x64 --self-contained -p:PublishTrimmed=true -p:TrimMode=partial \
  -p:JsonSerializerIsReflectionEnabledByDefault=true -o "$out/bin" -v q -nologo
mkdir -p "$out/bin/ptx" "$out/native" "$out/models" "$out/bench" "$out/scripts"
cp native/build/ptx/*.ptx "$out/bin/ptx/"
cp -r native/kernels native/host native/CMakeLists.txt native/build.sh "$out/native/"
cp -r models/stories260K "$out/models/"
cp bench/*.py "$out/bench/"
cp -r scripts/gpu "$out/scripts/"
touch "$out/NeuronTrace.sln"   # the bench finds its root by this marker
du -sh "$out"
