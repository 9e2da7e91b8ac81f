# Builds NeuronTrace on Windows or with PowerShell elsewhere: kernels (when cmake and clang are present), the solution,
# and the CLI in artifacts/cli (run it as artifacts/cli/neurontrace).
$ErrorActionPreference = 'Stop'
Set-Location $PSScriptRoot
if ((Get-Command cmake -ErrorAction SilentlyContinue) -and (Get-Command clang++ -ErrorAction SilentlyContinue)) {
    cmake -S native -B native/build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++
    cmake --build native/build -j 2
} else {
    Write-Warning 'cmake/clang++ not found: kernels not built (the kernel tests will fail; the CPU backend works)'
}
dotnet build NeuronTrace.sln -c Release -v q -nologo
dotnet publish src/Cli/NeuronTrace.Cli.csproj -c Release -o artifacts/cli -v q -nologo
if (Test-Path native/build/ptx) { New-Item -ItemType Directory -Force artifacts/cli/ptx | Out-Null; Copy-Item native/build/ptx/*.ptx artifacts/cli/ptx/ }
Write-Host 'built: artifacts/cli/neurontrace --help'
