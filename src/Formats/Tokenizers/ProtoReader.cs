namespace NeuronTrace.Formats.Tokenizers;

/// <summary>
/// A minimal protobuf wire-format reader: enough to walk a SentencePiece <c>ModelProto</c> without a protobuf
/// dependency. Malformed input throws <see cref="FormatException"/>; the caller names the file.
/// </summary>
internal ref struct ProtoReader(ReadOnlySpan<byte> data)
{
    readonly ReadOnlySpan<byte> _data = data;
    int _pos;

    public const int Varint = 0, Fixed64 = 1, LengthDelimited = 2, Fixed32 = 5;

    public readonly bool AtEnd => _pos >= _data.Length;

    /// <summary>Reads the next field key; false at the end of the message.</summary>
    public bool TryReadTag(out int field, out int wireType)
    {
        field = wireType = 0;
        if (AtEnd) return false;
        ulong key = ReadVarint();
        field = (int)(key >> 3);
        wireType = (int)(key & 7);
        if (field <= 0) throw new FormatException($"field number {key >> 3} at byte {_pos}");
        return true;
    }

    public ulong ReadVarint()
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (_pos >= _data.Length) throw new FormatException("truncated varint");
            byte b = _data[_pos++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return value;
        }
        throw new FormatException($"varint longer than 10 bytes at byte {_pos}");
    }

    /// <summary>An int32 field: negative values are sign-extended 10-byte varints.</summary>
    public int ReadInt32() => (int)(long)ReadVarint();

    public bool ReadBool() => ReadVarint() != 0;

    public float ReadFloat() => BitConverter.Int32BitsToSingle(BitConverter.ToInt32(Take(4)));

    public ReadOnlySpan<byte> ReadBytes()
    {
        ulong len = ReadVarint();
        if (len > (ulong)(_data.Length - _pos)) throw new FormatException($"length {len} runs past the end at byte {_pos}");
        return Take((int)len);
    }

    public void Skip(int wireType)
    {
        switch (wireType)
        {
            case Varint: ReadVarint(); break;
            case Fixed64: Take(8); break;
            case LengthDelimited: ReadBytes(); break;
            case Fixed32: Take(4); break;
            default: throw new FormatException($"unsupported wire type {wireType} at byte {_pos}");
        }
    }

    /// <summary>Checks the wire type a field must have.</summary>
    public readonly void Expect(int field, int wireType, int expected)
    {
        if (wireType != expected) throw new FormatException($"field {field} has wire type {wireType}, expected {expected}");
    }

    ReadOnlySpan<byte> Take(int n)
    {
        if (_data.Length - _pos < n) throw new FormatException($"truncated at byte {_pos}");
        var span = _data.Slice(_pos, n);
        _pos += n;
        return span;
    }
}
