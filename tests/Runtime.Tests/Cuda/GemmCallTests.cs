using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// The row-major → column-major mapping handed to cuBLAS, checked without a GPU: the descriptors from
/// <see cref="GemmCall"/> are run through a BLAS-semantics reference SGEMM (with cuBLAS's leading-dimension checks)
/// and compared with the products written out by hand. Tolerance 1e-5 abs + 1e-5 rel.
/// </summary>
public unsafe class GemmCallTests
{
    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(3, 5, 7)]
    [InlineData(8, 2, 33)]
    [InlineData(5, 17, 1)]
    public void MatMul_is_x_times_w_transposed(int rows, int n, int k)
    {
        float[] x = Rand.Floats(1, rows * k), w = Rand.Floats(2, n * k), y0 = Rand.Floats(3, rows * n);
        foreach (bool accumulate in new[] { false, true })
        {
            float[] expected = new float[rows * n], y = (float[])y0.Clone();
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < n; j++)
                {
                    float s = 0f;
                    for (int l = 0; l < k; l++) s += x[r * k + l] * w[j * k + l];
                    expected[r * n + j] = (accumulate ? y0[r * n + j] : 0f) + s;
                }
            fixed (float* px = x, pw = w, py = y)
                HostKernelRuntime.ReferenceSgemm(GemmCall.MatMul((nint)px, (nint)pw, (nint)py, rows, n, k, accumulate));
            Approx.Equal(expected, y, 1e-5f, 1e-5f, $"MatMul accumulate={accumulate}");
        }
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(3, 5, 7)]
    [InlineData(8, 33, 2)]
    [InlineData(5, 1, 17)]
    public void MatMulInputGrad_is_dy_times_w(int rows, int n, int k)
    {
        float[] dy = Rand.Floats(4, rows * n), w = Rand.Floats(5, n * k), dx0 = Rand.Floats(6, rows * k);
        foreach (bool accumulate in new[] { false, true })
        {
            float[] expected = new float[rows * k], dx = (float[])dx0.Clone();
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < k; c++)
                {
                    float s = 0f;
                    for (int j = 0; j < n; j++) s += dy[r * n + j] * w[j * k + c];
                    expected[r * k + c] = (accumulate ? dx0[r * k + c] : 0f) + s;
                }
            fixed (float* pdy = dy, pw = w, pdx = dx)
                HostKernelRuntime.ReferenceSgemm(GemmCall.MatMulInputGrad((nint)pdy, (nint)pw, (nint)pdx, rows, n, k, accumulate));
            Approx.Equal(expected, dx, 1e-5f, 1e-5f, $"MatMulInputGrad accumulate={accumulate}");
        }
    }

    [Fact]
    public void Beta_zero_never_reads_the_output()
    {
        float[] x = [1f, 2f], w = [3f, 4f], y = [float.NaN];
        fixed (float* px = x, pw = w, py = y)
            HostKernelRuntime.ReferenceSgemm(GemmCall.MatMul((nint)px, (nint)pw, (nint)py, 1, 1, 2, accumulate: false));
        Assert.Equal(11f, y[0]);
    }
}
