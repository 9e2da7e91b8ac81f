// embedding.cu — output[r, :] = table[tokens[r], :].
//
// Launch: 1-D grid-stride over rows·dim elements, any block size. Token ids are checked on the host before the
// launch (a GPU kernel cannot throw); an id outside the vocabulary still never reads outside the table: its row
// becomes NaN, so a missed check shows up in every later value instead of as a silent wrong row.
#include "nt_device.h"

extern "C" __global__ void embedding_forward(const int* __restrict__ tokens, const float* __restrict__ table,
                                             float* __restrict__ output, int rows, int dim, int vocab) {
  const long long n = (long long)rows * dim;
  for (long long e = nt_global_index(); e < n; e += nt_grid_stride()) {
    const long long r = e / dim, c = e - r * dim;
    const int id = tokens[r];
    output[e] = (id >= 0 && id < vocab) ? table[(long long)id * dim + c] : NT_NAN;
  }
}
NT_HOST_LAUNCHER(embedding_forward)
