using NeuronTrace.Runtime;
using System.Text;
using System.Text.Json;
using NeuronTrace.Model;

namespace NeuronTrace.Formats;

/// <summary>
/// Strict text for the JSON and text files the engine reads: invalid UTF-8 bytes, and string escapes that decode to a
/// lone surrogate (<c>"\ud800"</c>), are an error naming the file and where, instead of an internal error on first
/// use (<c>GetString</c> throws) or a silent U+FFFD replacement.
/// </summary>
internal static class JsonStrings
{
    /// <summary>UTF-8 that throws on invalid bytes (no BOM written).</summary>
    public static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Every property name and string value under <paramref name="root"/> must decode; <paramref name="where"/> prefixes the error (e.g. "line 3").</summary>
    public static void RequireValid(JsonElement root, string file, string? where = null)
    {
        if (FirstInvalid(root, "$") is { } at)
            throw new ModelFormatException(file, $"{(where is null ? "" : where + ": ")}invalid UTF-8 or a lone surrogate escape in the JSON string at {ErrorText.Name(at)}");
    }

    static string? FirstInvalid(JsonElement e, string at)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String:
                return Decodes(() => e.GetString()) ? null : at;
            case JsonValueKind.Array:
                int i = 0;
                foreach (var x in e.EnumerateArray())
                    if (FirstInvalid(x, $"{at}[{i++}]") is { } bad) return bad;
                return null;
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject())
                {
                    string? name = null;
                    if (!Decodes(() => name = p.Name)) return at + ".(a key)";
                    if (FirstInvalid(p.Value, at + "." + name) is { } bad) return bad;
                }
                return null;
            default:
                return null;
        }
    }

    static bool Decodes(Func<string?> read)
    {
        try { read(); return true; }
        catch (InvalidOperationException) { return false; }
    }

    /// <summary>The file's text, decoded strictly: invalid UTF-8 is an error naming the file and the line.</summary>
    public static string ReadAllText(string path)
    {
        byte[] bytes = InputFiles.ReadAllBytes(path);
        try { return Strict.GetString(bytes); }
        catch (DecoderFallbackException e)
        {
            int line = 1 + bytes.AsSpan(0, Math.Min(bytes.Length, Math.Max(0, e.Index))).Count((byte)'\n');
            throw new ModelFormatException(path, $"line {line}: invalid UTF-8");
        }
    }
}
