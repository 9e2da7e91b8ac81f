using System.Diagnostics;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// Debian's chromium, headless (scripts/ensure-tools.sh --browser installs it): screenshots and rendered DOM dumps of a
/// local page, with the page's console lines from the browser log. Missing chromium fails under CI (env CI=true) and is
/// reported on stderr elsewhere, never passed silently.
/// </summary>
public static class HeadlessChromium
{
    public const string Path = "/usr/bin/chromium";

    /// <summary>True when chromium is here; false (with a visible note) when not; under CI a missing chromium fails the test.</summary>
    public static bool Available(string test)
    {
        if (File.Exists(Path)) return true;
        if (Environment.GetEnvironmentVariable("CI") == "true")
            Assert.Fail($"{test}: CI=true but {Path} is missing; run scripts/ensure-tools.sh --browser");
        Console.Error.WriteLine($"NOT RUN (browser part of {test}): {Path} is missing; scripts/ensure-tools.sh --browser installs it");
        return false;
    }

    /// <summary>Screenshot of <paramref name="html"/> into <paramref name="png"/>; returns the page's console lines.</summary>
    public static List<string> Screenshot(string html, string png, int width, int height)
    {
        var (_, console) = Run(html, [$"--screenshot={png}", $"--window-size={width},{height}", "--hide-scrollbars"]);
        return console;
    }

    /// <summary>The DOM after the page's scripts ran (chromium --dump-dom), and the page's console lines.</summary>
    public static (string Dom, List<string> Console) DumpDom(string html) => Run(html, ["--dump-dom", "--window-size=1200,900"]);

    static (string Stdout, List<string> Console) Run(string html, string[] extra)
    {
        string tmp = NeuronTrace.TestSupport.RepoPaths.TempDir("chromium");
        var psi = new ProcessStartInfo(Path) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", $"--user-data-dir={System.IO.Path.Combine(tmp, "profile")}", "--enable-logging=stderr", "--v=0" })
            psi.ArgumentList.Add(a);
        foreach (var a in extra) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add(new Uri(html).AbsoluteUri);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(180_000)) { p.Kill(entireProcessTree: true); throw new TimeoutException("chromium did not finish in 180 s"); }
        var lines = stderr.Result.Split('\n').Where(l => l.Contains(":CONSOLE") || l.Contains("Uncaught")).ToList();
        try { Directory.Delete(tmp, recursive: true); } catch (IOException) { }
        return (stdout.Result, lines);
    }
}
