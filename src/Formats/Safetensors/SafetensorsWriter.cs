using System.Buffers.Binary;
using System.Text.Json;

namespace NeuronTrace.Formats;

/// <summary>
/// Writes a safetensors file. Tensors are laid out back to back in the order added, with no gaps (the reference
/// implementation rejects holes), after a JSON header padded with spaces to a multiple of 8 bytes.
/// The header carries <c>"__metadata__": {"format": "pt"}</c>, which transformers expects.
/// </summary>
internal sealed class SafetensorsWriter
{
    sealed record Pending(string Name, string DType, long[] Shape, long ByteSize, Action<Stream> WriteData);

    readonly List<Pending> _tensors = [];
    readonly Dictionary<string, string> _metadata = new() { ["format"] = "pt" };

    public long DataBytes => _tensors.Sum(t => t.ByteSize);

    public SafetensorsWriter SetMetadata(string key, string value)
    {
        _metadata[key] = value;
        return this;
    }

    public SafetensorsWriter Add(string name, float[] data, long[] shape, FloatEncoding encoding = FloatEncoding.F32)
    {
        long n = shape.Aggregate(1L, (a, d) => checked(a * d));
        if (n != data.LongLength) throw new ArgumentException($"tensor {name}: shape [{string.Join(", ", shape)}] holds {n} values, data has {data.LongLength}");
        string dtype = encoding switch { FloatEncoding.F32 => "F32", FloatEncoding.F16 => "F16", _ => "BF16" };
        return Add(new Pending(name, dtype, shape, n * Float16.SizeOf(encoding), s => OutputFiles.WriteFloats(s, data, encoding)));
    }

    /// <summary>Adds bytes verbatim under any dtype name (for tests of the reader's refusals).</summary>
    public SafetensorsWriter AddRaw(string name, string dtype, long[] shape, byte[] data) =>
        Add(new Pending(name, dtype, shape, data.LongLength, s => s.Write(data)));

    SafetensorsWriter Add(Pending t)
    {
        if (t.Name == "__metadata__" || _tensors.Any(x => x.Name == t.Name)) throw new ArgumentException($"tensor name {t.Name} is reserved or already used");
        _tensors.Add(t);
        return this;
    }

    public void Write(string path)
    {
        var json = new MemoryStream();
        using (var w = new Utf8JsonWriter(json))
        {
            w.WriteStartObject();
            w.WriteStartObject("__metadata__");
            foreach (var (k, v) in _metadata) w.WriteString(k, v);
            w.WriteEndObject();
            long offset = 0;
            foreach (var t in _tensors)
            {
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", t.DType);
                w.WriteStartArray("shape");
                foreach (long d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + t.ByteSize);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += t.ByteSize;
            }
            w.WriteEndObject();
        }
        // Padding keeps the data section 8-byte aligned so readers can map it as typed arrays.
        while (json.Length % 8 != 0) json.WriteByte((byte)' ');

        OutputFiles.WriteAtomically(path, s =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)json.Length);
            s.Write(len);
            json.Position = 0;
            json.CopyTo(s);
            foreach (var t in _tensors) t.WriteData(s);
        });
    }
}
