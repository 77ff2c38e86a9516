// Kernels for the building blocks of the examples' models (see nn.go, whose CPU kernels are
// their twins): bias add and its column sum, ReLU, RMSNorm and the softmax cross-entropy.
// Included by gomoe.cu (uses warpSumA, warpMaxA and expA from gomoe.cuh).
//
// Row kernels use one warp per row and sum in the accumulator type (float for float32); the
// column sums (bias and gain gradients) use one thread per column and sum in double in row
// order, like the CPU. The mean loss is reduced by one block in a fixed order, so every
// result is deterministic.

__device__ __forceinline__ float nnLog(float x) { return logf(x); }
__device__ __forceinline__ double nnLog(double x) { return log(x); }
__device__ __forceinline__ float nnRsqrt(float x) { return 1.f / sqrtf(x); }
__device__ __forceinline__ double nnRsqrt(double x) { return 1. / sqrt(x); }

#define NN_GRID_STRIDE(i, n)                                                                       \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                    \
       i += (long long)gridDim.x * blockDim.x)

template <typename T>
__device__ __forceinline__ void biasAdd(const T *__restrict__ x, const T *__restrict__ b, T *__restrict__ y,
                                        long long n, int cols) {
  NN_GRID_STRIDE(i, n) { y[i] = x[i] + b[i % cols]; }
}

// colSum: out[c] = sum over rows of x[r, c] (double, row order).
template <typename T>
__device__ __forceinline__ void colSum(const T *__restrict__ x, T *__restrict__ out, long long rows, int cols) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  double s = 0;
  for (long long r = 0; r < rows; r++) s += (double)x[r * cols + c];
  out[c] = (T)s;
}

template <typename T>
__device__ __forceinline__ void reluFwd(const T *__restrict__ x, T *__restrict__ y, long long n) {
  NN_GRID_STRIDE(i, n) {
    T v = x[i];
    y[i] = (v > (T)0 || v != v) ? v : (T)0;
  }
}

template <typename T>
__device__ __forceinline__ void reluBwd(const T *__restrict__ x, const T *__restrict__ dy, T *__restrict__ dx,
                                        long long n) {
  NN_GRID_STRIDE(i, n) { dx[i] = x[i] > (T)0 ? dy[i] : (T)0; }
}

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

// ceRows: loss[r] = logsumexp(x[r]) − ⟨x[r], t[r]⟩.
template <typename T>
__device__ __forceinline__ void ceRows(const T *__restrict__ x, const T *__restrict__ t, double *__restrict__ loss,
                                       long long rows, int cols) {
  typedef typename Acc<T>::type A;
  long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  long long o = r * cols;
  A m = -INFINITY;
  for (int j = lane; j < cols; j += 32) m = fmax(m, (A)x[o + j]);
  m = warpMaxA(m);
  A s = 0, dot = 0;
  for (int j = lane; j < cols; j += 32) {
    A v = x[o + j];
    s += expA(v - m);
    dot += (A)t[o + j] * v;
  }
  s = warpSumA(s);
  dot = warpSumA(dot);
  if (lane == 0) loss[r] = (double)(m + nnLog(s) - dot);
}

// ceMean: out[0] = (Σ_r loss[r]) / rows, one block of 256 threads, fixed reduction order.
template <typename T>
__device__ __forceinline__ void ceMean(const double *__restrict__ loss, T *__restrict__ out, long long rows) {
  __shared__ double part[256];
  double s = 0;
  for (long long r = threadIdx.x; r < rows; r += blockDim.x) s += loss[r];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = (T)(part[0] / (double)rows);
}

// ceBwd: dx = (dyp ? dyp[0] : 1)·scale·(softmax(x[r]) − t[r]).
template <typename T>
__device__ __forceinline__ void ceBwd(const T *__restrict__ x, const T *__restrict__ t, const T *__restrict__ dyp,
                                      double scale, T *__restrict__ dx, long long rows, int cols) {
  typedef typename Acc<T>::type A;
  long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  long long o = r * cols;
  A m = -INFINITY;
  for (int j = lane; j < cols; j += 32) m = fmax(m, (A)x[o + j]);
  m = warpMaxA(m);
  A s = 0;
  for (int j = lane; j < cols; j += 32) s += expA((A)x[o + j] - m);
  s = warpSumA(s);
  A sc = (A)scale;
  if (dyp) sc *= (A)dyp[0];
  for (int j = lane; j < cols; j += 32) dx[o + j] = (T)(sc * (expA((A)x[o + j] - m) / s - (A)t[o + j]));
}

