using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// libneurontrace_cpu.so (native/cpu, built by native/build.sh): the AVX-512 BF16 (<c>vdpbf16ps</c>) micro-kernel of
/// the bf16 CPU math mode. .NET 10 has no intrinsic for that instruction (no <c>Avx512Bf16</c> class; <c>Avx10v1</c>
/// and <c>Avx10v2</c> carry no bf16 dot product), hence a small native library. It is used only when it is found and
/// its own CPUID/XGETBV check says the CPU and OS run AVX-512 BF16; otherwise <see cref="Available"/> is false,
/// <see cref="WhyNot"/> says why, and the managed portable path computes the same arithmetic.
/// </summary>
/// <remarks>Searched: $NEURONTRACE_CPU_LIB; next to the application; native/build/ in the first folder above the
/// application that has one (a development checkout), as <see cref="Cuda.PtxLocator"/> finds the PTX.</remarks>
internal static unsafe partial class CpuBf16Library
{
    public const string FileName = "libneurontrace_cpu.so";
    public const string EnvironmentVariable = "NEURONTRACE_CPU_LIB";
    const string ImportName = "neurontrace_cpu";

    static readonly Lazy<string?> Loaded = new(Load);

    /// <summary>Whether the bf16 micro-kernel can run here.</summary>
    public static bool Available => Loaded.Value is null;

    /// <summary>Why <see cref="Available"/> is false (one line); null when it is true.</summary>
    public static string? WhyNot => Loaded.Value;

    static nint _handle;

    static string? Load()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            return "the AVX-512 BF16 library is built for Linux x86-64 only";
        var tried = new List<string>();
        foreach (string path in Candidates())
        {
            tried.Add(path);
            if (!File.Exists(path)) continue;
            if (!NativeLibrary.TryLoad(path, out _handle)) return $"{path} exists but could not be loaded";
            NativeLibraries.UseLoaded(ImportName, _handle);   // the assembly's one resolver (the CUDA bindings use it too)
            return nt_cpu_bf16_supported() != 0 ? null : "this CPU (or OS) does not run AVX-512 BF16 (vdpbf16ps)";
        }
        return $"{FileName} not found (looked at {string.Join(", ", tried)}; native/build.sh builds it)";
    }

    static IEnumerable<string> Candidates()
    {
        if (Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } env) { yield return Path.GetFullPath(env); yield break; }
        yield return Path.Combine(AppContext.BaseDirectory, FileName);
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "native", "build");
            if (Directory.Exists(candidate)) { yield return Path.Combine(candidate, FileName); yield break; }
        }
    }

    [LibraryImport(ImportName)] private static partial int nt_cpu_bf16_supported();

    /// <summary>Bytes of the (64-byte aligned) workspace one <see cref="Gemm"/> call needs.</summary>
    [LibraryImport(ImportName)] internal static partial nuint nt_cpu_bf16_workspace_bytes();

    /// <summary>Rows of the rounded A buffer are read this many at a time (the buffer's rows are padded to a multiple).</summary>
    [LibraryImport(ImportName)] internal static partial int nt_cpu_bf16_row_block();

    /// <summary>dst[i, 0:kpad) = bf16(a[i, 0:k)) (round to nearest even, denormals to zero), then zeros; zero rows up to mpad.</summary>
    [LibraryImport(ImportName)] internal static partial void nt_cpu_bf16_round_rows(float* a, int m, int k, ushort* dst, int kpad, int mpad);

    /// <summary>C[0:m, j0:j1) (+)= abf · B (B bf16 [n, k] when transposedB, else [k, n]); 0, or -1 for bad arguments.</summary>
    [LibraryImport(ImportName)] internal static partial int nt_cpu_gemm_bf16(ushort* abf, int m, int kpad, ushort* b, int n, int k, int transposedB,
        float* c, int j0, int j1, int accumulate, void* workspace);
}
