using NeuronTrace.Runtime;
using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Formats.Tokenizers;

namespace NeuronTrace.Tracing.Tasks;

/// <summary>
/// A task in the feature-circuits JSON-lines format (<c>clean_prefix, patch_prefix, clean_answer, patch_answer, case</c>),
/// tokenized. Errors name the file and line.
/// </summary>
public sealed class PromptTask
{
    /// <summary>A task of tokenized examples.</summary>
    /// <param name="name">The task's name in reports.</param>
    /// <param name="pairs">The examples, at least one.</param>
    /// <exception cref="ArgumentException">There are no examples.</exception>
    public PromptTask(string name, IReadOnlyList<PromptPair> pairs)
    {
        if (pairs.Count == 0) throw new ArgumentException($"{name}: the task has no examples");
        Name = name;
        Pairs = pairs;
    }

    /// <summary>The task's name in reports.</summary>
    public string Name { get; }
    /// <summary>The examples in file order.</summary>
    public IReadOnlyList<PromptPair> Pairs { get; }
    /// <summary>Whether every example has a counterfactual prompt.</summary>
    public bool IsPaired => Pairs.All(p => p.IsPaired);
    /// <summary>The number of examples.</summary>
    public int Count => Pairs.Count;

    /// <summary>
    /// Throws a one-line <see cref="ArgumentException"/> naming the line when an answer token lies outside a vocabulary of
    /// <paramref name="vocabSize"/> (tasks built in code skip the tokenizer that would catch it).
    /// </summary>
    /// <param name="vocabSize">The model's vocabulary size.</param>
    public void RequireAnswersWithin(int vocabSize)
    {
        foreach (var p in Pairs)
            foreach (var (field, id) in new[] { ("clean_answer", (int?)p.CleanAnswer), ("patch_answer", p.PatchAnswer) })
                if (id is { } t && (t < 0 || t >= vocabSize))
                    throw new ArgumentException($"{Name}: line {p.Line}: {field} token {t} is outside the model's vocabulary of {vocabSize}");
    }

    /// <summary>The first <paramref name="n"/> examples (all when n ≤ 0).</summary>
    /// <param name="n">How many examples to keep.</param>
    public PromptTask Take(int n) => n <= 0 || n >= Pairs.Count ? this : new PromptTask(Name, Pairs.Take(n).ToList());

    /// <summary>
    /// Only the examples whose clean prompt has the most common token length (the longest such length on ties), so every
    /// position from the end is the same token slot in every prompt — the reference evaluation's equal-length practice.
    /// </summary>
    public PromptTask OfMostCommonLength()
    {
        int length = Pairs.GroupBy(p => p.CleanIds.Length).OrderByDescending(g => g.Count()).ThenByDescending(g => g.Key).First().Key;
        return new PromptTask(Name, Pairs.Where(p => p.CleanIds.Length == length).ToList());
    }

    /// <summary>
    /// Loads and tokenizes a JSON-lines task. Every answer must add exactly one token after its prefix; when
    /// <paramref name="requireEqualLengths"/>, clean and patch prompts must tokenize to the same length. A line may give
    /// <c>messages</c> / <c>patch_messages</c> (lists of role/content) instead of <c>clean_prefix</c> / <c>patch_prefix</c>:
    /// chat prompts rendered by <paramref name="encoder"/>'s template, the answer continuing the open assistant turn. With
    /// <paramref name="maxTokens"/> (the model's context) a longer prompt is refused before it is tokenized when its
    /// length alone rules it out, so memory does not grow with a hostile line. Lines must be all paired or all
    /// unpaired, valid UTF-8, and without repeated keys.
    /// </summary>
    /// <param name="path">The task file (JSON lines).</param>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="requireEqualLengths">Whether each line's clean and patch prompts must tokenize to the same length.</param>
    /// <param name="encoder">How prompts become ids (special tokens, chat template, warnings); plain text with BOS by default.</param>
    /// <param name="maxTokens">The model's context length, the longest prompt accepted in tokens; null accepts any length.</param>
    internal static PromptTask Load(string path, ITextTokenizer tokenizer, bool requireEqualLengths = true, PromptEncoder? encoder = null, int? maxTokens = null)
    {
        if (!File.Exists(path)) throw new ModelFormatException(path, "task file not found");
        Formats.InputFiles.RequireRegular(path);   // a FIFO would block the reader; an empty task is refused the same way
        using var reader = new StreamReader(path, Formats.JsonStrings.Strict, detectEncodingFromByteOrderMarks: false);
        return Read(reader, path, tokenizer, requireEqualLengths, encoder, maxTokens);
    }

