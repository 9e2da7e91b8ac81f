using System.Buffers.Binary;
using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Formats;

/// <summary>One tensor entry of a safetensors header. Offsets are relative to the data section.</summary>
internal sealed record SafetensorsTensorInfo(string Name, string DType, long[] Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (a, d) => a * d);
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// A safetensors file opened for reading: <c>u64 header length, JSON header, data</c>. Opening validates every
/// entry's shape and byte range; tensors are read on demand through a memory map and converted to float32.
/// </summary>
internal sealed class SafetensorsFile : IDisposable
{
    // The reference implementation refuses headers over 100 MB; a larger length is corruption.
    const long MaxHeaderBytes = 100_000_000;

    readonly MappedFile _file;

    public string Path => _file.Path;
    /// <summary>Absolute offset of the data section.</summary>
    public long DataOffset { get; }
    public long DataLength => _file.Length - DataOffset;
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public IReadOnlyDictionary<string, SafetensorsTensorInfo> Tensors { get; }

    SafetensorsFile(MappedFile file, long dataOffset, Dictionary<string, string> metadata, Dictionary<string, SafetensorsTensorInfo> tensors)
    {
        _file = file; DataOffset = dataOffset; Metadata = metadata; Tensors = tensors;
    }

    /// <summary>Bytes per element of the dtypes in the safetensors spec; null for an unknown dtype.</summary>
    public static int? DTypeSize(string dtype) => dtype switch
    {
        "BOOL" or "U8" or "I8" or "F8_E5M2" or "F8_E4M3" => 1,
        "I16" or "U16" or "F16" or "BF16" => 2,
        "I32" or "U32" or "F32" => 4,
        "I64" or "U64" or "F64" => 8,
        _ => null,
    };

    public static FloatEncoding? DTypeEncoding(string dtype) => dtype switch
    {
        "F32" => FloatEncoding.F32,
        "F16" => FloatEncoding.F16,
        "BF16" => FloatEncoding.BF16,
        _ => null,
    };

    public static SafetensorsFile Open(string path) => MappedFile.OpenAndParse(path, Parse);

