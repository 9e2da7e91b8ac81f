using System.Numerics;
using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// A caching allocator over a raw device allocator (cuMemAlloc). A forward pass allocates and frees the same few
/// dozen shapes again and again; cuMemAlloc costs microseconds to milliseconds and cuMemFree synchronises the whole
/// device, so every tensor going straight to the driver stalls the stream once per op. Freed blocks wait in free
/// lists by size class and are handed out again, lowest address first.
/// Safe because all work runs on one stream: a block freed while a queued kernel still reads it is only ever reused
/// by work queued after that kernel. Thread-safe (a tensor may be finalised on the finalizer thread).
/// </summary>
internal sealed class DeviceMemoryPool : IDisposable
{
    readonly Func<long, SafeHandle?> allocateRaw;
    readonly Lock gate = new();
    // Per size class, the free blocks by address: a request gets the lowest-addressed one, so the same live set gives
    // the same addresses whatever order blocks were freed in (GraphReplayRuntime replays only work on the same buffers).
    readonly Dictionary<long, PriorityQueue<SafeHandle, nint>> free = [];
    bool disposed;

    /// <param name="allocateRaw">Allocates a block of exactly this many bytes (its handle value is the address; disposing
    /// it frees the block), or returns null when the device is out of memory (the pool then frees its cache and retries).</param>
    public DeviceMemoryPool(Func<long, SafeHandle?> allocateRaw) => this.allocateRaw = allocateRaw;

    /// <summary>Blocks taken from the raw allocator so far.</summary>
    public long RawAllocations { get; private set; }
    /// <summary>Bytes of the blocks now waiting in the free lists.</summary>
    public long CachedBytes { get; private set; }
    /// <summary>Bytes of the blocks now handed out (rounded to their size class).</summary>
    public long UsedBytes { get; private set; }
    /// <summary>The most <see cref="UsedBytes"/> has been since the pool was made or <see cref="ResetPeak"/>: the device memory high-water mark.</summary>
    public long PeakUsedBytes { get; private set; }

    /// <summary>Starts a new high-water mark from the bytes in use now.</summary>
    public void ResetPeak()
    {
        lock (gate) PeakUsedBytes = UsedBytes;
    }

    /// <summary>
    /// The size class of a request: a multiple of 512 bytes, and above 8 KiB a multiple of a sixteenth of the next power
    /// of two, so a block is less than 12.5% larger than asked and nearby sizes (a smaller last batch) share blocks.
    /// </summary>
    public static long SizeClass(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        long step = Math.Max(512, (long)BitOperations.RoundUpToPowerOf2((ulong)Math.Max(bytes, 1)) / 16);
        return (bytes + step - 1) / step * step;
    }

    /// <summary>A block of at least <paramref name="bytes"/> (&gt; 0) bytes, contents undefined; disposing it returns it to the pool.</summary>
    public SafeHandle Rent(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        long size = SizeClass(bytes);
        SafeHandle? block = null;
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (free.TryGetValue(size, out var list) && list.TryDequeue(out block, out _)) CachedBytes -= size;
            UsedBytes += size;
            PeakUsedBytes = Math.Max(PeakUsedBytes, UsedBytes);
        }
        try
        {
            block ??= AllocateRaw(size);
        }
        catch
        {
            lock (gate) UsedBytes -= size;
            throw;
        }
        return new PooledBlock(this, block, size);
    }

    /// <summary>
    /// A block straight from the raw allocator that never enters the free lists (disposing it frees it), counted in
    /// <see cref="UsedBytes"/> and the high-water mark. For memory that work queued <em>before</em> now will use: a graph's
    /// staging buffers and cuBLAS's capture workspace are allocated when a held segment is issued, and a cached block
    /// could be one that the segment's own ops still use (freed later in the segment) — and it would change which
    /// blocks the following passes get, so their addresses, and so their graphs, would never repeat.
    /// </summary>
    public SafeHandle RentOutsideCache(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        var block = allocateRaw(bytes) ?? throw new OutOfMemoryException($"device out of memory allocating {bytes} bytes ({UsedBytes} bytes in use)");
        lock (gate)
        {
            RawAllocations++;
            UsedBytes += bytes;
            PeakUsedBytes = Math.Max(PeakUsedBytes, UsedBytes);
        }
        return new PooledBlock(this, block, bytes, cached: false);
    }

    SafeHandle AllocateRaw(long size)
    {
        var block = allocateRaw(size);
        if (block is null)
        {
            // Out of memory: the cache may hold enough in other size classes.
            Trim();
            block = allocateRaw(size) ?? throw new OutOfMemoryException($"device out of memory allocating {size} bytes ({UsedBytes} bytes in use)");
        }
        lock (gate) RawAllocations++;
        return block;
    }

    /// <summary>
    /// Called before <see cref="Trim"/> frees cached blocks: a runtime that holds work not yet issued
    /// (<see cref="GraphReplayRuntime"/>) issues it, since that work may use blocks freed since.
    /// </summary>
    public event Action? BeforeTrim;

    /// <summary>Frees every cached block back to the raw allocator.</summary>
    public void Trim()
    {
        BeforeTrim?.Invoke();
        List<SafeHandle> blocks;
        lock (gate)
        {
            blocks = free.Values.SelectMany(q => q.UnorderedItems.Select(e => e.Element)).ToList();
            free.Clear();
            CachedBytes = 0;
        }
        foreach (var b in blocks) b.Dispose();
    }

    void Return(SafeHandle block, long size)
    {
        lock (gate)
        {
            UsedBytes -= size;
            if (!disposed)
            {
                if (!free.TryGetValue(size, out var list)) free[size] = list = new PriorityQueue<SafeHandle, nint>();
                list.Enqueue(block, block.DangerousGetHandle());
                CachedBytes += size;
                return;
            }
        }
        block.Dispose();   // the pool is gone: straight back to the driver
    }

    public void Dispose()
    {
        lock (gate) disposed = true;
        Trim();
    }

    /// <summary>
    /// What <see cref="Rent"/> and <see cref="RentOutsideCache"/> hand out: the raw block's address; releasing it returns
    /// the block to the pool's free lists (when it was rented as cached) or frees it.
    /// </summary>
    sealed class PooledBlock : SafeHandle
    {
        readonly DeviceMemoryPool pool;
        readonly SafeHandle block;
        readonly long size;
        readonly bool cached;

        public PooledBlock(DeviceMemoryPool pool, SafeHandle block, long size, bool cached = true) : base(0, ownsHandle: true)
        {
            this.pool = pool;
            this.block = block;
            this.size = size;
            this.cached = cached;
            SetHandle(block.DangerousGetHandle());
        }

        public override bool IsInvalid => handle == 0;

        protected override bool ReleaseHandle()
        {
            if (cached) pool.Return(block, size);
            else
            {
                lock (pool.gate) pool.UsedBytes -= size;
                block.Dispose();
            }
            return true;
        }
    }
}