    /// <summary>
    /// As <see cref="Load"/>, from task lines already in memory (or any reader); <paramref name="source"/> names them in
    /// errors and gives the task its name.
    /// </summary>
    internal static PromptTask Read(TextReader reader, string source, ITextTokenizer tokenizer, bool requireEqualLengths = true,
        PromptEncoder? encoder = null, int? maxTokens = null)
    {
        string path = source;
        encoder ??= new PromptEncoder(tokenizer);
        var pairs = new List<PromptPair>();
        int lineNo = 0;
        while (true)
        {
            string? raw;
            try { raw = reader.ReadLine(); }
            catch (System.Text.DecoderFallbackException)
            {
                // The reader decodes ahead of the line it returns: the strict whole-file decode names the right line.
                Formats.JsonStrings.ReadAllText(path);
                throw new ModelFormatException(path, "invalid UTF-8");
            }
            if (raw is null) break;
            lineNo++;
            if (string.IsNullOrWhiteSpace(raw)) continue;
            string where = $"line {lineNo}";
            JsonDocument doc;
            try { doc = JsonDocument.Parse(raw); }
            catch (JsonException e) { throw new ModelFormatException(path, $"{where}: malformed JSON ({FirstLine(e.Message)})"); }
            using var lineDocument = doc;   // its pooled buffers go back per line, not when the GC finds them
            var o = doc.RootElement;
            if (o.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, $"{where}: expected a JSON object");
            Formats.JsonStrings.RequireValid(o, path, where);
            var keys = new HashSet<string>(StringComparer.Ordinal);
            foreach (var prop in o.EnumerateObject())
                if (!keys.Add(prop.Name)) throw new ModelFormatException(path, $"{where}: key {ErrorText.Quote(prop.Name)} appears twice");
            var chat = ChatPrompts.Read(o, path, where);
            string clean = chat.Clean is null ? Required(o, "clean_prefix") : "";
            string cleanAnswer = Required(o, "clean_answer");
            string? patch = chat.Patch is null ? Optional(o, "patch_prefix") : "";
            string? patchAnswer = Optional(o, "patch_answer");
            string? kase = Optional(o, "case");

            int[] Encode(string prefix, string answer, string field)
            {
                var messages = field == "clean_prefix" ? chat.Clean : chat.Patch;
                string label = messages is null ? field : field == "clean_prefix" ? "messages" : "patch_messages";
                if (maxTokens is { } max && messages is null) RequireLengthFits(tokenizer, prefix, max, $"{path}: {where}: {field}");
                var ids = ChatPrompts.Encode(encoder, messages, prefix, answer, path, $"{where}: {label}");
                if (maxTokens is { } m && ids.Length > m) throw new ArgumentException($"{path}: {where}: {label} of {ids.Length} tokens exceeds the model's context of {m}");
                return ids;
            }
            int[] cleanIds = Encode(clean, "", "clean_prefix");
            int cleanAnswerId = AnswerToken(clean, cleanIds, cleanAnswer, "clean_answer", "clean_prefix");
            int[]? patchIds = null;
            int? patchAnswerId = null;
            if (patchAnswer is not null) patchAnswerId = AnswerToken(clean, cleanIds, patchAnswer, "patch_answer", "clean_prefix");
            if (patchAnswerId == cleanAnswerId)
                throw new ModelFormatException(path, $"{where}: clean_answer and patch_answer are the same token ({cleanAnswerId}); their logit difference is 0 whatever the model does");
            if (patch is not null)
            {
                patchIds = Encode(patch, "", "patch_prefix");
                if (requireEqualLengths && patchIds.Length != cleanIds.Length)
                    throw new ModelFormatException(path, $"{where}: clean_prefix has {cleanIds.Length} tokens but patch_prefix has {patchIds.Length}; they must be equal");
                if (patchAnswer is not null) AnswerToken(patch, patchIds, patchAnswer, "patch_answer", "patch_prefix");
            }
            if (pairs.Count > 0 && pairs[0].IsPaired != (patchIds is not null))
                throw new ModelFormatException(path, $"{where} is {(patchIds is null ? "unpaired (no patch_prefix)" : "paired")} but line {pairs[0].Line} is {(pairs[0].IsPaired ? "paired" : "unpaired")}; a task's lines must all be paired or all unpaired");
            pairs.Add(new PromptPair(lineNo, cleanIds, patchIds, cleanAnswerId, patchAnswerId, kase));

            int AnswerToken(string prefix, int[] prefixIds, string answer, string field, string prefixField)
            {
                var full = Encode(prefix, answer, prefixField);
                if (full.Length != prefixIds.Length + 1 || !full.AsSpan(0, prefixIds.Length).SequenceEqual(prefixIds))
                    throw new ModelFormatException(path, $"{where}: {field} {ErrorText.Quote(answer)} is not one token after its prefix (it adds {full.Length - prefixIds.Length} tokens)");
                return full[^1];
            }

            string Required(JsonElement e, string key) =>
                Optional(e, key) ?? throw new ModelFormatException(path, $"{where}: missing string field {ErrorText.Quote(key)}");
            string? Optional(JsonElement e, string key)
            {
                if (!e.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
                if (v.ValueKind != JsonValueKind.String) throw new ModelFormatException(path, $"{where}: field {ErrorText.Quote(key)} is not a string");
                return v.GetString();
            }
        }
        if (pairs.Count == 0) throw new ModelFormatException(path, "the task file has no examples");
        return new PromptTask(Path.GetFileNameWithoutExtension(path), pairs);
    }

    /// <summary>
    /// Refuses <paramref name="text"/> when its UTF-8 length alone shows that, with BOS, it cannot fit in
    /// <paramref name="maxTokens"/>: no token covers more bytes than the vocabulary's longest piece, so that bounds the
    /// token count from below without tokenizing (whose memory grows with the text). Callers still check the token
    /// count after encoding. <paramref name="what"/> names the text in the error.
    /// </summary>
    internal static void RequireLengthFits(ITextTokenizer tokenizer, string text, int maxTokens, string what)
    {
        long bytes = System.Text.Encoding.UTF8.GetByteCount(text);
        int longest = LongestPieceBytes(tokenizer);
        long atLeast = 1 + (bytes + longest - 1) / longest;
        if (atLeast > maxTokens)
            throw new ArgumentException($"{what}: a prompt of {bytes} bytes is at least {atLeast} tokens, which exceeds the model's context of {maxTokens}");
    }

    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<ITextTokenizer, object> Longest = new();

    /// <summary>The most UTF-8 bytes one token decodes to (plus one for a SentencePiece leading space), computed once per tokenizer.</summary>
    static int LongestPieceBytes(ITextTokenizer t) => (int)Longest.GetValue(t, tok =>
    {
        int longest = 1;
        for (int id = 0; id < tok.VocabSize; id++)
            longest = Math.Max(longest, System.Text.Encoding.UTF8.GetByteCount(tok.Decode([id])) + 1);
        return longest;
    });

    static string FirstLine(string s) => s.Split('\n')[0].Trim();
}
