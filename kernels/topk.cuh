// topk.cuh: top-k routing with groups and bias (CPU twin: topk.go; launcher: topk_cuda.go). Part of
// gomoe.cu's translation unit (included after gomoe.cuh, with namespace gomoe in scope); built into
// gomoe.fatbin by build_fatbin.sh.

// ---- top-k routing -----------------------------------------------------------------------
// One thread per token, with the CPU's rules (topk.go): selection score = score + bias in
// double; with groups, a group's score is the sum (in descending order) of its top `per`
// selection scores, the `kept` best groups win (ties to the lower group), then the K best
// experts of the kept groups in descending order (ties to the lower id). A NaN selection or
// group score sets StatusNaNScore in the status word and ranks lowest. At most 1024 experts
// and 64 groups.

#define TOPK_MAX_E 1024
#define StatusNaNScore 8

// better reports whether (v, i) ranks before (w, j): greater value first, ties to the lower
// index; NaN ranks after everything.
__device__ __forceinline__ bool better(double v, int i, double w, int j) {
  bool vn = v != v, wn = w != w;
  if (vn || wn) return !vn && wn ? true : (vn && wn ? i < j : false);
  return v > w || (v == w && i < j);
}

template <typename S>
__device__ __forceinline__ void topkRow(const S *__restrict__ scores, const S *__restrict__ bias, int *__restrict__ ids,
                                        long long T, int E, int K, int groups, int kept, int per, int *status) {
  long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= T) return;
  const S *row = scores + t * E;
  unsigned allowed[TOPK_MAX_E / 32];
  unsigned taken[TOPK_MAX_E / 32];
  int words = (E + 31) / 32;
  for (int w = 0; w < words; w++) allowed[w] = 0xffffffffu, taken[w] = 0;
  auto sel = [&](int e) -> double { return (double)row[e] + (bias ? (double)bias[e] : 0.0); };
  bool nan = false;
  if (groups > 1) {
    int gsize = E / groups;
    double gscore[64];
    for (int g = 0; g < groups; g++) {
      // the group's top `per` values, in descending order, summed in that order
      double s = 0;
      unsigned used[TOPK_MAX_E / 32];
      for (int w = 0; w < words; w++) used[w] = 0;
      int n = per < gsize ? per : gsize;
      for (int k = 0; k < n; k++) {
        int best = -1;
        double bv = 0;
        for (int e = g * gsize; e < (g + 1) * gsize; e++) {
          if (used[e >> 5] >> (e & 31) & 1) continue;
          double v = sel(e);
          if (best < 0 || better(v, e, bv, best)) best = e, bv = v;
        }
        used[best >> 5] |= 1u << (best & 31);
        s += bv;
      }
      gscore[g] = s;
      if (s != s) nan = true;
    }
    for (int w = 0; w < words; w++) allowed[w] = 0;
    unsigned long long gtaken = 0;
    for (int k = 0; k < kept; k++) {
      int best = -1;
      double bv = 0;
      for (int g = 0; g < groups; g++) {
        if (gtaken >> g & 1) continue;
        if (best < 0 || better(gscore[g], g, bv, best)) best = g, bv = gscore[g];
      }
      gtaken |= 1ull << best;
      for (int e = best * gsize; e < (best + 1) * gsize; e++) allowed[e >> 5] |= 1u << (e & 31);
    }
  }
  for (int k = 0; k < K; k++) {
    int best = -1;
    double bv = 0;
    for (int e = 0; e < E; e++) {
      unsigned bit = 1u << (e & 31);
      if (!(allowed[e >> 5] & bit) || (taken[e >> 5] & bit)) continue;
      double v = sel(e);
      if (v != v) nan = true;
      if (best < 0 || better(v, e, bv, best)) best = e, bv = v;
    }
    taken[best >> 5] |= 1u << (best & 31);
    ids[t * K + k] = best;
  }
  if (nan) atomicOr(status, StatusNaNScore);
}

extern "C" __global__ void __launch_bounds__(128)
topk_f32(const float *s, const float *bias, int *ids, long long T, int E, int K, int groups, int kept, int per, int *status) {
  gdcEnter();
  topkRow<float>(s, bias, ids, T, E, K, groups, kept, per, status);
}
extern "C" __global__ void __launch_bounds__(128)
topk_f64(const double *s, const double *bias, int *ids, long long T, int E, int K, int groups, int kept, int per, int *status) {
  gdcEnter();
  topkRow<double>(s, bias, ids, T, E, K, groups, kept, per, status);
}
