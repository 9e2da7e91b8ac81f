namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// Packs kernel arguments the way cuLaunchKernel (and the host launchers) take them: an array of pointers, one per
/// parameter in declaration order, each pointing to a copy of the value. Values sit in 8-byte slots inside this
/// struct, which, being a ref struct, lives on the stack and never moves; so the pointers from
/// <see cref="Pointers"/> stay valid while the struct is in scope, i.e. across the launch call.
/// The types must match the kernel's parameters exactly: pointers 8 bytes, int/float 4, long long 8.
/// </summary>
internal unsafe ref struct KernelArgs
{
    public const int Capacity = 16;
    fixed ulong values[Capacity];
    fixed long pointers[Capacity];
    int count;

    public readonly int Count => count;

    public void Pointer(nint devicePointer) => Push((ulong)devicePointer);
    public void Int(int value) => Push((uint)value);
    public void Long(long value) => Push((ulong)value);
    public void Float(float value) => Push(BitConverter.SingleToUInt32Bits(value));

    /// <summary>The kernelParams array. A 4-byte value occupies the low (first, little-endian) half of its slot.</summary>
    public ReadOnlySpan<nint> Pointers()
    {
        fixed (ulong* v = values)
        fixed (long* p = pointers)
        {
            for (int i = 0; i < count; i++) p[i] = (long)(v + i);
            return new ReadOnlySpan<nint>(p, count);
        }
    }

    void Push(ulong bits)
    {
        if (count == Capacity) throw new InvalidOperationException($"more than {Capacity} kernel arguments");
        values[count++] = bits;
    }
}