    static SafetensorsFile Parse(MappedFile file)
    {
        string path = file.Path;
        if (file.Length < 8)
            throw new ModelFormatException(path, $"truncated: {file.Length} bytes, too short for the safetensors header length");
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(file.Span(0, 8));
        if (headerLength > (ulong)(file.Length - 8))
            throw new ModelFormatException(path, $"truncated: header length {headerLength} but the file has only {file.Length - 8} bytes after it");
        if (headerLength > MaxHeaderBytes)
            throw new ModelFormatException(path, $"header length {headerLength} is over the 100 MB limit");
        long dataOffset = 8 + (long)headerLength;
        long dataLength = file.Length - dataOffset;

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(file.Span(8, (int)headerLength).ToArray());
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"header is not valid JSON ({e.Message.ReplaceLineEndings(" ")})");
        }
        using (doc)
        {
            JsonStrings.RequireValid(doc.RootElement, path, "header");
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(path, "header is not a JSON object");
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var tensors = new Dictionary<string, SafetensorsTensorInfo>(StringComparer.Ordinal);
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new ModelFormatException(path, "header __metadata__ is not an object");
                    foreach (var m in prop.Value.EnumerateObject())
                        metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                    continue;
                }
                var info = ParseEntry(path, prop);
                if (!tensors.TryAdd(info.Name, info))
                    throw new ModelFormatException(path, $"header lists tensor {info.Name} twice");
                CheckRange(path, info, dataLength);
            }
            CheckCoverage(path, tensors.Values, dataLength);
            return new SafetensorsFile(file, dataOffset, metadata, tensors);
        }
    }

    static SafetensorsTensorInfo ParseEntry(string path, JsonProperty prop)
    {
        string name = prop.Name;
        var e = prop.Value;
        ModelFormatException Bad(string what) => new(path, $"header entry for tensor {name} {what}");
        if (e.ValueKind != JsonValueKind.Object) throw Bad("is not an object");
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String) throw Bad("has no string \"dtype\"");
        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array) throw Bad("has no \"shape\" array");
        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw Bad("has no two-element \"data_offsets\"");
        var shape = new long[sh.GetArrayLength()];
        long count = 1;
        for (int i = 0; i < shape.Length; i++)
        {
            if (!TryGetCount(sh[i], out shape[i])) throw Bad($"has a bad dimension {sh[i].GetRawText()} in its shape");
            if (shape[i] != 0 && count > long.MaxValue / 8 / shape[i]) throw Bad("has a shape whose size overflows");
            count *= shape[i];
        }
        if (!TryGetCount(off[0], out long begin) || !TryGetCount(off[1], out long end))
            throw Bad($"has bad data_offsets {off.GetRawText()}");
        return new SafetensorsTensorInfo(name, dt.GetString()!, shape, begin, end);
    }

    // TryGetInt64 throws on anything but a JSON number, so a quoted "8192" must be turned away before asking.
    static bool TryGetCount(JsonElement e, out long value)
    {
        value = 0;
        return e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out value) && value >= 0;
    }

    static void CheckRange(string path, SafetensorsTensorInfo t, long dataLength)
    {
        if (t.Begin > t.End || t.End > dataLength)
            throw new ModelFormatException(path, $"header says tensor {t.Name} spans bytes {t.Begin}..{t.End} but the data section has {dataLength} bytes");
        if (DTypeSize(t.DType) is { } size && t.End - t.Begin != t.ElementCount * size)
            throw new ModelFormatException(path, $"header says tensor {t.Name} spans bytes {t.Begin}..{t.End} ({t.End - t.Begin} bytes) but {t.DType} {t.ShapeText} needs {t.ElementCount * size}");
    }

    /// <summary>
    /// The safetensors spec requires the tensors to tile the data section exactly: sorted by start, the first begins at
    /// 0, each begins where the previous one ended, and the last ends at the end of the file. This refuses headers that
    /// point two tensors at the same bytes and files with unindexed bytes (which the reference loader rejects too).
    /// </summary>
    static void CheckCoverage(string path, IEnumerable<SafetensorsTensorInfo> tensors, long dataLength)
    {
        long end = 0;
        SafetensorsTensorInfo? previous = null;
        foreach (var t in tensors.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (t.Begin < end)
                throw new ModelFormatException(path, $"header says tensor {t.Name} starts at byte {t.Begin}, inside tensor {previous!.Name} (bytes {previous.Begin}..{previous.End})");
            if (t.Begin > end)
                throw new ModelFormatException(path, previous is null
                    ? $"header says the first tensor, {t.Name}, starts at byte {t.Begin}; the data must start at 0"
                    : $"header leaves bytes {end}..{t.Begin} unused between tensors {previous.Name} and {t.Name}");
            end = t.End;
            previous = t;
        }
        if (end != dataLength)
            throw new ModelFormatException(path, previous is null
                ? $"header lists no tensors but the data section has {dataLength} bytes"
                : $"{dataLength - end} bytes after the last tensor, {previous.Name} (ends at byte {end} of {dataLength})");
    }

    public SafetensorsTensorInfo? Find(string name) => Tensors.GetValueOrDefault(name);

    public float[] ReadTensor(string name) =>
        ReadTensor(Find(name) ?? throw new ModelFormatException(Path, $"tensor {name} is missing"));

    /// <summary>The tensor converted to float32, row-major.</summary>
    public float[] ReadTensor(SafetensorsTensorInfo t)
    {
        if (DTypeEncoding(t.DType) is not { } e)
            throw new ModelFormatException(Path, $"tensor {t.Name}: dtype {t.DType} is not supported (only F32, F16 and BF16 tensors can be loaded)");
        if (t.ElementCount > Array.MaxLength)
            throw new ModelFormatException(Path, $"tensor {t.Name} has {t.ElementCount} elements, too many for one array");
        var dst = new float[t.ElementCount];
        _file.ReadFloats(DataOffset + t.Begin, e, dst);
        return dst;
    }

    /// <summary>
    /// A weight matrix: F16 and BF16 tensors stay 16-bit, mapped from the file (read when a product first uses them);
    /// F32 tensors are read into an array as by <see cref="ReadTensor(SafetensorsTensorInfo)"/>.
    /// </summary>
    public WeightData ReadWeight(SafetensorsTensorInfo t) => DTypeEncoding(t.DType) switch
    {
        FloatEncoding.BF16 => new WeightData(_file.MapHalf(DataOffset + t.Begin, t.ElementCount, HalfFormat.BFloat16)),
        FloatEncoding.F16 => new WeightData(_file.MapHalf(DataOffset + t.Begin, t.ElementCount, HalfFormat.Float16)),
        _ => ReadTensor(t),
    };

    public void Dispose() => _file.Dispose();
}
