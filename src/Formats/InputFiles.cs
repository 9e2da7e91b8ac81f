using NeuronTrace.Model;

namespace NeuronTrace.Formats;

/// <summary>
/// The one check every reader of a model, tokenizer or config file makes before opening it: opening a FIFO for reading
/// blocks until a writer comes (for a hostile path, forever), and a device reads without end. .NET reports no file type
/// on Unix, but stat gives a FIFO, socket or character device length 0, and no file we read is valid empty, so a zero
/// length is refused before the file is opened (issue 15).
/// </summary>
internal static class InputFiles
{
    /// <summary>Throws when <paramref name="path"/> exists but is empty or not a regular file; a missing file is left to the caller.</summary>
    public static void RequireRegular(string path)
    {
        if (File.Exists(path) && new FileInfo(path).Length == 0)
            throw new ModelFormatException(path, "is empty or not a regular file (a FIFO, socket or device cannot be read)");
    }

    /// <summary><see cref="File.ReadAllBytes"/> after <see cref="RequireRegular"/>.</summary>
    public static byte[] ReadAllBytes(string path)
    {
        RequireRegular(path);
        return File.ReadAllBytes(path);
    }

    /// <summary><see cref="File.OpenRead"/> after <see cref="RequireRegular"/>.</summary>
    public static FileStream OpenRead(string path)
    {
        RequireRegular(path);
        return File.OpenRead(path);
    }
}
