using System.Buffers.Binary;
using Xunit;
using NeuronTrace.Formats;

namespace NeuronTrace.Formats.Tests;

public class Float16Tests
{
    [Fact]
    public void HalfDecodeMatchesSystemHalfForEveryBitPattern()
    {
        // All 65536 patterns in one buffer exercise the vector path; an odd tail exercises the scalar one.
        var bytes = new byte[65536 * 2];
        for (int i = 0; i < 65536; i++) BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(2 * i), (ushort)i);
        var bulk = new float[65536];
        Float16.Decode(bytes, FloatEncoding.F16, bulk);
        var tail = new float[7];
        Float16.Decode(bytes.AsSpan(2 * 0x7BF9, 14), FloatEncoding.F16, tail);
        for (int i = 0; i < 65536; i++)
        {
            float want = (float)BitConverter.UInt16BitsToHalf((ushort)i);
            if (float.IsNaN(want)) Assert.True(float.IsNaN(bulk[i]), $"0x{i:X4}");
            else Assert.True(BitConverter.SingleToUInt32Bits(want) == BitConverter.SingleToUInt32Bits(bulk[i]), $"0x{i:X4}: {bulk[i]} vs {want}");
        }
        for (int i = 0; i < 7; i++) Assert.Equal(bulk[0x7BF9 + i], tail[i]);
    }

    [Fact]
    public void Bf16DecodeIsTheUpperHalfOfAFloat()
    {
        var src = new ushort[] { 0x3F80, 0xC000, 0x7F80, 0x0001, 0x8000, 0x4049, 0x3F80, 0x3F81, 0x3F82, 0x3F83, 0x3F84, 0x3F85, 0x3F86, 0x3F87, 0x3F88, 0x3F89, 0x3F8A, 0x3F8B, 0x3F8C, 0x3F8D, 0x3F8E };
        var bytes = new byte[src.Length * 2];
        for (int i = 0; i < src.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(2 * i), src[i]);
        var dst = new float[src.Length];
        Float16.Decode(bytes, FloatEncoding.BF16, dst);
        for (int i = 0; i < src.Length; i++) Assert.Equal((uint)src[i] << 16, BitConverter.SingleToUInt32Bits(dst[i]));
        Assert.Equal(1f, dst[0]);
        Assert.Equal(-2f, dst[1]);
        Assert.True(float.IsPositiveInfinity(dst[2]));
    }

    [Theory]
    [InlineData(0x3F800000u, (ushort)0x3F80)] // 1.0 exact
    [InlineData(0x3F808000u, (ushort)0x3F80)] // exactly half-way, even below: stays
    [InlineData(0x3F818000u, (ushort)0x3F82)] // exactly half-way, odd below: rounds up to even
    [InlineData(0x3F808001u, (ushort)0x3F81)] // just above half-way: up
    [InlineData(0x3F807FFFu, (ushort)0x3F80)] // just below half-way: down
    [InlineData(0x7F7FFFFFu, (ushort)0x7F80)] // max float rounds to +inf
    [InlineData(0xFF800000u, (ushort)0xFF80)] // -inf
    [InlineData(0x80000000u, (ushort)0x8000)] // -0
    public void Bf16EncodeRoundsToNearestEven(uint floatBits, ushort expected) =>
        Assert.Equal(expected, Float16.FloatToBf16(BitConverter.UInt32BitsToSingle(floatBits)));

    [Fact]
    public void Bf16EncodeKeepsNaNsNaN()
    {
        // A NaN with payload only in the low bits must not turn into infinity.
        ushort b = Float16.FloatToBf16(BitConverter.UInt32BitsToSingle(0x7F800001));
        Assert.True(float.IsNaN(Float16.Bf16ToFloat(b)));
    }

    [Fact]
    public void EncodeThenDecodeRoundTripsRepresentableValues()
    {
        float[] values = [0f, -0f, 1f, -1.5f, 65504f, 6.1035156e-5f, 5.9604645e-8f, 0.333251953125f];
        foreach (var enc in new[] { FloatEncoding.F32, FloatEncoding.F16, FloatEncoding.BF16 })
        {
            var bytes = new byte[values.Length * Float16.SizeOf(enc)];
            Float16.Encode(values, enc, bytes);
            var back = new float[values.Length];
            Float16.Decode(bytes, enc, back);
            for (int i = 0; i < values.Length; i++)
            {
                float want = enc switch
                {
                    FloatEncoding.F16 => (float)(Half)values[i],
                    FloatEncoding.BF16 => Float16.Bf16ToFloat(Float16.FloatToBf16(values[i])),
                    _ => values[i],
                };
                Assert.Equal(BitConverter.SingleToUInt32Bits(want), BitConverter.SingleToUInt32Bits(back[i]));
            }
        }
        Assert.Equal(65504f, (float)(Half)65504f); // F16 values above are exact
    }

    [Fact]
    public void DecodeRejectsMismatchedLengths() =>
        Assert.Throws<ArgumentException>(() => Float16.Decode(new byte[6], FloatEncoding.F16, new float[2]));
}
