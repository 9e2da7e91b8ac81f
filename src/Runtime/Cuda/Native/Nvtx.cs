using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda.Native;

/// <summary>
/// NVTX ranges, so Nsight Systems shows op names ("attention_backward") over the kernels. Optional: without
/// libnvToolsExt.so.1 <see cref="Available"/> is false and callers skip the calls.
/// </summary>
internal static unsafe partial class Nvtx
{
    public const string Library = "neurontrace-nvtx";

    static Nvtx() => NativeLibraries.EnsureResolver();

    public static bool Available { get; } = NativeLibraries.TryLoad(Library, out _);

    [LibraryImport(Library, SetLastError = false)] public static partial int nvtxRangePushA(byte* message);
    [LibraryImport(Library, SetLastError = false)] public static partial int nvtxRangePop();
}
