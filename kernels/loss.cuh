// Kernels of the routing losses (see loss.go): the load-balancing loss and the router z-loss,
// forward and backward, float (f32) and double (f64). Everything sums in double in a fixed
// order (no atomics decide a sum): per-chunk partial sums, then one block that adds them in
// order over LOSS_LANES lanes and a fixed pairwise tree. The products and sums of the balancing
// loss use the _rn intrinsics (no FMA contraction), so it equals the CPU bit for bit; the
// z-loss uses CUDA's exp and log, so it agrees within a few double ulps.
//
// A gradient's dy is either a one-element device tensor (dyp != 0) or the value dyv.

#define LOSS_CHUNK 64
#define LOSS_LANES 256

// lossDy is the output gradient: *dyp if given, else dyv.
template <typename T> __device__ __forceinline__ double lossDy(const T *dyp, double dyv) {
  return dyp ? (double)dyp[0] : dyv;
}

// loss_partials: block c·ny + y handles chunk c (rows [r0, r1) of sequence c / cps) and the
// columns e = y·blockDim.x + threadIdx.x. partN[c·E + e] = the number of ids[t,k] = e in the
// chunk; with s, partP[c·E + e] = Σ_t s[t,e] in row order (double). Ids outside [-1, E) set
// status bit 1 and are not counted.
template <typename T>
__device__ __forceinline__ void lossPartials(const int *__restrict__ ids, const T *__restrict__ s,
                                             double *__restrict__ partP, int *__restrict__ partN, int K, int E,
                                             int S, int cps, int ny, int *__restrict__ status) {
  int c = blockIdx.x / ny;
  int e = (blockIdx.x % ny) * blockDim.x + threadIdx.x;
  long long b = c / cps;
  long long r0 = b * S + (long long)(c % cps) * LOSS_CHUNK;
  long long r1 = min(r0 + LOSS_CHUNK, (b + 1) * S);
  if (e >= E) return;
  double p = 0;
  int n = 0;
  bool bad = false;
  for (long long t = r0; t < r1; t++) {
    if (s) p = __dadd_rn(p, (double)s[t * E + e]);
    const int *it = ids + t * K;
    for (int k = 0; k < K; k++) {
      int x = __ldg(it + k);
      n += x == e;
      bad |= x < -1 || x >= E;
    }
  }
  if (bad && e == 0) atomicOr(status, 1);
  long long o = (long long)c * E + e;
  partN[o] = n;
  if (s) partP[o] = p;
}

// lossTree adds the block's LOSS_LANES values in red[] with a fixed pairwise tree; the result
// is in red[0] for every thread.
__device__ __forceinline__ void lossTree(double *red) {
  __syncthreads();
  for (int st = LOSS_LANES / 2; st > 0; st >>= 1) {
    if (threadIdx.x < st) red[threadIdx.x] = __dadd_rn(red[threadIdx.x], red[threadIdx.x + st]);
    __syncthreads();
  }
}

// balance_loss_fwd (one block of LOSS_LANES threads): out = scale · Σ_{b,e} N[b,e]·P[b,e], the
// element i = b·E + e going to lane i mod LOSS_LANES.
template <typename T>
__device__ __forceinline__ void balanceFwd(const double *__restrict__ partP, const int *__restrict__ partN,
                                           T *__restrict__ out, int B, int E, int cps, double scale) {
  __shared__ double red[LOSS_LANES];
  double acc = 0;
  long long n = (long long)B * E;
  for (long long i = threadIdx.x; i < n; i += LOSS_LANES) {
    long long b = i / E, e = i % E;
    double p = 0;
    long long cnt = 0;
    for (int j = 0; j < cps; j++) {
      long long o = (b * cps + j) * E + e;
      p = __dadd_rn(p, partP[o]);
      cnt += partN[o];
    }
    acc = __dadd_rn(acc, __dmul_rn((double)cnt, p));
  }
  red[threadIdx.x] = acc;
  lossTree(red);
  if (threadIdx.x == 0) out[0] = (T)__dmul_rn(red[0], scale);
}

// balance_loss_bwd: block c·ny + y writes ds[t,e] = (scale·dy)·N[b,e] for the rows of chunk c.
template <typename T>
__device__ __forceinline__ void balanceBwd(const int *__restrict__ partN, T *__restrict__ ds, const T *dyp,
                                           double dyv, int E, int S, int cps, int ny, double scale) {
  int c = blockIdx.x / ny;
  int e = (blockIdx.x % ny) * blockDim.x + threadIdx.x;
  if (e >= E) return;
  long long b = c / cps;
  long long r0 = b * S + (long long)(c % cps) * LOSS_CHUNK;
  long long r1 = min(r0 + LOSS_CHUNK, (b + 1) * S);
  long long cnt = 0;
  for (int j = 0; j < cps; j++) cnt += partN[(b * cps + j) * E + e];
  T v = (T)__dmul_rn(__dmul_rn(scale, lossDy(dyp, dyv)), (double)cnt);
  for (long long t = r0; t < r1; t++) ds[t * E + e] = v;
}

