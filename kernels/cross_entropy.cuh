// cross_entropy.cuh: the softmax cross-entropy loss and its gradient (CPU twin:
// cross_entropy.go; launcher: cross_entropy_cuda.go). Part of gomoe.cu's translation unit
// (included after gomoe.cuh, with namespace gomoe in scope; uses warpSumA, warpMaxA and expA
// from it); built into gomoe.fatbin by build_fatbin.sh.
//
// Row kernels use one warp per row and sum in the accumulator type (float for float32). The
// mean loss is reduced by one block in a fixed order, so every result is deterministic.

__device__ __forceinline__ float nnLog(float x) { return logf(x); }
__device__ __forceinline__ double nnLog(double x) { return log(x); }

// warpRowMax is the maximum of row[0..cols), read by the 32 lanes of a warp, on every lane.
template <typename T, typename A>
__device__ __forceinline__ A warpRowMax(const T *__restrict__ row, int cols, int lane) {
  A m = -INFINITY;
  for (int j = lane; j < cols; j += 32) m = fmax(m, (A)row[j]);
  return warpMaxA(m);
}

// ceRows: loss[r] = logsumexp(x[r]) − ⟨x[r], t[r]⟩, the inner product over the classes with a
// nonzero target, as log s + Σ t·(m − x) + m·(1 − Σ t) (the CPU twin's ceRow: m cancels before
// it meets log s, which m + log s − ⟨x, t⟩ lost to rounding, in float32 from |x| ≈ 10⁴).
template <typename T>
__device__ __forceinline__ void ceRows(const T *__restrict__ x, const T *__restrict__ t, double *__restrict__ loss,
                                       long long rows, int cols) {
  typedef typename Acc<T>::type A;
  long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  long long o = r * cols;
  A m = warpRowMax<T, A>(x + o, cols, lane);
  A s = 0, d = 0, ts = 0;
  for (int j = lane; j < cols; j += 32) {
    A v = x[o + j], tv = t[o + j];
    s += expA(v - m);
    if (tv != 0) {  // a class with no target weight adds nothing, even at a logit of −Inf
      d += tv * (m - v);
      ts += tv;
    }
  }
  s = warpSumA(s);
  d = warpSumA(d);
  ts = warpSumA(ts);
  if (lane == 0) loss[r] = (double)(nnLog(s) + d + m * (A(1) - ts));
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
  A m = warpRowMax<T, A>(x + o, cols, lane);
  A s = 0;
  for (int j = lane; j < cols; j += 32) s += expA((A)x[o + j] - m);
  s = warpSumA(s);
  A sc = (A)scale;
  if (dyp) sc *= (A)dyp[0];
  for (int j = lane; j < cols; j += 32) dx[o + j] = (T)(sc * (expA((A)x[o + j] - m) / s - (A)t[o + j]));
}

#define CEOPS(SUF, T)                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      ce_rows_##SUF(const T *x, const T *t, double *loss, long long rows, int cols) { gdcEnter();  \
    ceRows<T>(x, t, loss, rows, cols);                                                             \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256) ce_mean_##SUF(const double *loss, T *o, long long rows) { gdcEnter(); \
    ceMean<T>(loss, o, rows);                                                                      \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256) ce_bwd_##SUF(                                  \
      const T *x, const T *t, const T *dyp, double scale, T *dx, long long rows, int cols) { gdcEnter(); \
    ceBwd<T>(x, t, dyp, scale, dx, rows, cols);                                                    \
  }
CEOPS(f32, float)
CEOPS(f64, double)
#undef CEOPS
