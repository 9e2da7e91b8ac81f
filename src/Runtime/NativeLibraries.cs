using System.Reflection;
using System.Runtime.InteropServices;

using NeuronTrace.Runtime.Cuda.Native;

namespace NeuronTrace.Runtime;

/// <summary>
/// The one import resolver of this assembly (.NET allows one per assembly, and a second registration throws): it maps
/// the logical library names of the bindings to the files that exist on this machine. cuBLAS and NVTX have versioned
/// sonames that differ between CUDA releases, and LibraryImport needs one constant name, so the resolver probes the
/// candidates in order (an explicit path in $NEURONTRACE_CUBLAS / $NEURONTRACE_NVTX wins); a library this assembly
/// loaded itself from a path it searched (the CPU's bf16 kernels, <see cref="Cpu.CpuBf16Library"/>) is registered
/// with <see cref="UseLoaded"/>.
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

    static readonly Dictionary<string, nint> LoadedByPath = [];

    /// <summary>Resolves the import name <paramref name="name"/> to <paramref name="handle"/>, a library already loaded from its path.</summary>
    /// <param name="name">The name the <c>LibraryImport</c> attributes give.</param>
    /// <param name="handle">The handle <see cref="NativeLibrary.TryLoad(string, out nint)"/> returned for it.</param>
    public static void UseLoaded(string name, nint handle)
    {
        lock (Gate) LoadedByPath[name] = handle;
        EnsureResolver();
    }

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
        lock (Gate)
            if (LoadedByPath.TryGetValue(name, out nint loaded)) return loaded;
        if (!Known.ContainsKey(name)) return 0;  // default probing (libcuda.so.1 …)
        foreach (string c in Candidates(name))
            if (NativeLibrary.TryLoad(c, out nint handle)) return handle;
        return 0;
    }
}
