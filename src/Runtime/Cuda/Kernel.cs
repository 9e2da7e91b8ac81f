using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// A kernel entry point (its extern "C" name) typed by the struct of its parameters, declared once beside the
/// kernel's launcher. <typeparamref name="TArgs"/> is a positional record struct whose fields are the kernel's
/// parameters in declaration order (nint for pointers, int, float, long for long long); <see cref="KernelParameters{T}"/>
/// turns a value of it into cuLaunchKernel's kernelParams, so no launcher restates the order by position, and
/// <see cref="Kernel.Signatures"/> lets a test check every struct against the PTX the kernel compiled to.
/// </summary>
internal readonly record struct Kernel<TArgs>(string Name) where TArgs : unmanaged;

/// <summary>Declares kernel handles and keeps each declared kernel's parameter layout.</summary>
internal static class Kernel
{
    static readonly Dictionary<string, (int Size, bool IsFloat)[]> signatures = [];

    /// <summary>
    /// Each kernel declared so far (all of <see cref="CudaBackend"/>'s once its type is initialised) with its
    /// parameters as (size in bytes, is float) in order, for a test to compare with the kernels' PTX signatures.
    /// </summary>
    public static IReadOnlyDictionary<string, (int Size, bool IsFloat)[]> Signatures
    {
        get { lock (signatures) return new Dictionary<string, (int, bool)[]>(signatures); }
    }

    public static Kernel<T> Declare<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicFields | DynamicallyAccessedMemberTypes.NonPublicFields)] T>(string name)
        where T : unmanaged
    {
        lock (signatures) signatures[name] = KernelParameters<T>.Sizes.Zip(KernelParameters<T>.IsFloat).ToArray();
        return new Kernel<T>(name);
    }
}

/// <summary>The declared work of one launch, for the launch ledger: arithmetic and the minimum memory traffic.</summary>
internal readonly record struct OpWork(double Flops, double Bytes)
{
    /// <summary>A streaming op over <paramref name="elements"/> fp32 values touching <paramref name="floatsPerElement"/> of them each.</summary>
    public static OpWork Streaming(long elements, int floatsPerElement, int flopsPerElement = 0) =>
        new((double)elements * flopsPerElement, (double)elements * floatsPerElement * sizeof(float));
}

/// <summary>The parameter layout of an argument struct: each field's offset, size and whether it is a float.</summary>
internal static class KernelParameters<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicFields | DynamicallyAccessedMemberTypes.NonPublicFields)] T> where T : unmanaged
{
    /// <summary>Byte offset of each parameter in T, in parameter order.</summary>
    public static readonly int[] Offsets;
    /// <summary>Size in bytes of each parameter (4 or 8).</summary>
    public static readonly int[] Sizes;
    public static readonly bool[] IsFloat;

    static KernelParameters()
    {
        if (!typeof(T).IsLayoutSequential) throw new InvalidOperationException($"{typeof(T).Name}: kernel arguments need sequential layout");
        var fields = typeof(T).GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)
            .Select(f => (Field: f, Offset: (int)Marshal.OffsetOf<T>(f.Name)))
            .OrderBy(f => f.Offset)
            .ToArray();
        if (fields.Length > KernelArgs.Capacity) throw new InvalidOperationException($"{typeof(T).Name}: more than {KernelArgs.Capacity} kernel arguments");
        Offsets = fields.Select(f => f.Offset).ToArray();
        Sizes = fields.Select(f => f.Field.FieldType switch
        {
            var t when t == typeof(nint) || t == typeof(long) => 8,
            var t when t == typeof(int) || t == typeof(float) => 4,
            var t => throw new InvalidOperationException($"{typeof(T).Name}.{f.Field.Name}: kernel argument of type {t.Name} (use nint, int, long or float)"),
        }).ToArray();
        IsFloat = fields.Select(f => f.Field.FieldType == typeof(float)).ToArray();
    }

    /// <summary>
    /// Fills <paramref name="pointers"/> with the address of each parameter inside <paramref name="args"/>, which the
    /// caller keeps in place (a local or by-value parameter) until the launch returns.
    /// </summary>
    public static unsafe void Pointers(T* args, Span<nint> pointers)
    {
        for (int i = 0; i < Offsets.Length; i++) pointers[i] = (nint)((byte*)args + Offsets[i]);
    }
}
