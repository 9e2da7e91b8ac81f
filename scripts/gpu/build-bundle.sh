#!/usr/bin/env bash
# Builds, here, what the GPU machine runs (it has no dotnet): self-contained linux-x64 publishes of the bench/check
# executable (bin/) and of the kernel tests (tests-bin/, an xUnit v3 executable), the clang PTX, the host kernel
# library, the bf16 CPU kernel library (bin/libneurontrace_cpu.so), the kernel sources (for ptxas / nvcc there),
# stories260K and the PyTorch scripts, into gpu-bundle/
# (git-ignored), then packs it as gpu-bundle.tar.xz (git-ignored; carry that: the device tool carries 64 MiB at most).
# There: tar xf gpu-bundle.tar.xz && bash gpu-bundle/scripts/gpu/gpu-all.sh
# Here, to prove the published executables start (no GPU: GPU sections skip): bash gpu-bundle/scripts/gpu/gpu-all.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=gpu-bundle
limit_mib=60
rm -rf "$out" "$out.tar.xz"; mkdir -p "$out"
bash native/build.sh >/dev/null
dotnet publish bench/NeuronTrace.Bench -c Release -r linux-x64 --self-contained -p:PublishTrimmed=true -p:TrimMode=partial \
  -p:JsonSerializerIsReflectionEnabledByDefault=true -o "$out/bin" -v q -nologo
# xUnit finds tests by reflection: not trimmed
dotnet publish tests/GpuKernelTests -c Release -r linux-x64 --self-contained -o "$out/tests-bin" -v q -nologo
mkdir -p "$out/bin/ptx" "$out/native" "$out/models" "$out/bench" "$out/scripts"
cp native/build/ptx/*.ptx "$out/bin/ptx/"
cp native/build/libneurontrace_kernels_host.so "$out/tests-bin/"
# The bf16 CPU math kernel beside the bench executable (where CpuBf16Library looks first; the bundle has no native/build)
cp native/build/libneurontrace_cpu.so "$out/bin/"
cp -r native/kernels native/host native/CMakeLists.txt native/build.sh "$out/native/"
cp -r models/stories260K "$out/models/"
cp bench/*.py "$out/bench/"
cp -r scripts/gpu "$out/scripts/"
touch "$out/NeuronTrace.sln"   # the bench finds its root by this marker
tar -cJf "$out.tar.xz" "$out"
du -sh "$out"
size=$(stat -c %s "$out.tar.xz")
echo "$out.tar.xz: $((size / 1048576)) MiB (limit ${limit_mib} MiB)"
if [ "$size" -gt $((limit_mib * 1048576)) ]; then
  echo "build-bundle: $out.tar.xz is over ${limit_mib} MiB: the device tool would not carry it" >&2
  exit 1
fi
