namespace NeuronTrace.Formats;

/// <summary>ggml tensor type ids as stored in GGUF tensor infos. Only F32, F16 and BF16 can be loaded.</summary>
internal enum GgufTensorType : uint
{
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
    TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
}

/// <summary>One entry of a GGUF tensor table.</summary>
internal sealed class GgufTensorInfo
{
    public required string Name { get; init; }
    /// <summary>ggml order: innermost (contiguous) dimension first, so a [rows, cols] matrix is stored as {cols, rows}.</summary>
    public required ulong[] Dims { get; init; }
    public required uint TypeId { get; init; }
    /// <summary>Offset of the data relative to the start of the data section.</summary>
    public required ulong Offset { get; init; }
    /// <summary>Absolute offset of the data in the file.</summary>
    public required long FileOffset { get; init; }
    public required long ElementCount { get; init; }

    /// <summary>The float encoding of a loadable tensor, or null for every other type.</summary>
    public FloatEncoding? Encoding => TypeId switch
    {
        (uint)GgufTensorType.F32 => FloatEncoding.F32,
        (uint)GgufTensorType.F16 => FloatEncoding.F16,
        (uint)GgufTensorType.BF16 => FloatEncoding.BF16,
        _ => null,
    };

    /// <summary>Bytes of data, or -1 for a type whose block layout this reader does not know.</summary>
    public long ByteSize => Encoding is { } e ? ElementCount * Float16.SizeOf(e) : -1;

    public string TypeName => TypeNameOf(TypeId);

    public static string TypeNameOf(uint typeId) =>
        Enum.IsDefined(typeof(GgufTensorType), typeId) ? ((GgufTensorType)typeId).ToString() : $"type {typeId}";

    /// <summary>The dims in ggml order (innermost first), as llama.cpp prints them.</summary>
    public string ShapeText => "[" + string.Join(", ", Dims) + "]";

    public override string ToString() => $"{Name} {TypeName} {ShapeText}";
}
