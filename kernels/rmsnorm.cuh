// rmsnorm.cuh: RMSNorm and its gradients wrt the input and the gain (CPU twin: rmsnorm.go;
// launcher: rmsnorm_cuda.go). Part of gomoe.cu's translation unit (included after gomoe.cuh,
// with namespace gomoe in scope; uses warpSumA from it); built into gomoe.fatbin by
// build_fatbin.sh.
//
// Row kernels use one warp per row and sum in the accumulator type (float for float32); the
// gain gradient uses one thread per column and sums in double in row order, like the CPU, so
// every result is deterministic.

__device__ __forceinline__ float nnRsqrt(float x) { return 1.f / sqrtf(x); }
__device__ __forceinline__ double nnRsqrt(double x) { return 1. / sqrt(x); }

// rowRmsInv returns 1/sqrt(mean(x²) + eps) of a row, reduced across the warp.
template <typename T>
__device__ __forceinline__ typename Acc<T>::type rowRmsInv(const T *__restrict__ xr, int cols, double eps, int lane) {
  typedef typename Acc<T>::type A;
  A s = 0;
  for (int j = lane; j < cols; j += 32) {
    A v = xr[j];
    s += v * v;
  }
  s = warpSumA(s);
  return nnRsqrt(s / (A)cols + (A)eps);
}

template <typename T>
__device__ __forceinline__ void rmsFwd(const T *__restrict__ x, const T *__restrict__ g, T *__restrict__ y,
                                       long long rows, int cols, double eps) {
  typedef typename Acc<T>::type A;
  long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const T *xr = x + r * cols;
  A ri = rowRmsInv<T>(xr, cols, eps, lane);
  for (int j = lane; j < cols; j += 32) y[r * cols + j] = (T)((A)xr[j] * ri * (A)g[j]);
}

// rmsBwd: dx_j = r·g_j·dy_j − x_j·r³·(Σ_k g_k·dy_k·x_k)/cols.
template <typename T>
__device__ __forceinline__ void rmsBwd(const T *__restrict__ x, const T *__restrict__ g, const T *__restrict__ dy,
                                       T *__restrict__ dx, long long rows, int cols, double eps) {
  typedef typename Acc<T>::type A;
  long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  long long o = r * cols;
  A ri = rowRmsInv<T>(x + o, cols, eps, lane);
  A dot = 0;
  for (int j = lane; j < cols; j += 32) dot += (A)g[j] * (A)dy[o + j] * (A)x[o + j];
  dot = warpSumA(dot);
  A c = ri * ri * ri * dot / (A)cols;
  for (int j = lane; j < cols; j += 32) dx[o + j] = (T)(ri * (A)g[j] * (A)dy[o + j] - (A)x[o + j] * c);
}

// rmsInv: rinv[r] = 1/sqrt(mean(x[r]²) + eps) as double (scratch of the gain gradient).
template <typename T>
__device__ __forceinline__ void rmsInv(const T *__restrict__ x, double *__restrict__ rinv, long long rows, int cols,
                                       double eps) {
  long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  double ri = (double)rowRmsInv<T>(x + r * cols, cols, eps, lane);
  if (lane == 0) rinv[r] = ri;
}

// rmsDgain: dg[c] = Σ_r dy[r,c]·x[r,c]·rinv[r] (double, row order).
template <typename T>
__device__ __forceinline__ void rmsDgain(const T *__restrict__ x, const T *__restrict__ dy,
                                         const double *__restrict__ rinv, T *__restrict__ dg, long long rows,
                                         int cols) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  double s = 0;
  for (long long r = 0; r < rows; r++) s += (double)dy[r * cols + c] * (double)x[r * cols + c] * rinv[r];
  dg[c] = (T)s;
}

#define RMSOPS(SUF, T)                                                                             \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      rms_fwd_##SUF(const T *x, const T *g, T *y, long long rows, int cols, double eps) { gdcEnter(); \
    rmsFwd<T>(x, g, y, rows, cols, eps);                                                           \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      rms_bwd_##SUF(const T *x, const T *g, const T *dy, T *dx, long long rows, int cols, double eps) { gdcEnter(); \
    rmsBwd<T>(x, g, dy, dx, rows, cols, eps);                                                      \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      rms_inv_##SUF(const T *x, double *rinv, long long rows, int cols, double eps) { gdcEnter();  \
    rmsInv<T>(x, rinv, rows, cols, eps);                                                           \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      rms_dgain_##SUF(const T *x, const T *dy, const double *rinv, T *dg, long long rows, int cols) { gdcEnter(); \
    rmsDgain<T>(x, dy, rinv, dg, rows, cols);                                                      \
  }
RMSOPS(f32, float)
RMSOPS(f64, double)
#undef RMSOPS
