using System.Security.Cryptography;
using NeuronTrace.TestSupport;
using static NeuronTrace.Formats.Tests.FormatTestHelpers;
using NeuronTrace.Formats;

namespace NeuronTrace.Formats.Tests;

/// <summary>
/// Hub ids resolved through a Hugging Face cache built here the way huggingface_hub lays it out: the converted
/// stories260K under models--test-org--stories260K, refs/main and refs/v1 naming snapshots, files symlinked to blobs/.
/// </summary>
public sealed class HubCacheTests : IDisposable
{
    const string MainHash = "0123456789abcdef0123456789abcdef01234567";
    const string OldHash = "fedcba9876543210fedcba9876543210fedcba98";
    readonly string _cache = RepoPaths.TempDir("hubcache");
    readonly string _repo, _converted;

    public HubCacheTests()
    {
        _repo = Path.Combine(_cache, "models--test-org--stories260K");
        string converted = _converted = Path.Combine(_cache, "converted");
        HfFolderWriter.Write(Stories, converted, RepoPaths.Tok512);
        Directory.CreateDirectory(Path.Combine(_repo, "blobs"));
        Directory.CreateDirectory(Path.Combine(_repo, "refs"));
        foreach (string hash in new[] { MainHash, OldHash })
        {
            string snap = Path.Combine(_repo, "snapshots", hash);
            Directory.CreateDirectory(snap);
            foreach (string file in Directory.GetFiles(converted))
            {
                // Content-addressed blob, linked relatively as huggingface_hub does (../../blobs/SHA).
                string sha = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(file)));
                string blob = Path.Combine(_repo, "blobs", sha);
                if (!File.Exists(blob)) File.Copy(file, blob);
                File.CreateSymbolicLink(Path.Combine(snap, Path.GetFileName(file)), Path.Combine("..", "..", "blobs", sha));
            }
        }
        File.WriteAllText(Path.Combine(_repo, "refs", "main"), MainHash);
        File.WriteAllText(Path.Combine(_repo, "refs", "v1"), OldHash + "\n");
    }

    public void Dispose() => Directory.Delete(_cache, recursive: true);

    [Theory]
    [InlineData("test-org/stories260K", MainHash)]
    [InlineData("test-org/stories260K@main", MainHash)]
    [InlineData("test-org/stories260K@v1", OldHash)]
    [InlineData("test-org/stories260K@" + OldHash, OldHash)]
    public void LoadsByIdAndRevision(string id, string hash)
    {
        var m = ModelLoader.Load(id, _cache);
        Assert.Equal("hf", m.Format);
        Assert.Equal(Path.Combine(_repo, "snapshots", hash), m.Path);
        Assert.True(new FileInfo(Path.Combine(m.Path, "model.safetensors")).LinkTarget is not null, "the snapshot files are symlinks");
        AssertSameArrays(ModelLoader.Load(_converted).Weights, m.Weights); // the same model as the plain folder it was made from
        Assert.Equal(512, m.RequireTokenizer().VocabSize);
    }

    [Fact]
    public void MissingIdNamesTheFolderAndTheDownloadCommand()
    {
        var ex = AssertFormatError(() => ModelLoader.Load("meta-llama/Llama-3.1-8B-Instruct", _cache), "meta-llama/Llama-3.1-8B-Instruct",
            Path.Combine(_cache, "models--meta-llama--Llama-3.1-8B-Instruct"), "nothing is downloaded",
            "`huggingface-cli download meta-llama/Llama-3.1-8B-Instruct`");
        Assert.StartsWith("meta-llama/Llama-3.1-8B-Instruct: ", ex.Message);
    }

    [Fact]
    public void MissingRevisionListsWhatTheCacheHas()
    {
        AssertFormatError(() => ModelLoader.Load("test-org/stories260K@v2", _cache), "test-org/stories260K@v2",
            "revision v2 is not in the Hugging Face cache", $"looked in {_repo}", "main, v1, " + MainHash,
            "`huggingface-cli download test-org/stories260K --revision v2`");
    }

    [Fact]
    public void AnExistingPathWinsOverAnId()
    {
        // A relative folder spelled like an id, holding a different model than the cache entry of that id.
        string cwd = Environment.CurrentDirectory;
        string local = Path.Combine(cwd, "test-org", "stories260K");
        Assert.False(Directory.Exists(local));
        try
        {
            Directory.CreateDirectory(local);
            File.Copy(RepoPaths.Stories260KGguf, Path.Combine(local, "stories260K.gguf"));
            var m = ModelLoader.Load("test-org/stories260K", _cache);
            Assert.Equal("gguf", m.Format);
        }
        finally { Directory.Delete(Path.Combine(cwd, "test-org"), recursive: true); }
    }

    [Fact]
    public void CacheFolderFollowsHuggingFaceHubPrecedence()
    {
        Assert.Equal("/a/hub-cache", HubCache.Folder(v => v switch { "HF_HUB_CACHE" => "/a/hub-cache", "HF_HOME" => "/b", _ => null }));
        Assert.Equal(Path.Combine("/b", "hub"), HubCache.Folder(v => v == "HF_HOME" ? "/b" : null));
        Assert.Equal(Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface", "hub"),
            HubCache.Folder(_ => null));
    }

    [Theory]
    [InlineData("org/name", true)]
    [InlineData("org/name@main", true)]
    [InlineData("org/na.me-1_2@v1.0", true)]
    [InlineData("name", false)]
    [InlineData("./org/name", false)]
    [InlineData("/abs/path", false)]
    [InlineData("a/b/c", false)]
    [InlineData("models/stories260K/stories260K.bin", false)]
    public void IdSpelling(string text, bool isId) => Assert.Equal(isId, HubCache.IsModelId(text));
}
