using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda.Native;

/// <summary>
/// NVTX ranges, so Nsight Systems shows op names ("attention_backward") over the kernels. Optional: without
/// libnvToolsExt.so.1 <see cref="Available"/> is false, callers skip the calls, and one warning line on stderr says
/// so (a profile without op names should not be a silent surprise).
/// </summary>
internal static unsafe partial class Nvtx
{
    public const string Library = "neurontrace-nvtx";

    static Nvtx() => NativeLibraries.EnsureResolver();

    public static bool Available { get; } = Load();

    static bool Load()
    {
        if (NativeLibraries.TryLoad(Library, out string tried)) return true;
        Console.Error.WriteLine($"warning: NVTX unavailable (could not load any of: {tried}); Nsight will show kernels without op ranges");
        return false;
    }

    [LibraryImport(Library, SetLastError = false)] public static partial int nvtxRangePushA(byte* message);
    [LibraryImport(Library, SetLastError = false)] public static partial int nvtxRangePop();
}
