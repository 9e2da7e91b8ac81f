using System.Text;

namespace NeuronTrace.Formats.Tokenizers;

/// <summary>
/// Reads a SentencePiece <c>tokenizer.model</c> (a protobuf <c>ModelProto</c>) by hand. Field numbers follow
/// sentencepiece_model.proto: ModelProto {1 pieces, 2 trainer_spec, 3 normalizer_spec}; SentencePiece {1 piece,
/// 2 score, 3 type}; TrainerSpec {3 model_type, 24 treat_whitespace_as_suffix, 35 byte_fallback, 40 unk_id,
/// 41 bos_id, 42 eos_id}; NormalizerSpec {1 name, 2 precompiled_charsmap, 3 add_dummy_prefix,
/// 4 remove_extra_whitespaces, 5 escape_whitespaces}. Unset fields take the proto2 defaults given here.
/// </summary>
internal sealed class SentencePieceModelFile
{
    public const int ModelTypeBpe = 2;

    public List<string> Pieces { get; } = [];
    public List<float> Scores { get; } = [];
    public List<int> Types { get; } = [];
    public int ModelType { get; private set; } = 1; // UNIGRAM
    public bool ByteFallback { get; private set; }
    public bool TreatWhitespaceAsSuffix { get; private set; }
    public int UnkId { get; private set; }
    public int BosId { get; private set; } = 1;
    public int EosId { get; private set; } = 2;
    public string NormalizerName { get; private set; } = "";
    public int PrecompiledCharsmapLength { get; private set; }
    public bool AddDummyPrefix { get; private set; } = true;
    public bool RemoveExtraWhitespaces { get; private set; } = true;
    public bool EscapeWhitespaces { get; private set; } = true;

    /// <exception cref="FormatException">the bytes are not a ModelProto</exception>
    public static SentencePieceModelFile Parse(ReadOnlySpan<byte> data)
    {
        var model = new SentencePieceModelFile();
        var reader = new ProtoReader(data);
        while (reader.TryReadTag(out int field, out int wire))
        {
            switch (field)
            {
                case 1: reader.Expect(field, wire, ProtoReader.LengthDelimited); model.ReadPiece(reader.ReadBytes()); break;
                case 2: reader.Expect(field, wire, ProtoReader.LengthDelimited); model.ReadTrainerSpec(reader.ReadBytes()); break;
                case 3: reader.Expect(field, wire, ProtoReader.LengthDelimited); model.ReadNormalizerSpec(reader.ReadBytes()); break;
                default: reader.Skip(wire); break;
            }
        }
        return model;
    }

    void ReadPiece(ReadOnlySpan<byte> message)
    {
        string piece = "";
        float score = 0;
        int type = 1; // NORMAL
        var reader = new ProtoReader(message);
        while (reader.TryReadTag(out int field, out int wire))
        {
            switch (field)
            {
                case 1: reader.Expect(field, wire, ProtoReader.LengthDelimited); piece = Encoding.UTF8.GetString(reader.ReadBytes()); break;
                case 2: reader.Expect(field, wire, ProtoReader.Fixed32); score = reader.ReadFloat(); break;
                case 3: reader.Expect(field, wire, ProtoReader.Varint); type = reader.ReadInt32(); break;
                default: reader.Skip(wire); break;
            }
        }
        Pieces.Add(piece);
        Scores.Add(score);
        Types.Add(type);
    }

    void ReadTrainerSpec(ReadOnlySpan<byte> message)
    {
        var reader = new ProtoReader(message);
        while (reader.TryReadTag(out int field, out int wire))
        {
            switch (field)
            {
                case 3: reader.Expect(field, wire, ProtoReader.Varint); ModelType = reader.ReadInt32(); break;
                case 24: reader.Expect(field, wire, ProtoReader.Varint); TreatWhitespaceAsSuffix = reader.ReadBool(); break;
                case 35: reader.Expect(field, wire, ProtoReader.Varint); ByteFallback = reader.ReadBool(); break;
                case 40: reader.Expect(field, wire, ProtoReader.Varint); UnkId = reader.ReadInt32(); break;
                case 41: reader.Expect(field, wire, ProtoReader.Varint); BosId = reader.ReadInt32(); break;
                case 42: reader.Expect(field, wire, ProtoReader.Varint); EosId = reader.ReadInt32(); break;
                default: reader.Skip(wire); break;
            }
        }
    }

    void ReadNormalizerSpec(ReadOnlySpan<byte> message)
    {
        var reader = new ProtoReader(message);
        while (reader.TryReadTag(out int field, out int wire))
        {
            switch (field)
            {
                case 1: reader.Expect(field, wire, ProtoReader.LengthDelimited); NormalizerName = Encoding.UTF8.GetString(reader.ReadBytes()); break;
                case 2: reader.Expect(field, wire, ProtoReader.LengthDelimited); PrecompiledCharsmapLength = reader.ReadBytes().Length; break;
                case 3: reader.Expect(field, wire, ProtoReader.Varint); AddDummyPrefix = reader.ReadBool(); break;
                case 4: reader.Expect(field, wire, ProtoReader.Varint); RemoveExtraWhitespaces = reader.ReadBool(); break;
                case 5: reader.Expect(field, wire, ProtoReader.Varint); EscapeWhitespaces = reader.ReadBool(); break;
                default: reader.Skip(wire); break;
            }
        }
    }
}
