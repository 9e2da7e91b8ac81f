using System.Globalization;
using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Formats;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Runs;

/// <summary>
/// Typed access to the fields of a run folder's JSON files. Every type, shape or range problem becomes a one-line
/// <see cref="ModelFormatException"/> naming the file and the field, e.g. <c>summary.json: field train_examples: expected an integer, got 1.5</c>.
/// </summary>
internal static class JsonFields
{
    /// <summary>Reads and parses a JSON file; the root must be an object.</summary>
    public static JsonElement ReadObject(string path)
    {
        string text;
        try { text = JsonStrings.ReadAllText(path); }
        catch (IOException e) { throw new ModelFormatException(path, "cannot read: " + e.Message); }
        JsonElement root;
        try
        {
            using var doc = JsonDocument.Parse(text);
            JsonStrings.RequireValid(doc.RootElement, path);
            root = doc.RootElement.Clone();
        }
        catch (JsonException e) { throw new ModelFormatException(path, "malformed JSON: " + e.Message.Split('\n')[0]); }
        if (root.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, $"expected a JSON object, got {Describe(root)}");
        return root;
    }

    /// <summary>A short description of a value for error messages: the number itself, a quoted string, "an array"…</summary>
    public static string Describe(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Number => Clip(v.GetRawText()),
        JsonValueKind.String => ErrorText.Quote(v.GetString()),
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        JsonValueKind.True => "true",
        JsonValueKind.False => "false",
        _ => "null",
    };

    static string Clip(string s) => s.Length <= 40 ? s : s[..40] + "…";

    static Exception Bad(string path, string field, string expected, JsonElement got) =>
        new ModelFormatException(path, $"field {field}: expected {expected}, got {Describe(got)}");

    /// <summary>The value of a property, or null when absent or JSON null.</summary>
    public static JsonElement? Get(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    static JsonElement Need(string path, JsonElement obj, string name, string field) =>
        Get(obj, name) ?? throw new ModelFormatException(path, $"field {field} is missing");

    /// <summary>An integer value within [min, max].</summary>
    public static int Int(string path, JsonElement v, string field, int min = int.MinValue, int max = int.MaxValue)
    {
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i)) throw Bad(path, field, "an integer", v);
        if (i < min || i > max)
            throw new ModelFormatException(path, $"field {field}: {i} is out of range ({Range(min, max)})");
        return i;
    }

    static string Range(int min, int max) =>
        max == int.MaxValue ? $"at least {min}" : min == int.MinValue ? $"at most {max}" : $"{min} to {max}";

    public static int RequireInt(string path, JsonElement obj, string name, int min = int.MinValue, int max = int.MaxValue, string? prefix = null) =>
        Int(path, Need(path, obj, name, prefix + name), prefix + name, min, max);

    public static int? OptionalInt(string path, JsonElement obj, string name, int min = int.MinValue, int max = int.MaxValue, string? prefix = null) =>
        Get(obj, name) is { } v ? Int(path, v, prefix + name, min, max) : null;

    public static string RequireString(string path, JsonElement obj, string name, string? prefix = null)
    {
        var v = Need(path, obj, name, prefix + name);
        return v.ValueKind == JsonValueKind.String ? v.GetString()! : throw Bad(path, prefix + name, "a string", v);
    }

    public static string? OptionalString(string path, JsonElement obj, string name, string? prefix = null) =>
        Get(obj, name) is { } v ? v.ValueKind == JsonValueKind.String ? v.GetString() : throw Bad(path, prefix + name, "a string", v) : null;

    /// <summary>A finite number.</summary>
    public static double Number(string path, JsonElement v, string field)
    {
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d) || !double.IsFinite(d)) throw Bad(path, field, "a number", v);
        return d;
    }

    public static double? OptionalNumber(string path, JsonElement obj, string name, string? prefix = null) =>
        Get(obj, name) is { } v ? Number(path, v, prefix + name) : null;

    public static JsonElement RequireArray(string path, JsonElement obj, string name, string? prefix = null)
    {
        var v = Need(path, obj, name, prefix + name);
        return v.ValueKind == JsonValueKind.Array ? v : throw Bad(path, prefix + name, "an array", v);
    }

    public static JsonElement? OptionalArray(string path, JsonElement obj, string name, string? prefix = null) =>
        Get(obj, name) is { } v ? v.ValueKind == JsonValueKind.Array ? v : throw Bad(path, prefix + name, "an array", v) : null;

    public static JsonElement RequireObject(string path, JsonElement v, string field) =>
        v.ValueKind == JsonValueKind.Object ? v : throw Bad(path, field, "an object", v);

    /// <summary>An optional array of integers, each within [min, max].</summary>
    public static int[]? OptionalIntArray(string path, JsonElement obj, string name, int min = int.MinValue, int max = int.MaxValue)
    {
        if (OptionalArray(path, obj, name) is not { } a) return null;
        var list = new int[a.GetArrayLength()];
        int i = 0;
        foreach (var x in a.EnumerateArray()) { list[i] = Int(path, x, $"{name}[{i}]", min, max); i++; }
        return list;
    }

    /// <summary>An integer cell of a CSV file (<paramref name="where"/> e.g. "line 3, column k").</summary>
    public static int CsvInt(string path, string where, string cell, int min = int.MinValue, int max = int.MaxValue)
    {
        if (!int.TryParse(cell, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int i))
            throw new ModelFormatException(path, $"{where}: expected an integer, got {ErrorText.Quote(cell)}");
        if (i < min || i > max) throw new ModelFormatException(path, $"{where}: {i} is out of range ({Range(min, max)})");
        return i;
    }

    /// <summary>A number cell of a CSV file (NaN allowed: an undefined ratio is written as NaN).</summary>
    public static double CsvDouble(string path, string where, string cell)
    {
        if (!double.TryParse(cell, NumberStyles.Float, CultureInfo.InvariantCulture, out double d))
            throw new ModelFormatException(path, $"{where}: expected a number, got {ErrorText.Quote(cell)}");
        return d;
    }
}
