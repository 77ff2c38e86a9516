// gather_topk.cuh: the scores of the top-k experts, gathered, and their gradient scattered back
// (CPU twin: gather_topk.go; launcher: gather_topk_cuda.go). Part of gomoe.cu's translation unit
// (included after gomoe.cuh, with namespace gomoe in scope); built into gomoe.fatbin by
// build_fatbin.sh.

// gather_topk: out[t,k] = s[t, ids[t,k]] (0 for a negative id). gather_topk_bwd: ds [T,E] =
// 0 except ds[t, ids[t,k]] += g[t,k] (one thread per row, so repeated ids add in k order). An
// id outside [-1, E) is treated as -1 and sets StatusBadID (1) in the status word (the CPU's
// is an error): nothing outside the buffers is read or written.
template <typename T>
__device__ __forceinline__ void gatherTopK(const T *__restrict__ s, const int *__restrict__ ids, T *__restrict__ out,
                                           long long TK, int E, int K, int *status) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < TK;
       i += (long long)gridDim.x * blockDim.x) {
    int e = ids[i];
    if (e < -1 || e >= E) {
      atomicOr(status, 1);
      e = -1;
    }
    out[i] = e >= 0 ? s[(i / K) * E + e] : (T)0;
  }
}
template <typename T>
__device__ __forceinline__ void gatherTopKBwd(const T *__restrict__ g, const int *__restrict__ ids, T *__restrict__ ds,
                                              long long T_, int E, int K, int *status) {
  long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= T_) return;
  T *row = ds + t * E;
  for (int e = 0; e < E; e++) row[e] = (T)0;
  for (int k = 0; k < K; k++) {
    int e = ids[t * K + k];
    if (e < -1 || e >= E) {
      atomicOr(status, 1);
      continue;
    }
    if (e >= 0) row[e] += g[t * K + k];
  }
}
extern "C" __global__ void __launch_bounds__(256)
gather_topk_f32(const float *s, const int *ids, float *o, long long TK, int E, int K, int *st) {
  gdcEnter(); gatherTopK<float>(s, ids, o, TK, E, K, st); }
extern "C" __global__ void __launch_bounds__(256)
gather_topk_f64(const double *s, const int *ids, double *o, long long TK, int E, int K, int *st) {
  gdcEnter(); gatherTopK<double>(s, ids, o, TK, E, K, st); }
extern "C" __global__ void __launch_bounds__(256)
gather_topk_bwd_f32(const float *g, const int *ids, float *ds, long long T, int E, int K, int *st) {
  gdcEnter(); gatherTopKBwd<float>(g, ids, ds, T, E, K, st); }
extern "C" __global__ void __launch_bounds__(256)
gather_topk_bwd_f64(const double *g, const int *ids, double *ds, long long T, int E, int K, int *st) {
  gdcEnter(); gatherTopKBwd<double>(g, ids, ds, T, E, K, st); }