// embedFwd: out[i, c] = table[ids[i], c]; an id outside [0, V) gives a zero row and sets
// status bit 16 (StatusBadIndex).
template <typename T>
__device__ __forceinline__ void embedFwd(const T *__restrict__ table, const int *__restrict__ ids, T *__restrict__ out,
                                         long long n, int cols, int V, int *status) {
  NN_GRID_STRIDE(i, n) {
    long long r = i / cols;
    int c = (int)(i - r * cols), v = ids[r];
    if (v < 0 || v >= V) {
      out[i] = (T)0;
      if (c == 0) atomicOr(status, 16);
    } else {
      out[i] = table[(long long)v * cols + c];
    }
  }
}

// embedBwd: dtable[v, c] = Σ_{r: ids[r] = v} dy[r, c] (double, row order), one thread per
// element of the table.
template <typename T>
__device__ __forceinline__ void embedBwd(const T *__restrict__ dy, const int *__restrict__ ids, T *__restrict__ dtable,
                                         long long rows, int cols, int V) {
  NN_GRID_STRIDE(i, (long long)V * cols) {
    int v = (int)(i / cols), c = (int)(i - (long long)v * cols);
    double s = 0;
    for (long long r = 0; r < rows; r++)
      if (ids[r] == v) s += (double)dy[r * cols + c];
    dtable[i] = (T)s;
  }
}

#define NNOPS(SUF, T)                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      bias_add_##SUF(const T *x, const T *b, T *y, long long n, int cols) {                        \
    biasAdd<T>(x, b, y, n, cols);                                                                  \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256) col_sum_##SUF(const T *x, T *o, long long rows, int cols) { \
    colSum<T>(x, o, rows, cols);                                                                   \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256) relu_fwd_##SUF(const T *x, T *y, long long n) { \
    reluFwd<T>(x, y, n);                                                                           \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      relu_bwd_##SUF(const T *x, const T *dy, T *dx, long long n) {                                \
    reluBwd<T>(x, dy, dx, n);                                                                      \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      rms_fwd_##SUF(const T *x, const T *g, T *y, long long rows, int cols, double eps) {          \
    rmsFwd<T>(x, g, y, rows, cols, eps);                                                           \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      rms_bwd_##SUF(const T *x, const T *g, const T *dy, T *dx, long long rows, int cols, double eps) { \
    rmsBwd<T>(x, g, dy, dx, rows, cols, eps);                                                      \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      rms_inv_##SUF(const T *x, double *rinv, long long rows, int cols, double eps) {              \
    rmsInv<T>(x, rinv, rows, cols, eps);                                                           \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      rms_dgain_##SUF(const T *x, const T *dy, const double *rinv, T *dg, long long rows, int cols) { \
    rmsDgain<T>(x, dy, rinv, dg, rows, cols);                                                      \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      ce_rows_##SUF(const T *x, const T *t, double *loss, long long rows, int cols) {              \
    ceRows<T>(x, t, loss, rows, cols);                                                             \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256) ce_mean_##SUF(const double *loss, T *o, long long rows) { \
    ceMean<T>(loss, o, rows);                                                                      \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256) ce_bwd_##SUF(                                  \
      const T *x, const T *t, const T *dyp, double scale, T *dx, long long rows, int cols) {       \
    ceBwd<T>(x, t, dyp, scale, dx, rows, cols);                                                    \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      embed_fwd_##SUF(const T *table, const int *ids, T *o, long long n, int cols, int V, int *status) { \
    embedFwd<T>(table, ids, o, n, cols, V, status);                                                \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      embed_bwd_##SUF(const T *dy, const int *ids, T *dt, long long rows, int cols, int V) {       \
    embedBwd<T>(dy, ids, dt, rows, cols, V);                                                       \
  }
NNOPS(f32, float)
NNOPS(f64, double)
#undef NNOPS
#undef NN_GRID_STRIDE
