using System.Reflection;
using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda.Native;

/// <summary>
/// Maps the logical library names of the bindings to the files that exist on this machine. cuBLAS and NVTX have
/// versioned sonames that differ between CUDA releases, and LibraryImport needs one constant name; this resolver
/// (the only one this assembly may register) probes the candidates in order. An explicit path in
/// $NEURONTRACE_CUBLAS / $NEURONTRACE_NVTX wins.
/// </summary>
internal static class NativeLibraries
{
    static readonly Lock Gate = new();
    static bool registered;

    static readonly Dictionary<string, (string Env, string[] Candidates)> Known = new()
    {
        [Cublas.Library] = ("NEURONTRACE_CUBLAS", ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"]),
        [Nvtx.Library] = ("NEURONTRACE_NVTX", ["libnvToolsExt.so.1", "libnvToolsExt.so"]),
    };

    public static void EnsureResolver()
    {
        lock (Gate)
        {
            if (registered) return;
            NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);
            registered = true;
        }
    }

    /// <summary>Loads a logical library (or a plain soname); false with the names tried when none loads.</summary>
    public static bool TryLoad(string name, out string tried)
    {
        var candidates = Candidates(name);
        tried = string.Join(", ", candidates);
        foreach (string c in candidates)
            if (NativeLibrary.TryLoad(c, out _)) return true;
        return false;
    }

    static List<string> Candidates(string name)
    {
        if (!Known.TryGetValue(name, out var known)) return [name];
        var list = new List<string>();
        if (Environment.GetEnvironmentVariable(known.Env) is { Length: > 0 } path) list.Add(path);
        list.AddRange(known.Candidates);
        return list;
    }

    static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (!Known.ContainsKey(name)) return 0;  // default probing (libcuda.so.1 …)
        foreach (string c in Candidates(name))
            if (NativeLibrary.TryLoad(c, out nint handle)) return handle;
        return 0;
    }
}
