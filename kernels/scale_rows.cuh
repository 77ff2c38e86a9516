// scale_rows.cuh: row scaling by the probs and its row-dot gradient (CPU twin: scale_rows.go;
// launcher: scale_rows_cuda.go). Part of gomoe.cu's translation unit (included after gomoe.cuh,
// with namespace gomoe in scope); built into gomoe.fatbin by build_fatbin.sh.

// ---- row scaling (probs on the activation): y[r,c] = x[r,c]·s[r]; ds[r] = Σ_c dy[r,c]·x[r,c] --
// s and ds have the probs type (float for bfloat16 data). The products round once in the data
// type; the row sums accumulate in the accumulator type (one warp per row, a fixed order).

template <typename T, typename P>
__device__ __forceinline__ void scaleRows(const T *__restrict__ x, const P *__restrict__ s, T *__restrict__ y,
                                          long long rows, int cols) {
  long long n = rows * cols;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    T o;
    fromAcc(toAcc(x[i]) * (typename Acc<T>::type)s[i / cols], o);
    y[i] = o;
  }
}
template <typename T, typename P>
__device__ __forceinline__ void rowDot(const T *__restrict__ a, const T *__restrict__ b, P *__restrict__ out,
                                       long long rows, int cols) {
  typedef typename Acc<T>::type A;
  long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  A acc = 0;
  for (int j = lane; j < cols; j += 32) acc += toAcc(a[r * cols + j]) * toAcc(b[r * cols + j]);
  acc = warpSumA(acc);
  if (lane == 0) out[r] = (P)acc;
}
#define ROWSCALE(SUF, T, P)                                                                        \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      scale_rows_##SUF(const T *x, const P *s, T *y, long long rows, int cols) { gdcEnter();       \
    scaleRows<T, P>(x, s, y, rows, cols);                                                          \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      row_dot_##SUF(const T *a, const T *b, P *out, long long rows, int cols) { gdcEnter();        \
    rowDot<T, P>(a, b, out, rows, cols);                                                           \
  }
ROWSCALE(f32, float, float)
ROWSCALE(f64, double, double)
ROWSCALE(bf16, __nv_bfloat16, float)
#undef ROWSCALE
