using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;

namespace NeuronTrace.Formats;

/// <summary>The floating-point storage types the loaders can turn into float32.</summary>
internal enum FloatEncoding
{
    F32,
    /// <summary>IEEE 754 binary16 (<see cref="Half"/>).</summary>
    F16,
    /// <summary>bfloat16: the upper 16 bits of a float32.</summary>
    BF16,
}

/// <summary>
/// Conversions between float32 and the 16-bit float formats found in checkpoints.
/// Decoding is exact (every 16-bit value is representable in float32); encoding rounds to nearest, ties to even.
/// All byte buffers are little-endian, as in GGUF and safetensors.
/// </summary>
internal static class Float16
{
    public static int SizeOf(FloatEncoding e) => e == FloatEncoding.F32 ? 4 : 2;

    public static float Bf16ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>Round-to-nearest-even truncation of a float32 to its upper 16 bits; NaN stays NaN.</summary>
    public static ushort FloatToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        // A NaN whose payload lives only in the low 16 bits would round to Inf (or wrap); force the quiet bit instead.
        if ((bits & 0x7FFF_FFFF) > 0x7F80_0000)
            return (ushort)((bits >> 16) | 0x0040);
        // Adding 0x7FFF plus the lowest kept bit rounds half-way cases towards the even result.
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    public static float HalfToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>System.Half's explicit conversion already rounds to nearest even and saturates to infinity.</summary>
    public static ushort FloatToHalf(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>Decodes <paramref name="dst"/>.Length values from <paramref name="src"/> (which must hold exactly that many).</summary>
    public static void Decode(ReadOnlySpan<byte> src, FloatEncoding encoding, Span<float> dst)
    {
        if (src.Length != (long)dst.Length * SizeOf(encoding))
            throw new ArgumentException($"{src.Length} bytes cannot hold {dst.Length} {encoding} values");
        switch (encoding)
        {
            case FloatEncoding.F32:
                if (BitConverter.IsLittleEndian) src.CopyTo(MemoryMarshal.AsBytes(dst));
                else for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadSingleLittleEndian(src[(i * 4)..]);
                break;
            case FloatEncoding.BF16:
                DecodeBf16(src, dst);
                break;
            case FloatEncoding.F16:
                DecodeHalf(src, dst);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(encoding));
        }
    }

    /// <summary>Encodes <paramref name="src"/> into <paramref name="dst"/> (which must be exactly the right size).</summary>
    public static void Encode(ReadOnlySpan<float> src, FloatEncoding encoding, Span<byte> dst)
    {
        if (dst.Length != (long)src.Length * SizeOf(encoding))
            throw new ArgumentException($"{dst.Length} bytes cannot hold {src.Length} {encoding} values");
        switch (encoding)
        {
            case FloatEncoding.F32:
                if (BitConverter.IsLittleEndian) MemoryMarshal.AsBytes(src).CopyTo(dst);
                else for (int i = 0; i < src.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(dst[(i * 4)..], src[i]);
                break;
            case FloatEncoding.BF16:
                for (int i = 0; i < src.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(dst[(i * 2)..], FloatToBf16(src[i]));
                break;
            case FloatEncoding.F16:
                for (int i = 0; i < src.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(dst[(i * 2)..], FloatToHalf(src[i]));
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(encoding));
        }
    }

    // The widening itself has one owner, the CPU backend's (Runtime/Cpu/GemmWiden.cs: exact for every bf16 and f16
    // value, vectorised), which also widens 16-bit weights kept in their file precision; files read as fp32 use it too.
    static void DecodeBf16(ReadOnlySpan<byte> src, Span<float> dst)
    {
        if (!BitConverter.IsLittleEndian)
        {
            for (int i = 0; i < dst.Length; i++) dst[i] = Bf16ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(src[(i * 2)..]));
            return;
        }
        Runtime.Cpu.Gemm.WidenHalf(MemoryMarshal.Cast<byte, ushort>(src), Runtime.HalfFormat.BFloat16, dst);
    }

    static void DecodeHalf(ReadOnlySpan<byte> src, Span<float> dst)
    {
        if (!BitConverter.IsLittleEndian)
        {
            for (int i = 0; i < dst.Length; i++) dst[i] = HalfToFloat(BinaryPrimitives.ReadUInt16LittleEndian(src[(i * 2)..]));
            return;
        }
        Runtime.Cpu.Gemm.WidenHalf(MemoryMarshal.Cast<byte, ushort>(src), Runtime.HalfFormat.Float16, dst);
    }
}
