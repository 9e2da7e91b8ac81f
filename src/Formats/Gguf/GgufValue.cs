using NeuronTrace.Runtime;

namespace NeuronTrace.Formats;

/// <summary>GGUF metadata value types (the numbers stored in the file).</summary>
internal enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
    String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>
/// One GGUF metadata value. Scalars are held as the matching CLR type (byte, sbyte, ushort, short, uint, int, float,
/// bool, string, ulong, long, double); arrays as a typed CLR array of those (string[] for strings), or as
/// <see cref="GgufValue"/>[] for arrays of arrays. Typed arrays keep 100k-entry vocabularies cheap.
/// </summary>
internal sealed class GgufValue
{
    public GgufValueType Type { get; }
    /// <summary>For arrays, the element type; otherwise equal to <see cref="Type"/>.</summary>
    public GgufValueType ElementType { get; }
    public object Value { get; }

    GgufValue(GgufValueType type, GgufValueType elementType, object value)
    {
        Type = type; ElementType = elementType; Value = value;
    }

    internal static GgufValue Scalar(GgufValueType type, object value) => new(type, type, value);
    internal static GgufValue ArrayOf(GgufValueType elementType, System.Array items) => new(GgufValueType.Array, elementType, items);

    public static GgufValue From(byte v) => Scalar(GgufValueType.UInt8, v);
    public static GgufValue From(sbyte v) => Scalar(GgufValueType.Int8, v);
    public static GgufValue From(ushort v) => Scalar(GgufValueType.UInt16, v);
    public static GgufValue From(short v) => Scalar(GgufValueType.Int16, v);
    public static GgufValue From(uint v) => Scalar(GgufValueType.UInt32, v);
    public static GgufValue From(int v) => Scalar(GgufValueType.Int32, v);
    public static GgufValue From(float v) => Scalar(GgufValueType.Float32, v);
    public static GgufValue From(bool v) => Scalar(GgufValueType.Bool, v);
    public static GgufValue From(string v) => Scalar(GgufValueType.String, v ?? throw new ArgumentNullException(nameof(v)));
    public static GgufValue From(ulong v) => Scalar(GgufValueType.UInt64, v);
    public static GgufValue From(long v) => Scalar(GgufValueType.Int64, v);
    public static GgufValue From(double v) => Scalar(GgufValueType.Float64, v);

    public static GgufValue From(byte[] v) => ArrayOf(GgufValueType.UInt8, v);
    public static GgufValue From(sbyte[] v) => ArrayOf(GgufValueType.Int8, v);
    public static GgufValue From(ushort[] v) => ArrayOf(GgufValueType.UInt16, v);
    public static GgufValue From(short[] v) => ArrayOf(GgufValueType.Int16, v);
    public static GgufValue From(uint[] v) => ArrayOf(GgufValueType.UInt32, v);
    public static GgufValue From(int[] v) => ArrayOf(GgufValueType.Int32, v);
    public static GgufValue From(float[] v) => ArrayOf(GgufValueType.Float32, v);
    public static GgufValue From(bool[] v) => ArrayOf(GgufValueType.Bool, v);
    public static GgufValue From(string[] v) => ArrayOf(GgufValueType.String, v);
    public static GgufValue From(ulong[] v) => ArrayOf(GgufValueType.UInt64, v);
    public static GgufValue From(long[] v) => ArrayOf(GgufValueType.Int64, v);
    public static GgufValue From(double[] v) => ArrayOf(GgufValueType.Float64, v);
    public static GgufValue From(GgufValue[] arrays)
    {
        if (arrays.Any(a => a.Type != GgufValueType.Array)) throw new ArgumentException("an array of arrays may hold only arrays");
        return ArrayOf(GgufValueType.Array, arrays);
    }

    /// <summary>The value of any integer type that fits a long.</summary>
    public bool TryGetInteger(out long value)
    {
        switch (Value)
        {
            case byte b: value = b; return true;
            case sbyte b: value = b; return true;
            case ushort b: value = b; return true;
            case short b: value = b; return true;
            case uint b: value = b; return true;
            case int b: value = b; return true;
            case long b: value = b; return true;
            case ulong b when b <= long.MaxValue: value = (long)b; return true;
            default: value = 0; return false;
        }
    }

    /// <summary>The value of any float or integer type, as a double.</summary>
    public bool TryGetReal(out double value)
    {
        switch (Value)
        {
            case float f: value = f; return true;
            case double d: value = d; return true;
            case ulong u: value = u; return true;
            default:
                bool ok = TryGetInteger(out long l);
                value = l;
                return ok;
        }
    }

    public override string ToString() => Type == GgufValueType.Array
        ? $"array of {((System.Array)Value).Length} {ElementType}"
        : Value is string s ? $"{Type} {ErrorText.Quote(s)}" : $"{Type} {Value}";
}
