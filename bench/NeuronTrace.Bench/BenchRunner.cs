namespace NeuronTrace.Bench;

static class BenchRunner
{
    public static int Run(string which, string[] rest)
    {
        Console.Error.WriteLine($"unknown benchmark \"{which}\"");
        return 2;
    }
}
