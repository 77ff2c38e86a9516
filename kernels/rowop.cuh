// rowop.cuh: the row ops (row softmax, row normalisation), forward and backward (CPU twin:
// rowop.go; launcher: rowop_cuda.go). Part of gomoe.cu's translation unit (included after
// gomoe.cuh, with namespace gomoe in scope); built into gomoe.fatbin by build_fatbin.sh.
//
// Element types: float (f32) and double (f64). The transcendental functions are CUDA's (expf,
// tanhf, ...), so results match the CPU within a few ulps, not bit for bit.

// ---- row ops: one warp per row of a [rows, cols] matrix ----------------------------------

enum { RowSoftmax = 1, RowNormalize = 2 };

// row_fwd: softmax y = exp(x − max)/Σ exp(x − max); normalize y = x / Σ x.
template <typename T>
__device__ __forceinline__ void rowFwd(int kind, const T *__restrict__ x, T *__restrict__ y, long long rows, int cols) {
  typedef typename Acc<T>::type A;
  long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const T *xr = x + r * cols;
  T *yr = y + r * cols;
  if (kind == RowSoftmax) {
    A m = -INFINITY;
    for (int j = lane; j < cols; j += 32) m = fmax(m, toAcc(xr[j]));
    m = warpMaxA(m);
    A s = 0;
    for (int j = lane; j < cols; j += 32) s += expA(toAcc(xr[j]) - m);
    s = warpSumA(s);
    for (int j = lane; j < cols; j += 32) {
      T o;
      fromAcc(expA(toAcc(xr[j]) - m) / s, o);
      yr[j] = o;
    }
  } else {
    A s = 0;
    for (int j = lane; j < cols; j += 32) s += toAcc(xr[j]);
    s = warpSumA(s);
    for (int j = lane; j < cols; j += 32) {
      T o;
      fromAcc(toAcc(xr[j]) / s, o);
      yr[j] = o;
    }
  }
}

// row_bwd: softmax dx = y·(dy − Σ dy·y); normalize dx = (dy − Σ dy·y)/Σ x.
template <typename T>
__device__ __forceinline__ void rowBwd(int kind, const T *__restrict__ x, const T *__restrict__ y,
                                       const T *__restrict__ dy, T *__restrict__ dx, long long rows, int cols) {
  typedef typename Acc<T>::type A;
  long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  long long o0 = r * cols;
  A d = 0, s = 0;
  for (int j = lane; j < cols; j += 32) {
    d += toAcc(dy[o0 + j]) * toAcc(y[o0 + j]);
    if (kind == RowNormalize) s += toAcc(x[o0 + j]);
  }
  d = warpSumA(d);
  s = warpSumA(s);
  for (int j = lane; j < cols; j += 32) {
    A g = toAcc(dy[o0 + j]) - d, r;
    r = kind == RowSoftmax ? toAcc(y[o0 + j]) * g : g / s;
    T o;
    fromAcc(r, o);
    dx[o0 + j] = o;
  }
}

#define ROWOPS(SUF, T)                                                                             \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      row_fwd_##SUF(int kind, const T *x, T *y, long long rows, int cols) { gdcEnter();            \
    rowFwd<T>(kind, x, y, rows, cols);                                                             \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      row_bwd_##SUF(int kind, const T *x, const T *y, const T *dy, T *dx, long long rows, int cols) { gdcEnter(); \
    rowBwd<T>(kind, x, y, dy, dx, rows, cols);                                                     \
  }
ROWOPS(f32, float)
ROWOPS(f64, double)
#undef ROWOPS
