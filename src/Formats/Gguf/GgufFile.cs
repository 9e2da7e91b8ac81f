// Over the ~350-line guide on purpose: the header parser, the layout check (tensors tile the data, file size) and the
// bounded reader of untrusted bytes are one trust boundary, kept in one file so every read goes through the same checks.
using NeuronTrace.Runtime;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using NeuronTrace.Model;

namespace NeuronTrace.Formats;

/// <summary>
/// A GGUF (v2 or v3, little-endian) file opened for reading: header, metadata, tensor table, and tensor data read
/// through a memory map. Opening parses and checks the header and table; tensor data is read on demand.
/// Every problem is a <see cref="ModelFormatException"/> naming the file.
/// </summary>
internal sealed class GgufFile : IDisposable
{
    public const uint Magic = 0x46554747; // "GGUF" read as a little-endian uint32
    public const uint DefaultAlignment = 32;
    const int MaxArrayNesting = 8;

    readonly MappedFile _file;
    readonly Dictionary<string, GgufValue> _metadata;
    readonly Dictionary<string, GgufTensorInfo> _tensorsByName;

    public string Path => _file.Path;
    public uint Version { get; }
    public long Alignment { get; }
    /// <summary>Absolute file offset where tensor data starts (aligned).</summary>
    public long DataOffset { get; }
    public IReadOnlyDictionary<string, GgufValue> Metadata => _metadata;
    /// <summary>Metadata keys in file order.</summary>
    public IReadOnlyList<string> MetadataKeys { get; }
    /// <summary>Tensor infos in file order.</summary>
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }

    GgufFile(MappedFile file, uint version, long alignment, long dataOffset, Dictionary<string, GgufValue> metadata,
        List<string> keys, List<GgufTensorInfo> tensors)
    {
        _file = file; Version = version; Alignment = alignment; DataOffset = dataOffset;
        _metadata = metadata; MetadataKeys = keys; Tensors = tensors;
        _tensorsByName = tensors.ToDictionary(t => t.Name);
    }

    public static GgufFile Open(string path) => MappedFile.OpenAndParse(path, Parse);

    static GgufFile Parse(MappedFile file)
    {
        string path = file.Path;
        if (file.Length < 4)
            throw new ModelFormatException(path, $"truncated header: {file.Length} bytes, too short for the GGUF magic");
        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(file.Span(0, 4));
        if (magic != Magic)
            throw new ModelFormatException(path, $"bad magic 0x{magic:X8} ({ErrorText.Quote(Printable(file.Span(0, 4)))}), expected \"GGUF\": not a GGUF file");

        var r = new Reader(file, 4);
        uint version = r.U32("version");
        if (version is 2 or 3)
        {
            // supported: v2 introduced 64-bit counts, v3 only added big-endian files (which start differently, below)
        }
        else if (BinaryPrimitives.ReverseEndianness(version) is 2 or 3)
            throw new ModelFormatException(path, "big-endian GGUF is not supported");
        else
            throw new ModelFormatException(path, $"unsupported GGUF version {version} (only 2 and 3 are supported)");

        ulong tensorCount = r.U64("tensor count");
        ulong kvCount = r.U64("metadata count");
        // Each entry needs at least a few bytes, so a count larger than the file is corruption, not a big model.
        if (tensorCount > (ulong)file.Length / 8 || kvCount > (ulong)file.Length / 8)
            throw new ModelFormatException(path, $"truncated header: {tensorCount} tensors and {kvCount} metadata entries cannot fit in {file.Length} bytes");

        var metadata = new Dictionary<string, GgufValue>(StringComparer.Ordinal);
        var keys = new List<string>();
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = r.String("metadata key");
            var type = (GgufValueType)r.U32($"type of metadata {ErrorText.Name(key)}");
            var value = r.Value(type, key, 0);
            if (!metadata.TryAdd(key, value))
                throw new ModelFormatException(path, $"metadata key {ErrorText.Name(key)} appears twice");
            keys.Add(key);
        }

        long alignment = DefaultAlignment;
        if (metadata.TryGetValue("general.alignment", out var a))
        {
            if (!a.TryGetInteger(out alignment) || alignment <= 0 || (alignment & (alignment - 1)) != 0)
                throw new ModelFormatException(path, $"general.alignment is {a}, expected a positive power of two");
        }

        var infos = new List<(string Name, ulong[] Dims, uint Type, ulong Offset, long Count)>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = r.String("tensor name");
            if (!names.Add(name)) throw new ModelFormatException(path, $"tensor {ErrorText.Name(name)} appears twice");
            uint nDims = r.U32($"dimension count of tensor {ErrorText.Name(name)}");
            if (nDims is 0 or > 4)
                throw new ModelFormatException(path, $"tensor {ErrorText.Name(name)} has {nDims} dimensions (GGUF allows 1 to 4)");
            var dims = new ulong[nDims];
            long count = 1;
            for (int d = 0; d < nDims; d++)
            {
                dims[d] = r.U64($"dimensions of tensor {ErrorText.Name(name)}");
                // The product must stay a valid long: a wrapped-around count would pass the bounds checks below.
                if (dims[d] > long.MaxValue || (dims[d] != 0 && count > long.MaxValue / (long)dims[d]))
                    throw new ModelFormatException(path, $"tensor {ErrorText.Name(name)} dims [{string.Join(", ", dims.Take(d + 1))}] overflow the element count");
                count *= (long)dims[d];
            }
            uint type = r.U32($"type of tensor {ErrorText.Name(name)}");
            ulong offset = r.U64($"offset of tensor {ErrorText.Name(name)}");
            infos.Add((name, dims, type, offset, count));
        }

        long dataOffset = AlignUp(r.Position, alignment);
        long dataLength = Math.Max(0, file.Length - dataOffset);
        var tensors = new List<GgufTensorInfo>(infos.Count);
        foreach (var (name, dims, type, offset, count) in infos)
        {
            if (offset % (ulong)alignment != 0)
                throw new ModelFormatException(path, $"tensor {ErrorText.Name(name)} offset {offset} is not a multiple of the alignment {alignment}");
            var info = new GgufTensorInfo
            {
                Name = name, Dims = dims, TypeId = type, Offset = offset, ElementCount = count,
                FileOffset = offset <= (ulong)dataLength ? dataOffset + (long)offset : long.MaxValue,
            };
            // For types this reader cannot decode the size is unknown (0 here); the start must still lie inside the file.
            long size = info.Encoding is not { } e ? 0 : count > long.MaxValue / 4 ? long.MaxValue : count * Float16.SizeOf(e);
            if (offset > (ulong)dataLength || size > dataLength - (long)offset)
            {
                string end = size == long.MaxValue ? "beyond 2^63" : ((decimal)dataOffset + offset + size).ToString();
                throw new ModelFormatException(path, $"tensor {ErrorText.Name(name)} data (bytes {(decimal)dataOffset + offset}..{end}) runs past the end of the file ({file.Length} bytes)");
            }
            tensors.Add(info);
        }
        CheckLayout(path, tensors, file.Length, dataOffset, alignment);
        return new GgufFile(file, version, alignment, dataOffset, metadata, keys, tensors);
    }

    /// <summary>
    /// The data section end to end: sorted by offset, the tensors start at 0, do not overlap, leave only alignment
    /// padding between them, and the file ends with the last one (or with its padding to the alignment). Bytes inserted, junk
    /// appended or tensors aliased would otherwise load as garbage weights. Skipped when a tensor's type (and so its
    /// size) is unknown: such files can only have their metadata read.
    /// </summary>
    static void CheckLayout(string path, List<GgufTensorInfo> tensors, long fileLength, long dataOffset, long alignment)
    {
        if (tensors.Any(t => t.Encoding is null)) return;
        long end = 0;
        string? previous = null;
        foreach (var t in tensors.OrderBy(t => t.Offset))
        {
            long start = (long)t.Offset, size = t.ElementCount * Float16.SizeOf(t.Encoding!.Value);
            if (start < end)
                throw new ModelFormatException(path, $"tensor {ErrorText.Name(t.Name)} (data bytes {start}..{start + size}) overlaps tensor {ErrorText.Name(previous)} (ending at {end})");
            if (start - end >= alignment)
                throw new ModelFormatException(path, previous is null
                    ? $"the data section starts with {start} bytes before the first tensor {ErrorText.Name(t.Name)} (more than the alignment {alignment} allows)"
                    : $"{start - end} unused bytes between tensors {ErrorText.Name(previous)} and {ErrorText.Name(t.Name)} (more than the alignment {alignment} allows)");
            end = start + size;
            previous = t.Name;
        }
        long dataLength = fileLength - dataOffset;
        if (tensors.Count > 0 && dataLength != end && dataLength != AlignUp(end, alignment))
            throw new ModelFormatException(path, $"{dataLength - end} bytes after the last tensor {ErrorText.Name(previous)}: the file is {fileLength} bytes but its tensors end at byte {dataOffset + end}");
    }

    static long AlignUp(long x, long alignment) => (x + alignment - 1) / alignment * alignment;

    static string Printable(ReadOnlySpan<byte> b)
    {
        var sb = new StringBuilder();
        foreach (byte c in b) sb.Append(c is >= 0x20 and < 0x7F ? (char)c : '.');
        return sb.ToString();
    }

    // ---- metadata accessors: ModelFormatException on a wrong type, naming the key ----

    public bool Contains(string key) => _metadata.ContainsKey(key);

    public string? GetStringOrNull(string key) => _metadata.TryGetValue(key, out var v)
        ? v.Value as string ?? throw WrongType(key, v, "a string")
        : null;

    public string GetString(string key) => GetStringOrNull(key) ?? throw Missing(key);

    public long? GetIntegerOrNull(string key) => _metadata.TryGetValue(key, out var v)
        ? v.TryGetInteger(out long x) ? x : throw WrongType(key, v, "an integer")
        : null;

    public long GetInteger(string key) => GetIntegerOrNull(key) ?? throw Missing(key);

    /// <summary>An integer that must fit an int (sizes, counts, token ids).</summary>
    public int? GetInt32OrNull(string key)
    {
        long? v = GetIntegerOrNull(key);
        if (v is null) return null;
        if (v < int.MinValue || v > int.MaxValue) throw new ModelFormatException(Path, $"metadata {ErrorText.Name(key)} = {v} is out of range");
        return (int)v;
    }

    public int GetInt32(string key) => GetInt32OrNull(key) ?? throw Missing(key);

    public double? GetRealOrNull(string key) => _metadata.TryGetValue(key, out var v)
        ? v.TryGetReal(out double x) ? x : throw WrongType(key, v, "a number")
        : null;

    /// <summary>An array whose elements are of <typeparamref name="T"/>'s GGUF type, or null when absent.</summary>
    public T[]? GetArrayOrNull<T>(string key) => _metadata.TryGetValue(key, out var v)
        ? v.Value as T[] ?? throw WrongType(key, v, $"an array of {typeof(T).Name}")
        : null;

    /// <summary>An array of any integer element type, widened to int.</summary>
    public int[]? GetInt32ArrayOrNull(string key)
    {
        if (!_metadata.TryGetValue(key, out var v)) return null;
        if (v.Type != GgufValueType.Array) throw WrongType(key, v, "an integer array");
        var src = (Array)v.Value;
        var dst = new int[src.Length];
        for (int i = 0; i < dst.Length; i++)
        {
            long x = src.GetValue(i) switch
            {
                byte b => b, sbyte b => b, ushort b => b, short b => b, uint b => b, int b => b, long b => b,
                ulong b when b <= int.MaxValue => (long)b,
                _ => throw WrongType(key, v, "an integer array"),
            };
            if (x < int.MinValue || x > int.MaxValue) throw new ModelFormatException(Path, $"metadata {ErrorText.Name(key)}[{i}] = {x} is out of range");
            dst[i] = (int)x;
        }
        return dst;
    }

    ModelFormatException Missing(string key) => new(Path, $"missing metadata key {ErrorText.Name(key)}");
    ModelFormatException WrongType(string key, GgufValue v, string expected) => new(Path, $"metadata {ErrorText.Name(key)} is {v}, expected {expected}");

    // ---- tensors ----

    public GgufTensorInfo? FindTensor(string name) => _tensorsByName.GetValueOrDefault(name);

    public float[] ReadTensor(string name) =>
        ReadTensor(FindTensor(name) ?? throw new ModelFormatException(Path, $"tensor {ErrorText.Name(name)} is missing"));

    /// <summary>The tensor converted to float32, in storage order (innermost dimension contiguous).</summary>
    public float[] ReadTensor(GgufTensorInfo t)
    {
        if (t.Encoding is not { } e)
        {
            // An id ggml has no name for is printed once, as a number; a known one by its name and id.
            string type = !Enum.IsDefined(typeof(GgufTensorType), t.TypeId) ? $"unknown type {t.TypeId}"
                : t.TypeId is (uint)GgufTensorType.I8 or (uint)GgufTensorType.I16 or (uint)GgufTensorType.I32
                    or (uint)GgufTensorType.I64 or (uint)GgufTensorType.F64 ? $"type {t.TypeName} ({t.TypeId})"
                : $"quantized type {t.TypeName} ({t.TypeId})";
            throw new ModelFormatException(Path, $"tensor {t.Name}: {type} is not supported (only F32, F16 and BF16 tensors can be loaded)");
        }
        if (t.ElementCount > Array.MaxLength)
            throw new ModelFormatException(Path, $"tensor {t.Name} has {t.ElementCount} elements, too many for one array");
        var dst = new float[t.ElementCount];
        _file.ReadFloats(t.FileOffset, e, dst);
        return dst;
    }

    /// <summary>
    /// A weight matrix: F16 and BF16 tensors stay 16-bit, mapped from the file (read when a product first uses them);
    /// F32 tensors are read into an array as by <see cref="ReadTensor(GgufTensorInfo)"/>.
    /// </summary>
    public WeightData ReadWeight(GgufTensorInfo t) => t.Encoding switch
    {
        FloatEncoding.BF16 => new WeightData(_file.MapHalf(t.FileOffset, t.ElementCount, HalfFormat.BFloat16)),
        FloatEncoding.F16 => new WeightData(_file.MapHalf(t.FileOffset, t.ElementCount, HalfFormat.Float16)),
        _ => ReadTensor(t),
    };

    public void Dispose() => _file.Dispose();

    /// <summary>A bounds-checked little-endian cursor over the header; running off the end is a truncated header.</summary>
    struct Reader(MappedFile file, long position)
    {
        public long Position = position;

        ReadOnlySpan<byte> Take(long n, string what)
        {
            if (n < 0 || n > file.Length - Position)
                throw new ModelFormatException(file.Path, $"truncated header: reading {what} needs {n} bytes at offset {Position}, but the file has {file.Length} bytes");
            if (n > int.MaxValue)
                throw new ModelFormatException(file.Path, $"{what} is {n} bytes long, more than this reader supports");
            var s = file.Span(Position, (int)n);
            Position += n;
            return s;
        }

        public uint U32(string what) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, what));
        public ulong U64(string what) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, what));

        public string String(string what)
        {
            ulong len = U64(what);
            if (len > (ulong)(file.Length - Position))
                throw new ModelFormatException(file.Path, $"truncated header: {what} at offset {Position - 8} claims {len} bytes, but only {file.Length - Position} remain");
            return Encoding.UTF8.GetString(Take((long)len, what));
        }

        public GgufValue Value(GgufValueType type, string key, int depth)
        {
            switch (type)
            {
                case GgufValueType.UInt8: return GgufValue.From(Take(1, key)[0]);
                case GgufValueType.Int8: return GgufValue.From((sbyte)Take(1, key)[0]);
                case GgufValueType.UInt16: return GgufValue.From(BinaryPrimitives.ReadUInt16LittleEndian(Take(2, key)));
                case GgufValueType.Int16: return GgufValue.From(BinaryPrimitives.ReadInt16LittleEndian(Take(2, key)));
                case GgufValueType.UInt32: return GgufValue.From(BinaryPrimitives.ReadUInt32LittleEndian(Take(4, key)));
                case GgufValueType.Int32: return GgufValue.From(BinaryPrimitives.ReadInt32LittleEndian(Take(4, key)));
                case GgufValueType.Float32: return GgufValue.From(BinaryPrimitives.ReadSingleLittleEndian(Take(4, key)));
                case GgufValueType.Bool: return GgufValue.From(Take(1, key)[0] != 0);
                case GgufValueType.String: return GgufValue.From(String(key));
                case GgufValueType.UInt64: return GgufValue.From(BinaryPrimitives.ReadUInt64LittleEndian(Take(8, key)));
                case GgufValueType.Int64: return GgufValue.From(BinaryPrimitives.ReadInt64LittleEndian(Take(8, key)));
                case GgufValueType.Float64: return GgufValue.From(BinaryPrimitives.ReadDoubleLittleEndian(Take(8, key)));
                case GgufValueType.Array: return Array(key, depth);
                default: throw new ModelFormatException(file.Path, $"metadata {ErrorText.Name(key)} has unknown value type {(uint)type}");
            }
        }

        GgufValue Array(string key, int depth)
        {
            if (depth >= MaxArrayNesting)
                throw new ModelFormatException(file.Path, $"metadata {ErrorText.Name(key)} nests arrays more than {MaxArrayNesting} deep");
            var et = (GgufValueType)U32($"element type of {ErrorText.Name(key)}");
            ulong n = U64($"length of {ErrorText.Name(key)}");
            long remaining = file.Length - Position;
            // Every element takes at least one byte (strings and arrays at least 8): refuse counts the file cannot hold
            // before allocating anything.
            long minSize = et switch
            {
                GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
                GgufValueType.UInt16 or GgufValueType.Int16 => 2,
                GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
                GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 => 8,
                GgufValueType.String => 8,
                GgufValueType.Array => 12,
                _ => throw new ModelFormatException(file.Path, $"metadata {ErrorText.Name(key)} is an array of unknown value type {(uint)et}"),
            };
            if (n > (ulong)(remaining / minSize))
                throw new ModelFormatException(file.Path, $"truncated header: array {ErrorText.Name(key)} claims {n} elements, but only {remaining} bytes remain");
            int count = (int)n;
            switch (et)
            {
                case GgufValueType.UInt8: return GgufValue.From(Numbers<byte>(count, key));
                case GgufValueType.Int8: return GgufValue.From(Numbers<sbyte>(count, key));
                case GgufValueType.UInt16: return GgufValue.From(Numbers<ushort>(count, key));
                case GgufValueType.Int16: return GgufValue.From(Numbers<short>(count, key));
                case GgufValueType.UInt32: return GgufValue.From(Numbers<uint>(count, key));
                case GgufValueType.Int32: return GgufValue.From(Numbers<int>(count, key));
                case GgufValueType.Float32: return GgufValue.From(Numbers<float>(count, key));
                case GgufValueType.UInt64: return GgufValue.From(Numbers<ulong>(count, key));
                case GgufValueType.Int64: return GgufValue.From(Numbers<long>(count, key));
                case GgufValueType.Float64: return GgufValue.From(Numbers<double>(count, key));
                case GgufValueType.Bool:
                {
                    var raw = Take(count, key);
                    var b = new bool[count];
                    for (int i = 0; i < count; i++) b[i] = raw[i] != 0;
                    return GgufValue.From(b);
                }
                case GgufValueType.String:
                {
                    var s = new string[count];
                    for (int i = 0; i < count; i++) s[i] = String(key);
                    return GgufValue.From(s);
                }
                default:
                {
                    var items = new GgufValue[count];
                    for (int i = 0; i < count; i++) items[i] = Array(key, depth + 1);
                    return GgufValue.ArrayOf(GgufValueType.Array, items);
                }
            }
        }

        T[] Numbers<T>(int count, string key) where T : unmanaged
        {
            var raw = Take((long)count * Marshal.SizeOf<T>(), key);
            var a = new T[count];
            raw.CopyTo(MemoryMarshal.AsBytes(a.AsSpan()));
            if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("GGUF reading needs a little-endian host");
            return a;
        }
    }
}
