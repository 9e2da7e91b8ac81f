using System.IO.MemoryMappedFiles;
using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Formats;

/// <summary>
/// A read-only memory map of a whole file, read through spans. Checkpoints are gigabytes: mapping lets the loaders
/// copy each tensor straight from the page cache into its float32 array without an intermediate buffer.
/// Every access is bounds-checked and reports a <see cref="ModelFormatException"/> naming the file.
/// </summary>
internal sealed unsafe class MappedFile : IDisposable
{
    readonly MemoryMappedFile? _map;
    readonly MemoryMappedViewAccessor? _view;
    byte* _ptr;
    bool _shared;   // 16-bit tensors point into the map: it lives until they are unreachable (see the finalizer)

    public string Path { get; }
    public long Length { get; }

    MappedFile(string path, long length, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* ptr)
    {
        Path = path; Length = length; _map = map; _view = view; _ptr = ptr;
    }

    /// <summary>Maps <paramref name="path"/> and parses it; the mapping is released when the parse throws (the parsed object owns it otherwise).</summary>
    public static T OpenAndParse<T>(string path, Func<MappedFile, T> parse)
    {
        var file = Open(path);
        try
        {
            return parse(file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public static MappedFile Open(string path)
    {
        if (!File.Exists(path)) throw new ModelFormatException(path, "file not found");
        InputFiles.RequireRegular(path);
        FileStream? fs = null;
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        try
        {
            fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
            long length = fs.Length;
            // An empty file cannot be mapped; the callers' size checks report it as truncated.
            if (length == 0) { fs.Dispose(); return new MappedFile(path, 0, null, null, null); }
            map = MemoryMappedFile.CreateFromFile(fs, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            fs = null; // owned by the map now
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            return new MappedFile(path, length, map, view, p + view.PointerOffset);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            view?.Dispose(); map?.Dispose(); fs?.Dispose();
            throw new ModelFormatException(path, $"cannot open: {e.Message}");
        }
    }

    void CheckRange(long offset, long count)
    {
        if (offset < 0 || count < 0 || offset > Length || count > Length - offset)
            throw new ModelFormatException(Path, $"truncated: needs bytes {offset}..{offset + count} but the file has {Length} bytes");
        ObjectDisposedException.ThrowIf(_ptr == null && Length > 0, this);
    }

    public ReadOnlySpan<byte> Span(long offset, int count)
    {
        CheckRange(offset, count);
        return count == 0 ? default : new ReadOnlySpan<byte>(_ptr + offset, count);
    }

    /// <summary>
    /// <paramref name="count"/> 16-bit values at <paramref name="offset"/>, left in the map (nothing is read until a
    /// product touches them). From then on <see cref="Dispose"/> leaves the map open: the returned weights keep this
    /// object reachable, and the finalizer unmaps once they are all gone.
    /// </summary>
    public HalfWeights MapHalf(long offset, long count, HalfFormat format)
    {
        CheckRange(offset, count * 2);
        _shared = true;
        return new HalfWeights((ushort*)(_ptr + offset), count, format, this);
    }

    /// <summary>Decodes <paramref name="dst"/>.Length values stored with <paramref name="encoding"/> starting at <paramref name="offset"/>.</summary>
    public void ReadFloats(long offset, FloatEncoding encoding, Span<float> dst)
    {
        int size = Float16.SizeOf(encoding);
        CheckRange(offset, (long)dst.Length * size);
        // Spans are int-sized in bytes, and one float32 tensor can exceed 2 GiB: convert in chunks.
        const int ChunkValues = 1 << 26;
        for (int done = 0; done < dst.Length; done += ChunkValues)
        {
            int n = Math.Min(ChunkValues, dst.Length - done);
            var src = new ReadOnlySpan<byte>(_ptr + offset + (long)done * size, n * size);
            Float16.Decode(src, encoding, dst.Slice(done, n));
        }
    }

    public void Dispose()
    {
        if (_shared) return;
        Release();
        GC.SuppressFinalize(this);
    }

    // Runs only for a map shared with 16-bit weights, once none is reachable. The view's SafeHandle is a critical
    // finalizable object, finalized after this one, so it is still valid here.
    ~MappedFile() => Release();

    void Release()
    {
        if (_view is not null && _ptr != null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _ptr = null;
        }
        _view?.Dispose();
        _map?.Dispose();
    }
}
