using System.Globalization;
using System.Text;

namespace NeuronTrace.Runtime;

/// <summary>
/// How untrusted text (a key, a name, a value read from a file or typed by a user) appears in an error message:
/// quoted, printable (control characters, lone surrogates and other non-printing code points escaped as \n, \t, \xHH
/// or \uHHHH) and cut to about 80 characters, so a hostile file can neither flood nor drive the terminal.
/// </summary>
internal static class ErrorText
{
    public const int MaxQuoted = 80;

    /// <summary><paramref name="text"/> in double quotes, escaped and shortened (with "…" and its full length when cut).</summary>
    public static string Quote(string? text, int max = MaxQuoted)
    {
        if (text is null) return "(none)";
        var sb = new StringBuilder("\"");
        int shown = 0;
        for (int i = 0; i < text.Length; i++)
        {
            if (shown >= max) { sb.Append("\"… (").Append(text.Length.ToString(CultureInfo.InvariantCulture)).Append(" characters)"); return sb.ToString(); }
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                sb.Append(c).Append(text[++i]);
            }
            else Escape(sb, c);
            shown++;
        }
        return sb.Append('"').ToString();
    }

    /// <summary>
    /// A name read from a file (a key, a tensor name) as a message shows it: bare when it is a short plain identifier
    /// (letters, digits, '.', '_', '-', '/'), else <see cref="Quote"/>d.
    /// </summary>
    public static string Name(string? name)
    {
        if (name is null || name.Length == 0 || name.Length > MaxQuoted) return Quote(name);
        foreach (char c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or '/')) return Quote(name);
        return name;
    }

    /// <summary>A whole message made safe for one terminal line: escaped like <see cref="Quote"/>, at most <paramref name="max"/> characters.</summary>
    public static string Line(string message, int max = 1000)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < message.Length && sb.Length < max; i++)
        {
            char c = message[i];
            if (c is '\n' or '\r') { if (sb.Length > 0 && sb[^1] != ' ') sb.Append(' '); continue; }
            if (char.IsHighSurrogate(c) && i + 1 < message.Length && char.IsLowSurrogate(message[i + 1])) { sb.Append(c).Append(message[++i]); continue; }
            if (c == '"' || c == '\\') { sb.Append(c); continue; }
            Escape(sb, c);
        }
        if (sb.Length >= max) sb.Append("…");
        return sb.ToString().Trim();
    }

    static void Escape(StringBuilder sb, char c)
    {
        switch (c)
        {
            case '"': sb.Append("\\\""); return;
            case '\\': sb.Append("\\\\"); return;
            case '\n': sb.Append("\\n"); return;
            case '\r': sb.Append("\\r"); return;
            case '\t': sb.Append("\\t"); return;
        }
        var cat = char.GetUnicodeCategory(c);
        bool printable = !(char.IsControl(c) || char.IsSurrogate(c) || cat is UnicodeCategory.Format or UnicodeCategory.LineSeparator
            or UnicodeCategory.ParagraphSeparator or UnicodeCategory.OtherNotAssigned or UnicodeCategory.PrivateUse);
        if (printable) sb.Append(c);
        else if (c < 0x100) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
        else sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
    }
}
