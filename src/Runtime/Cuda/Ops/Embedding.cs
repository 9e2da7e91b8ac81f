using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>Launcher of native/kernels/embedding.cu: the token-embedding lookup (a bf16-stored table: convert.cu's gather_bf16_rows).</summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct EmbeddingArgs(nint Tokens, nint Table, nint Output, int Count, int Dim, int Vocab);
    internal static readonly Kernel<EmbeddingArgs> EmbeddingForward = Kernel.Declare<EmbeddingArgs>("embedding_forward");

    public void Embedding(ReadOnlySpan<int> tokens, Tensor table, Tensor output)
    {
        OpContracts.Embedding(tokens, table, output);
        int dim = table.Columns;
        if (tokens.Length == 0 || dim == 0) return;
        using var _ = Range("embedding");
        long n = (long)tokens.Length * dim;
        if (table is CudaTensor { IsBf16: true })
        {
            GatherBf16Rows(Indices(tokens), tokens.Length, table, Dev(output));
            return;
        }
        Launch(EmbeddingForward, GridFor(n), new Dim3(ElementwiseBlock), 0,
            new EmbeddingArgs(Indices(tokens), In(table), Dev(output), tokens.Length, dim, table.Rows), OpWork.Streaming(n, 2));
    }
}
