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
