using System.Buffers;
using System.Globalization;
using System.Text;

namespace NeuronTrace.Formats.Tokenizers;

/// <summary>UTF-8 helpers shared by the tokenizers: tokens are byte strings, and one token may hold half a character.</summary>
internal static class Utf8Text
{
    /// <summary>Decodes and silently drops bytes that are not a whole character: what a streaming printer can show of one token.</summary>
    static readonly Encoding Dropping =
        Encoding.GetEncoding("utf-8", EncoderFallback.ReplacementFallback, new DecoderReplacementFallback(""));

    /// <summary>Strict decoding, to tell whether a vocabulary piece is valid text.</summary>
    static readonly Encoding Strict = new UTF8Encoding(false, true);

    public static string DecodeDropping(ReadOnlySpan<byte> bytes) => Dropping.GetString(bytes);

    /// <summary>Decodes a whole sequence; bytes that are not valid UTF-8 become U+FFFD, as in SentencePiece and tiktoken decoding.</summary>
    public static string DecodeReplacing(ReadOnlySpan<byte> bytes) => Encoding.UTF8.GetString(bytes);

    /// <summary>The text of a piece, or null when its bytes are not valid UTF-8 (such a piece can never match text).</summary>
    public static string? TryDecodeStrict(byte[] bytes)
    {
        try { return Strict.GetString(bytes); }
        catch (DecoderFallbackException) { return null; }
    }

    /// <summary>Replaces lone UTF-16 surrogates by U+FFFD, which is what UTF-8 encoding of such a string gives anyway.</summary>
    public static string Sanitize(string text)
    {
        if (!text.AsSpan().ContainsAnyInRange('\uD800', '\uDFFF')) return text;
        var sb = new StringBuilder(text.Length);
        foreach (Rune r in text.EnumerateRunes()) sb.Append(r.ToString());
        return sb.ToString();
    }

    /// <summary>Valid characters as text and every other byte as <c>&lt;0xXX&gt;</c>, for tables.</summary>
    public static string Readable(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length);
        while (!bytes.IsEmpty)
        {
            if (Rune.DecodeFromUtf8(bytes, out Rune rune, out int used) == OperationStatus.Done)
                sb.Append(rune.ToString());
            else
                for (int i = 0; i < used; i++) sb.Append(ByteToken(bytes[i]));
            bytes = bytes[used..];
        }
        return sb.ToString();
    }

    /// <summary>The SentencePiece spelling of a byte token.</summary>
    public static string ByteToken(byte b) => $"<0x{b:X2}>";

    /// <summary>Parses the byte-token spelling <c>&lt;0xXX&gt;</c>.</summary>
    public static bool TryParseByteToken(string piece, out byte value)
    {
        value = 0;
        return piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && byte.TryParse(piece.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);
    }

    /// <summary>Lengths in UTF-16 chars of each code point (1, or 2 for a surrogate pair) of a sanitized string.</summary>
    public static List<int> CodePointLengths(string text)
    {
        var lengths = new List<int>(text.Length);
        for (int i = 0; i < text.Length; i += lengths[^1])
            lengths.Add(char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1);
        return lengths;
    }
}
