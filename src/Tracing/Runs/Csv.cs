using System.Globalization;
using System.Text;
using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Runs;

/// <summary>
/// The run folder's CSV dialect (RFC 4180): comma-separated, a header line, "\n" line ends; a field holding a comma,
/// a quote or a line break is quoted, with quotes doubled. Numbers are invariant-culture; floats round-trip
/// (float32 "R", doubles G9 as before). Reading is strict: a ragged row or an unterminated quote is an error naming the line.
/// </summary>
internal static class Csv
{
    /// <summary>One CSV line (with its "\n") from fields.</summary>
    public static string Line(IEnumerable<string> fields) => string.Join(",", fields.Select(Quote)) + "\n";

    public static string Quote(string field) =>
        field.AsSpan().IndexOfAny(",\"\r\n") < 0 ? field : "\"" + field.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    public static string F(float v) => v.ToString("R", CultureInfo.InvariantCulture);
    public static string D(double v) => v.ToString("G9", CultureInfo.InvariantCulture);
    public static string I(long v) => v.ToString(CultureInfo.InvariantCulture);

    /// <summary>The node columns of <see cref="RunFormat.NodeColumns"/> for a node.</summary>
    public static IEnumerable<string> NodeFields(NodeId n) => [n.ToString(), n.Site.Name(), I(n.Layer), I(n.Position), I(n.Index)];

    /// <summary>A parsed CSV file: the header and the rows (blank lines skipped), each row as long as the header.</summary>
    public sealed class Table(string path, string[] header, List<(int Line, string[] Fields)> rows)
    {
        public string Path { get; } = path;
        public string[] Header { get; } = header;
        public IReadOnlyList<(int Line, string[] Fields)> Rows { get; } = rows;

        /// <summary>The index of a column; a missing one is an error naming the file.</summary>
        public int Column(string name) =>
            Array.IndexOf(Header, name) is var i and >= 0 ? i : throw new ModelFormatException(Path, $"no column {ErrorText.Quote(name)}");

        public string Where(int line, int column) => $"line {line}, column {Header[column]}";
    }

    public static Table Read(string path)
    {
        string text;
        Formats.InputFiles.RequireRegular(path);
        try { text = File.ReadAllText(path); }
        catch (IOException e) { throw new ModelFormatException(path, "cannot read: " + e.Message); }
        return Parse(path, text);
    }

    public static Table Parse(string path, string text)
    {
        var records = new List<(int Line, string[] Fields)>();
        var fields = new List<string>();
        var cell = new StringBuilder();
        int line = 1, recordLine = 1, i = 0;
        bool any = false; // the current record has content (a blank line is no record)
        while (i <= text.Length)
        {
            if (i == text.Length || text[i] == '\n' || text[i] == '\r')
            {
                if (fields.Count > 0 || (any && cell.ToString().Trim().Length > 0)) { fields.Add(cell.ToString()); records.Add((recordLine, fields.ToArray())); }
                fields.Clear(); cell.Clear(); any = false;
                if (i < text.Length && text[i] == '\r' && i + 1 < text.Length && text[i + 1] == '\n') i++;
                i++; line++; recordLine = line;
                continue;
            }
            char c = text[i];
            if (c == '"' && cell.Length == 0)
            {
                int start = line;
                i++;
                while (true)
                {
                    if (i >= text.Length) throw new ModelFormatException(path, $"line {start}: a quoted field is not closed");
                    if (text[i] == '"')
                    {
                        if (i + 1 < text.Length && text[i + 1] == '"') { cell.Append('"'); i += 2; continue; }
                        i++;
                        break;
                    }
                    if (text[i] == '\n') line++;
                    cell.Append(text[i++]);
                }
                any = true;
                if (i < text.Length && text[i] is not (',' or '\n' or '\r'))
                    throw new ModelFormatException(path, $"line {line}: text after a closing quote");
                continue;
            }
            if (c == ',') { fields.Add(cell.ToString()); cell.Clear(); any = true; i++; continue; }
            cell.Append(c); any = true; i++;
        }
        if (records.Count == 0) return new Table(path, [], []);
        var header = records[0].Fields;
        var rows = records.Skip(1).ToList();
        foreach (var (l, f) in rows)
            if (f.Length != header.Length) throw new ModelFormatException(path, $"line {l}: {f.Length} columns, expected {header.Length}");
        return new Table(path, header, rows);
    }
}
