using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Tests.Kernels;

namespace NeuronTrace.Runtime.Tests.Cpu;

/// <summary><see cref="RmsNormOps.Forward"/> against the definition in float64, widths on and off the vector width.</summary>
public class RmsNormOpsTests
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 7)]
    [InlineData(5, 8)]
    [InlineData(9, 64)]
    [InlineData(4, 100)]
    [InlineData(2, 4099)]
    public void Forward_matches_float64(int rows, int dim)
    {
        var x = Rand.Floats(dim, rows * dim, -3f, 3f);
        var w = Rand.Floats(dim + 1, dim, 0.5f, 1.5f);
        var y = new float[rows * dim];
        var rstd = new float[rows];
        const float eps = 1e-5f;
        RmsNormOps.Forward(x, w, eps, y, rstd, rows, dim);
        var ey = new float[y.Length];
        var er = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
            double s = 1 / Math.Sqrt(ss / dim + eps);
            er[r] = (float)s;
            for (int i = 0; i < dim; i++) ey[r * dim + i] = (float)(w[i] * x[r * dim + i] * s);
        }
        Approx.Equal(er, rstd, 0f, 1e-6f, "rstd");
        Approx.Equal(ey, y, 1e-7f, 1e-6f, "y");
    }
}