// lossWarpMax and lossWarpSum reduce over a warp with a xor butterfly (every lane gets the
// result).
__device__ __forceinline__ double lossWarpMax(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double lossWarpSum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = __dadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// lossRowLSE is log Σ_e exp(x[e]) of one row (the warp's lanes share it): the maximum m first,
// m itself when it is infinite.
template <typename T> __device__ __forceinline__ double lossRowLSE(const T *__restrict__ x, int E, int lane) {
  double m = -INFINITY;
  for (int j = lane; j < E; j += 32) m = fmax(m, (double)x[j]);
  m = lossWarpMax(m);
  if (isinf(m)) return m;
  double s = 0;
  for (int j = lane; j < E; j += 32) s = __dadd_rn(s, exp((double)x[j] - m));
  s = lossWarpSum(s);
  return m + log(s);
}

// zloss_rows: one warp per row (grid-stride); sq[t] = lse(x[t])².
template <typename T>
__device__ __forceinline__ void zlossRows(const T *__restrict__ x, double *__restrict__ sq, long long rows, int E) {
  long long step = ((long long)gridDim.x * blockDim.x) >> 5;
  int lane = threadIdx.x & 31;
  for (long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += step) {
    double l = lossRowLSE(x + r * E, E, lane);
    if (lane == 0) sq[r] = __dmul_rn(l, l);
  }
}

// zloss_bwd: one warp per row (grid-stride); dx[t,e] = (2·scale·dy)·lse·exp(x[t,e] − lse).
template <typename T>
__device__ __forceinline__ void zlossBwd(const T *__restrict__ x, T *__restrict__ dx, const T *dyp, double dyv,
                                         long long rows, int E, double scale) {
  long long step = ((long long)gridDim.x * blockDim.x) >> 5;
  int lane = threadIdx.x & 31;
  double c = __dmul_rn(__dmul_rn(2.0, scale), lossDy(dyp, dyv));
  for (long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += step) {
    const T *xr = x + r * E;
    double l = lossRowLSE(xr, E, lane);
    double cl = __dmul_rn(c, l);
    for (int j = lane; j < E; j += 32) dx[r * E + j] = (T)__dmul_rn(cl, exp((double)xr[j] - l));
  }
}

// loss_sum (one block of LOSS_LANES threads): out = scale · Σ v[i], v[i] going to lane
// i mod LOSS_LANES.
template <typename T>
__device__ __forceinline__ void lossSum(const double *__restrict__ v, T *__restrict__ out, long long n, double scale) {
  __shared__ double red[LOSS_LANES];
  double acc = 0;
  for (long long i = threadIdx.x; i < n; i += LOSS_LANES) acc = __dadd_rn(acc, v[i]);
  red[threadIdx.x] = acc;
  lossTree(red);
  if (threadIdx.x == 0) out[0] = (T)__dmul_rn(red[0], scale);
}

#define LOSSOPS(SUF, T)                                                                            \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      loss_partials_##SUF(const int *ids, const T *s, double *partP, int *partN, int K, int E, int S, \
                          int cps, int ny, int *status) {                                          \
    lossPartials<T>(ids, s, partP, partN, K, E, S, cps, ny, status);                               \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(LOSS_LANES)                                         \
      balance_loss_fwd_##SUF(const double *partP, const int *partN, T *out, int B, int E, int cps,  \
                             double scale) {                                                       \
    balanceFwd<T>(partP, partN, out, B, E, cps, scale);                                            \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      balance_loss_bwd_##SUF(const int *partN, T *ds, const T *dyp, double dyv, int E, int S, int cps, \
                             int ny, double scale) {                                               \
    balanceBwd<T>(partN, ds, dyp, dyv, E, S, cps, ny, scale);                                      \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      zloss_rows_##SUF(const T *x, double *sq, long long rows, int E) {                            \
    zlossRows<T>(x, sq, rows, E);                                                                  \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      zloss_bwd_##SUF(const T *x, T *dx, const T *dyp, double dyv, long long rows, int E, double scale) { \
    zlossBwd<T>(x, dx, dyp, dyv, rows, E, scale);                                                  \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(LOSS_LANES)                                         \
      loss_sum_##SUF(const double *v, T *out, long long n, double scale) {                         \
    lossSum<T>(v, out, n, scale);                                                                  \
  }
LOSSOPS(f32, float)
LOSSOPS(f64, double)
#undef LOSSOPS
