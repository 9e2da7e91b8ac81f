namespace NeuronTrace.Bench;

static class GemmBenchHook
{
    public static void Run(TextWriter output) { }
}
