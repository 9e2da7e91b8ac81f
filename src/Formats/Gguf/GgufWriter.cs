using System.Buffers.Binary;
using System.Text;

namespace NeuronTrace.Formats;

/// <summary>
/// Builds a GGUF v3 file: metadata plus F32/F16/BF16 tensors (or raw bytes of any type, for tests of the reader's
/// refusals). Tensors are kept by reference until <see cref="Write"/>, which writes the file atomically.
/// </summary>
internal sealed class GgufWriter
{
    readonly List<KeyValuePair<string, GgufValue>> _metadata = [];
    readonly List<Pending> _tensors = [];

    sealed record Pending(string Name, ulong[] Dims, uint TypeId, long ByteSize, Action<Stream> WriteData);

    public uint Version { get; init; } = 3;

    /// <summary>Adds or replaces a metadata entry (file order is first-insertion order).</summary>
    public GgufWriter Set(string key, GgufValue value)
    {
        int i = _metadata.FindIndex(kv => kv.Key == key);
        if (i >= 0) _metadata[i] = new(key, value);
        else _metadata.Add(new(key, value));
        return this;
    }

    /// <summary>
    /// Adds a tensor from float32 values stored as <paramref name="type"/> (F32, F16 or BF16; the 16-bit types round
    /// to nearest even). <paramref name="dims"/> are in ggml order, innermost first.
    /// </summary>
    public GgufWriter AddTensor(string name, float[] data, ulong[] dims, GgufTensorType type = GgufTensorType.F32)
    {
        FloatEncoding e = type switch
        {
            GgufTensorType.F32 => FloatEncoding.F32,
            GgufTensorType.F16 => FloatEncoding.F16,
            GgufTensorType.BF16 => FloatEncoding.BF16,
            _ => throw new ArgumentException($"only F32, F16 and BF16 tensors can be written from floats, not {type}"),
        };
        ulong n = dims.Aggregate(1UL, (a, d) => checked(a * d));
        if (n != (ulong)data.LongLength) throw new ArgumentException($"tensor {name}: dims [{string.Join(", ", dims)}] hold {n} values, data has {data.LongLength}");
        return Add(new Pending(name, dims, (uint)type, data.LongLength * Float16.SizeOf(e), s => OutputFiles.WriteFloats(s, data, e)));
    }

    /// <summary>Adds a tensor whose bytes are written verbatim, with any type id.</summary>
    public GgufWriter AddRawTensor(string name, ulong[] dims, uint typeId, byte[] data) =>
        Add(new Pending(name, dims, typeId, data.LongLength, s => s.Write(data)));

    GgufWriter Add(Pending t)
    {
        if (t.Dims.Length is 0 or > 4) throw new ArgumentException($"tensor {t.Name}: GGUF tensors have 1 to 4 dims");
        if (_tensors.Any(x => x.Name == t.Name)) throw new ArgumentException($"tensor {t.Name} added twice");
        _tensors.Add(t);
        return this;
    }

    public void Write(string path)
    {
        long alignment = GgufFile.DefaultAlignment;
        var a = _metadata.FirstOrDefault(kv => kv.Key == "general.alignment").Value;
        if (a is not null && (!a.TryGetInteger(out alignment) || alignment <= 0 || (alignment & (alignment - 1)) != 0))
            throw new ArgumentException($"general.alignment {a} is not a positive power of two");

        var header = new MemoryStream();
        var w = new BinaryWriter(header, Encoding.UTF8);
        w.Write(GgufFile.Magic);
        w.Write(Version);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count);
        foreach (var (key, value) in _metadata)
        {
            WriteString(w, key);
            w.Write((uint)value.Type);
            WriteValue(w, value);
        }
        var offsets = new long[_tensors.Count];
        long offset = 0;
        for (int i = 0; i < _tensors.Count; i++)
        {
            var t = _tensors[i];
            WriteString(w, t.Name);
            w.Write((uint)t.Dims.Length);
            foreach (ulong d in t.Dims) w.Write(d);
            w.Write(t.TypeId);
            w.Write((ulong)offset);
            offsets[i] = offset;
            offset = Align(offset + t.ByteSize, alignment);
        }
        w.Flush();
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("GGUF writing needs a little-endian host");

        OutputFiles.WriteAtomically(path, s =>
        {
            header.Position = 0;
            header.CopyTo(s);
            Pad(s, Align(header.Length, alignment) - header.Length);
            long pos = 0;
            for (int i = 0; i < _tensors.Count; i++)
            {
                Pad(s, offsets[i] - pos);
                _tensors[i].WriteData(s);
                pos = offsets[i] + _tensors[i].ByteSize;
            }
        });
    }

    static long Align(long x, long a) => (x + a - 1) / a * a;

    static void Pad(Stream s, long n)
    {
        if (n > 0) s.Write(new byte[n]);
    }

    static void WriteString(BinaryWriter w, string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
    }

    // BinaryWriter writes little-endian, matching GGUF.
    static void WriteValue(BinaryWriter w, GgufValue v)
    {
        switch (v.Value)
        {
            case byte x: w.Write(x); break;
            case sbyte x: w.Write(x); break;
            case ushort x: w.Write(x); break;
            case short x: w.Write(x); break;
            case uint x: w.Write(x); break;
            case int x: w.Write(x); break;
            case float x: w.Write(x); break;
            case bool x: w.Write((byte)(x ? 1 : 0)); break;
            case string x: WriteString(w, x); break;
            case ulong x: w.Write(x); break;
            case long x: w.Write(x); break;
            case double x: w.Write(x); break;
            case GgufValue[] arrays:
                w.Write((uint)GgufValueType.Array);
                w.Write((ulong)arrays.Length);
                foreach (var inner in arrays) WriteValue(w, inner);
                break;
            case Array items:
                w.Write((uint)v.ElementType);
                w.Write((ulong)items.Length);
                foreach (var item in items) WriteValue(w, GgufValue.Scalar(v.ElementType, item));
                break;
            default:
                throw new ArgumentException($"cannot write metadata value {v}");
        }
    }
}
