// z_loss.cuh: the router z-loss, forward and backward, float (f32) and double (f64) (CPU twin:
// z_loss.go; launcher: z_loss_cuda.go). Part of gomoe.cu's translation unit (included after
// gomoe.cuh, with namespace gomoe in scope; uses LOSS_LANES, lossDy and lossTree from it);
// built into gomoe.fatbin by build_fatbin.sh.
//
// Each row's log-sum-exp is computed in double by one warp; the squares are summed by one
// block in order over LOSS_LANES lanes and a fixed pairwise tree. The z-loss uses CUDA's exp
// and log, so it agrees with the CPU within a few double ulps.
//
// A gradient's dy is either a one-element device tensor (dyp != 0) or the value dyv.

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

// lossRowMaxSum gives one row's maximum m (NaN when the row holds a NaN: fmax skips a NaN, so
// a row of NaN and +Inf would pass for infinite; the CPU twin's rowMax stops at it) and returns
// s = Σ_e exp(x[e] − m) (0 when m is infinite or NaN); the warp's lanes share both.
template <typename T>
__device__ __forceinline__ double lossRowMaxSum(const T *__restrict__ x, int E, int lane, double &m) {
  m = -INFINITY;
  bool nan = false;
  for (int j = lane; j < E; j += 32) {
    double v = (double)x[j];
    nan |= v != v;
    m = fmax(m, v);
  }
  m = lossWarpMax(m);
  if (__any_sync(0xffffffffu, nan)) m = NAN;
  if (isinf(m) || m != m) return 0;
  double s = 0;
  for (int j = lane; j < E; j += 32) s = __dadd_rn(s, exp((double)x[j] - m));
  return lossWarpSum(s);
}

// lossRowLSE is log Σ_e exp(x[e]) of one row: m + log s, m itself when it is infinite, NaN
// when the row holds a NaN.
template <typename T> __device__ __forceinline__ double lossRowLSE(const T *__restrict__ x, int E, int lane) {
  double m;
  double s = lossRowMaxSum(x, E, lane, m);
  if (isinf(m) || m != m) return m;
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

// zloss_bwd: one warp per row (grid-stride); dx[t,e] = (2·scale·dy)·lse·exp(x[t,e] − m)/s (the
// CPU twin's order; exp(x[t,e] − m) alone for a row whose maximum m is infinite or NaN).
template <typename T>
__device__ __forceinline__ void zlossBwd(const T *__restrict__ x, T *__restrict__ dx, const T *dyp, double dyv,
                                         long long rows, int E, double scale) {
  long long step = ((long long)gridDim.x * blockDim.x) >> 5;
  int lane = threadIdx.x & 31;
  double c = __dmul_rn(__dmul_rn(2.0, scale), lossDy(dyp, dyv));
  for (long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += step) {
    const T *xr = x + r * E;
    double m;
    double s = lossRowMaxSum(xr, E, lane, m);
    if (isinf(m) || m != m) {
      double cm = __dmul_rn(c, m);
      for (int j = lane; j < E; j += 32) dx[r * E + j] = (T)__dmul_rn(cm, exp((double)xr[j] - m));
      continue;
    }
    double cl = __dmul_rn(c, __dadd_rn(m, log(s)));
    for (int j = lane; j < E; j += 32) dx[r * E + j] = (T)__dmul_rn(cl, __ddiv_rn(exp((double)xr[j] - m), s));
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

#define ZLOSSOPS(SUF, T)                                                                           \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      zloss_rows_##SUF(const T *x, double *sq, long long rows, int E) { gdcEnter();                \
    zlossRows<T>(x, sq, rows, E);                                                                  \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      zloss_bwd_##SUF(const T *x, T *dx, const T *dyp, double dyv, long long rows, int E, double scale) { gdcEnter(); \
    zlossBwd<T>(x, dx, dyp, dyv, rows, E, scale);                                                  \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(LOSS_LANES)                                         \
      loss_sum_##SUF(const double *v, T *out, long long n, double scale) { gdcEnter();             \
    lossSum<T>(v, out, n, scale);                                                                  \
  }
ZLOSSOPS(f32, float)
ZLOSSOPS(f64, double)
#undef ZLOSSOPS
