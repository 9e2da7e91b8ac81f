using System.Runtime.CompilerServices;

namespace NeuronTrace.Runtime.Cpu;

internal static unsafe partial class Gemm
{
    /// <summary>Micro-tile rows (A panel height).</summary>
    internal const int MR = 6;
    /// <summary>Micro-tile columns (B panel width): two Vector256&lt;float&gt;.</summary>
    internal const int NR = 16;
    /// <summary>k block: one A micro-panel (6·KC floats) plus one B micro-panel (16·KC floats) stay in L1.</summary>
    internal const int KC = 256;
    /// <summary>m block: the part of packed A (MC·KC floats) swept against one B micro-panel stays in L2.</summary>
    internal const int MC = 120;
    /// <summary>Rows of A packed at once (MA·KC floats); a tile with more rows packs B again per MA rows.</summary>
    internal const int MA = 2048;
    /// <summary>n block: the packed B block (KC·NC floats) stays in L2/L3.</summary>
    internal const int NC = 4096;
    /// <summary>Tiles per core a shared product is cut into (by columns), so that the cores balance dynamically.</summary>
    internal const int TilesPerWorker = 4;

    /// <summary>A rectangle [I0, I1) × [J0, J1) of C, computed by one task.</summary>
    readonly record struct Tile(int I0, int I1, int J0, int J1);

    readonly struct PackedJob(Problem problem, int tilesM, int tileM, int tileN)
    {
        public readonly Problem P = problem;
        public readonly int TilesM = tilesM, TileM = tileM, TileN = tileN;

        public Tile TileAt(int index)
        {
            int ti = index % TilesM, tj = index / TilesM;
            int i0 = ti * TileM, j0 = tj * TileN;
            return new Tile(i0, Math.Min(P.M, i0 + TileM), j0, Math.Min(P.N, j0 + TileN));
        }
    }

    static void RunPacked(in Problem p)
    {
        int workers = Workers(p.MultiplyAdds);
        // Cut C into at least `workers` tiles, halving the longer side (in multiples of the micro-tile) each time.
        int tilesM = 1, tilesN = 1;
        int tileM = p.M, tileN = p.N;
        while (tilesM * tilesN < workers)
        {
            bool canM = tileM >= 2 * MR * 4, canN = tileN >= 2 * NR * 4;
            if (!canM && !canN) break;
            if (canM && (!canN || tileM >= tileN)) { tilesM *= 2; tileM = RoundUp(CeilDiv(p.M, tilesM), MR); }
            else { tilesN *= 2; tileN = RoundUp(CeilDiv(p.N, tilesN), NR); }
        }
        // Then, when cores share the product, up to TilesPerWorker tiles per core by cutting n only (each tile packs just
        // its own columns of B, so no B element is packed twice; A, a few rows here, is repacked per tile): on a shared
        // machine a core that has the CPU takes the next tile while the other is descheduled, instead of waiting for a
        // static half (issue 20: at load 25-50 on 2 cores, wall time was several times the CPU time).
        while (workers > 1 && tilesM * tilesN < TilesPerWorker * workers && tileN >= 2 * NR * 8)
        {
            tilesN *= 2;
            tileN = RoundUp(CeilDiv(p.N, tilesN), NR);
        }
        tilesM = CeilDiv(p.M, tileM);
        tilesN = CeilDiv(p.N, tileN);

        var job = new PackedJob(p, tilesM, tileM, tileN);
        ForEach(tilesM * tilesN, job, static (job, index) =>
        {
            var ws = RentWorkspace();
            try { ComputeTile(in job.P, job.TileAt(index), ws); }
            finally { ReturnWorkspace(ws); }
        });
    }

    /// <summary>
    /// Single-threaded loop nest over one tile of C. Each element of A and of B is packed once per tile: for each k
    /// block, all of the tile's rows of A (up to <see cref="MA"/>) are packed, then B block by block (KC × NC, kept in
    /// L2/L3), and the micro-kernel sweeps m blocks of MC rows (kept in L2) against 16-column B micro-panels (kept in L1).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ComputeTile(in Problem p, Tile t, Workspace ws)
    {
        int k = p.K, ldc = p.N;
        int kc0 = CeilDiv(k, CeilDiv(k, KC));                              // balanced k blocks
        int ma0 = RoundUp(CeilDiv(t.I1 - t.I0, CeilDiv(t.I1 - t.I0, MA)), MR);
        int nc0 = RoundUp(CeilDiv(t.J1 - t.J0, CeilDiv(t.J1 - t.J0, NC)), NR);
        ws.Reserve(ma0 * kc0, nc0 * kc0);
        float* ap = ws.APack, bp = ws.BPack;
        float* edge = stackalloc float[MR * NR];

        for (int ia = t.I0; ia < t.I1; ia += ma0)
        {
            int ma = Math.Min(ma0, t.I1 - ia);
            int mc0 = RoundUp(CeilDiv(ma, CeilDiv(ma, MC)), MR);           // balanced m blocks
            for (int pc = 0; pc < k; pc += kc0)
            {
                int kc = Math.Min(kc0, k - pc);
                bool add = p.Accumulate || pc > 0;
                PackA(p.A, k, ia, ma, pc, kc, ap);
                for (int jc = t.J0; jc < t.J1; jc += nc0)
                {
                    int nc = Math.Min(nc0, t.J1 - jc);
                    if (p.BHalf != null)
                    {
                        if (p.TransposedB) PackBRowsHalf(p.BHalf, p.BFormat, k, jc, nc, pc, kc, bp);
                        else PackBColumnsHalf(p.BHalf, p.BFormat, p.N, jc, nc, pc, kc, bp);
                    }
                    else if (p.TransposedB) PackBRows(p.B, k, jc, nc, pc, kc, bp);
                    else PackBColumns(p.B, p.N, jc, nc, pc, kc, bp);

                    for (int ic = 0; ic < ma; ic += mc0)
                    {
                        int mc = Math.Min(mc0, ma - ic);
                        for (int jr = 0; jr < nc; jr += NR)
                        {
                            int nr = Math.Min(NR, nc - jr);
                            float* bPanel = bp + (long)jr * kc;
                            for (int ir = ic; ir < ic + mc; ir += MR)
                            {
                                int mr = Math.Min(MR, ma - ir);
                                float* aPanel = ap + (long)ir * kc;
                                float* cTile = p.C + (long)(ia + ir) * ldc + jc + jr;
                                if (mr == MR && nr == NR)
                                    MicroKernel(kc, aPanel, bPanel, cTile, ldc, add, p.Scalar);
                                else
                                {
                                    MicroKernel(kc, aPanel, bPanel, edge, NR, false, p.Scalar);
                                    MergeEdge(edge, cTile, ldc, mr, nr, add);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void MergeEdge(float* edge, float* c, int ldc, int mr, int nr, bool add)
    {
        for (int i = 0; i < mr; i++)
        {
            float* src = edge + i * NR, dst = c + (long)i * ldc;
            if (add) for (int j = 0; j < nr; j++) dst[j] += src[j];
            else for (int j = 0; j < nr; j++) dst[j] = src[j];
        }
    }

    static void MicroKernel(int kc, float* a, float* b, float* c, int ldc, bool add, bool scalar)
    {
        if (!scalar && Vector256IsFast) Kernel6x16(kc, a, b, c, ldc, add);
        else KernelScalar(kc, a, b, c, ldc, add);
    }
}
