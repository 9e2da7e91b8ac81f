// ablation.cu — mean ablation inside the forward (IBackend.MeanAblate): the sweep's edit, built from a bit mask
// and two small row maps on the device instead of full [rows, width] scale and offset arrays uploaded per layer.
//
// For row r of x [rows, width]: mean_row[r] < 0 leaves it alone (padding); otherwise element i becomes
// means[mean_row[r], i] unless it is kept: keep_row[r] >= 0 and bit i % 32 of word i / 32 of mask row
// keep_row[r] (words_per_row words per mask row) is set. A plain copy, so the result is bit-exact with the CPU op.
//
// Launch: 1-D grid-stride loop over rows·width elements, any block size. Row indices are checked on the host.
#include "nt_device.h"

extern "C" __global__ void mean_ablate(float* __restrict__ x, const float* __restrict__ means,
                                       const unsigned* __restrict__ keep_bits, const int* __restrict__ keep_row,
                                       const int* __restrict__ mean_row, int rows, int width, int words_per_row) {
  const long long n = (long long)rows * width;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const long long r = e / width;
    const int i = (int)(e - r * width);
    const int m = mean_row[r];
    if (m < 0) continue;
    const int k = keep_row[r];
    const bool keep = k >= 0 && ((keep_bits[(long long)k * words_per_row + (i >> 5)] >> (i & 31)) & 1u) != 0;
    if (!keep) x[e] = means[(long long)m * width + i];
  }
}
NT_HOST_LAUNCHER(mean_ablate)

// The keep bits of a forward's masks, built on the device from tables uploaded once per sweep (issue 18): for mask m
// the spec row (source, k, invert): source < 0 keeps node f when ranks[f] < k (the top-k of the ranking, ranks the
// inverse of its order), source >= 0 copies stored row `source` ([layers·positions·words] words each: the random
// circuits); invert flips every node. Word w of bits row (l·masks + m)·positions + p covers nodes 32w.. of layer l,
// position p, flat index (l·positions + p)·width + i; tail bits past the width stay 0 (as AblationMask.PackRow).
// Launch: 1-D grid-stride loop over layers·masks·positions·words words, any block size. CPU reference:
// CpuSweepOps.BuildKeepBits (exact).
extern "C" __global__ void build_keep_bits(unsigned* __restrict__ bits, const int* __restrict__ ranks,
                                           const unsigned* __restrict__ stored, const int* __restrict__ specs,
                                           int masks, int layers, int positions, int width, int words_per_row) {
  const long long n = (long long)layers * masks * positions * words_per_row;
  const long long stored_row = (long long)layers * positions * words_per_row;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const int w = (int)(e % words_per_row);
    long long t = e / words_per_row;
    const int p = (int)(t % positions);
    t /= positions;
    const int m = (int)(t % masks);
    const int l = (int)(t / masks);
    const int source = specs[3 * m], k = specs[3 * m + 1], invert = specs[3 * m + 2];
    const int count = nt_min(32, width - 32 * w);
    const long long node = ((long long)l * positions + p) * width + 32LL * w;
    unsigned word = 0u;
    if (source < 0) {
      for (int j = 0; j < count; ++j)
        if (ranks[node + j] < k) word |= 1u << j;
    } else {
      word = stored[source * stored_row + ((long long)l * positions + p) * words_per_row + w];
    }
    const unsigned valid = count == 32 ? 0xffffffffu : ((1u << count) - 1u);
    bits[e] = (invert ? ~word : word) & valid;
  }
}
NT_HOST_LAUNCHER(build_keep_bits)

// The sweep's metric per mask, reduced on the device so only two floats per mask come back. logits [replicas·examples,
// columns] are the last rows' logits of the few tokens the metric reads; example b's terms are per_row (column, weight)
// pairs, interleaved in one table (words 2j, 2j + 1 of row b: columns and weights point at its first two words, each
// read with stride 2; column −1: an empty slot). Example b of replica r has the value
// v = Σ_j weight_j · logit_j, j in order, each step one fma from 0 (so l_c − l_p for a logit difference, one rounding,
// as Metric.Value), and the replica's metric is Σ_b v_b, b in order, in fp64, written as (hi, lo = sum − hi).
// Launch: 1-D grid-stride loop over replicas (one thread each: a few terms per example), any block size. CPU
// reference: CpuSweepOps.ReplicaMetric (exact).
extern "C" __global__ void replica_metric(const float* __restrict__ logits, const int* __restrict__ term_columns,
                                          const float* __restrict__ term_weights, float* __restrict__ metric,
                                          int replicas, int examples, int columns, int per_row) {
  for (long long r = nt_global_index(); r < replicas; r += nt_grid_stride()) {
    double sum = 0.0;
    for (int b = 0; b < examples; ++b) {
      const float* row = logits + (r * examples + b) * (long long)columns;
      const long long t = 2LL * b * per_row;
      float v = 0.0f;
      for (int j = 0; j < per_row; ++j) {
        const int c = term_columns[t + 2 * j];
        if (c >= 0) v = fmaf(term_weights[t + 2 * j], row[c], v);
      }
      sum += (double)v;
    }
    const float hi = (float)sum;
    metric[2 * r] = hi;
    metric[2 * r + 1] = (float)(sum - (double)hi);
  }
}
NT_HOST_LAUNCHER(replica_metric)
