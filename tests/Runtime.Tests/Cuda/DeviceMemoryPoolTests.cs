using System.Runtime.InteropServices;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// <see cref="DeviceMemoryPool"/>: freed blocks are handed out again by size class, out-of-memory frees the cache and
/// retries, a disposed pool frees returned blocks; and a CudaBackend over a pooled emulator runs a Llama block a second
/// time without a single new raw allocation, with the same results (Allocate still zero-fills reused blocks).
/// </summary>
public class DeviceMemoryPoolTests
{
    /// <summary>A raw allocator over native memory that counts, and can refuse above a byte budget.</summary>
    sealed class CountingAllocator(long budget = long.MaxValue)
    {
        public int Allocations, Frees;
        public long Outstanding;

        public SafeHandle? Allocate(long bytes)
        {
            if (Outstanding + bytes > budget) return null;
            Allocations++;
            Outstanding += bytes;
            return new Block(this, bytes);
        }

        sealed unsafe class Block : SafeHandle
        {
            readonly CountingAllocator owner;
            readonly long bytes;
            public Block(CountingAllocator owner, long bytes) : base(0, true)
            {
                this.owner = owner;
                this.bytes = bytes;
                SetHandle((nint)NativeMemory.Alloc((nuint)bytes));
            }
            public override bool IsInvalid => handle == 0;
            protected override bool ReleaseHandle()
            {
                NativeMemory.Free((void*)handle);
                owner.Frees++;
                owner.Outstanding -= bytes;
                return true;
            }
        }
    }

    [Fact]
    public void Freed_blocks_are_reused_by_size_class()
    {
        var raw = new CountingAllocator();
        using var pool = new DeviceMemoryPool(raw.Allocate);
        var a = pool.Rent(1000);
        nint address = a.DangerousGetHandle();
        a.Dispose();
        Assert.Equal(DeviceMemoryPool.SizeClass(1000), pool.CachedBytes);
        using (var again = pool.Rent(1000)) Assert.Equal(address, again.DangerousGetHandle());
        using (var near = pool.Rent(900)) Assert.Equal(address, near.DangerousGetHandle());   // same 1024-byte class
        Assert.Equal(1, raw.Allocations);
        using var other = pool.Rent(100_000);
        Assert.Equal(2, raw.Allocations);
        Assert.Equal(0, raw.Frees);
        Assert.Equal(DeviceMemoryPool.SizeClass(100_000), pool.UsedBytes);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(512)]
    [InlineData(513)]
    [InlineData(5000)]
    [InlineData(1_000_001)]
    [InlineData(117_440_512)]
    public void Size_classes_waste_under_512_bytes_or_an_eighth(long bytes)
    {
        long c = DeviceMemoryPool.SizeClass(bytes);
        Assert.True(c >= bytes && c % 512 == 0, $"class {c} for {bytes}");
        Assert.True(c < bytes + Math.Max(512, bytes / 8), $"class {c} for {bytes} wastes too much");
    }

    [Fact]
    public void A_block_outside_the_cache_takes_no_cached_block_counts_in_the_peak_and_is_freed_on_dispose()
    {
        var raw = new CountingAllocator();
        using var pool = new DeviceMemoryPool(raw.Allocate);
        var a = pool.Rent(4096);
        nint cachedAddress = a.DangerousGetHandle();
        a.Dispose();                                  // cached, 4096 bytes
        var outside = pool.RentOutsideCache(4096);
        Assert.NotEqual(cachedAddress, outside.DangerousGetHandle());
        Assert.Equal(4096, pool.CachedBytes);         // the cached block is still there for the next Rent
        Assert.Equal(4096, pool.UsedBytes);
        using (var next = pool.Rent(4096)) Assert.Equal(cachedAddress, next.DangerousGetHandle());
        Assert.Equal(8192, pool.PeakUsedBytes);
        outside.Dispose();
        Assert.Equal(1, raw.Frees);                   // straight back to the raw allocator, not into a free list
        Assert.Equal(0, pool.UsedBytes);
        Assert.Equal(4096, pool.CachedBytes);
    }

    [Fact]
    public void Out_of_memory_frees_the_cache_and_retries()
    {
        var raw = new CountingAllocator(budget: 4096);
        using var pool = new DeviceMemoryPool(raw.Allocate);
        pool.Rent(3000).Dispose();           // cached: 3072 of the 4096 bytes
        using var big = pool.Rent(2048);     // needs the cached block given back first
        Assert.Equal(1, raw.Frees);
        Assert.Equal(0, pool.CachedBytes);
        Assert.Throws<OutOfMemoryException>(() => pool.Rent(4096));
        Assert.Equal(DeviceMemoryPool.SizeClass(2048), pool.UsedBytes);
    }

    [Fact]
    public void A_disposed_pool_frees_what_comes_back()
    {
        var raw = new CountingAllocator();
        var pool = new DeviceMemoryPool(raw.Allocate);
        var a = pool.Rent(4096);
        pool.Rent(8192).Dispose();
        pool.Dispose();
        Assert.Equal(1, raw.Frees);   // the cached block
        a.Dispose();
        Assert.Equal(2, raw.Frees);
        Assert.Equal(0, raw.Outstanding);
        Assert.Throws<ObjectDisposedException>(() => pool.Rent(16));
    }

    [Fact]
    public void A_second_forward_allocates_nothing_new_and_agrees()
    {
        using var host = new HostKernelRuntime(pooled: true);
        using var b = new CudaBackend(host, ownsDevice: false);
        var first = LlamaBlock.Run(b, BackwardRules.Exact);
        int raw = host.RawAllocations;
        Assert.True(raw > 0);
        var second = LlamaBlock.Run(b, BackwardRules.Exact);
        Assert.Equal(raw, host.RawAllocations);
        Assert.Equal(first.Output, second.Output);
        Assert.Equal(first.InputGrad, second.InputGrad);
        var cpu = LlamaBlock.Run(CpuBackend.Instance, BackwardRules.Exact);
        Approx.Equal(cpu.Output, second.Output, 1e-4f, 1e-3f, "pooled block output");
        Approx.Equal(cpu.InputGrad, second.InputGrad, 1e-4f, 1e-3f, "pooled block input gradient");
    }
}
