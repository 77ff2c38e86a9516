// grad_norm.cuh: gradient-norm clipping on the device, for training steps that never wait for
// the host (launcher: grad_norm_cuda.go; the host path is train's clip, which calls the same
// kernels through device.Backend.SumSquares). Part of gomoe.cu's translation unit (included
// after gomoe.cuh and optimizer.cuh); built into gomoe.fatbin by build_fatbin.sh.
//
// A gradient's Σ g² comes from row sums of 1024 elements (sq_rows, in double, for float32 and
// bfloat16; RowDot for float64); sum_reduce adds the row sums in double in a fixed order (thread x of 256 sums rows x,
// x+256, ... in order, then the xor butterfly of warpSumA, then the 8 warp sums in warp order);
// clip_finish adds the gradients' sums in order, takes the norm and the scale
// maxNorm/(norm + 1e-6) in double (IEEE sqrt and division: the host's bits), and scale_by
// multiplies a gradient by the scale when it is below 1, as the engine's MulScalar does.

#define StatusBadNorm 64

// sq_rows (float32 and bfloat16 gradients): out[r] = Σ_j g[r·cols + j]² for each of rows rows,
// one warp per row: lane l adds the squares of elements l, l+32, ... in order, then the xor
// butterfly of warpSumA; the squares (exact: 24-bit significands) and their sums in double, so
// that an element beyond about 1.8·10¹⁹ no longer makes the norm +Inf, as RowDot's float32 row
// sums did. (Float64 gradients keep RowDot: double is their own type.)
template <typename T>
__device__ __forceinline__ void sqRows(const T *__restrict__ g, double *__restrict__ out, long long rows, int cols) {
  long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (r >= rows) return;
  double acc = 0;
  for (int j = lane; j < cols; j += 32) {
    double v = (double)toAcc(g[r * cols + j]);
    acc = __dadd_rn(acc, __dmul_rn(v, v));
  }
  acc = warpSumA(acc);
  if (lane == 0) out[r] = acc;
}
extern "C" __global__ void __launch_bounds__(256) sq_rows_f32(const float *g, double *out, long long rows, int cols) {
  gdcEnter();
  sqRows<float>(g, out, rows, cols);
}
extern "C" __global__ void __launch_bounds__(256)
sq_rows_bf16(const __nv_bfloat16 *g, double *out, long long rows, int cols) {
  gdcEnter();
  sqRows<__nv_bfloat16>(g, out, rows, cols);
}

template <typename R> __device__ __forceinline__ void sumReduce(const R *__restrict__ rows, long long n, double *out) {
  __shared__ double ws[8];
  double s = 0;
  for (long long i = threadIdx.x; i < n; i += 256) s += (double)rows[i];
  s = warpSumA(s);
  if ((threadIdx.x & 31) == 0) ws[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int w = 0; w < 8; w++) t += ws[w];
    *out = t;
  }
}
extern "C" __global__ void __launch_bounds__(256) sum_reduce_f32(const float *rows, long long n, double *out) {
  gdcEnter();
  sumReduce<float>(rows, n, out);
}
extern "C" __global__ void __launch_bounds__(256) sum_reduce_f64(const double *rows, long long n, double *out) {
  gdcEnter();
  sumReduce<double>(rows, n, out);
}

// clip_finish: st = {skip, norm, scale, maxNorm} (an optimiser's scalars from its skip slot;
// the host writes maxNorm before each replay, so a new MaxGradNorm takes effect). A max norm of
// 0 or less clips nothing (skip 0, scale 1). A NaN or infinite norm sets skip (the optimiser
// kernels then change nothing), scale 1 and StatusBadNorm.
extern "C" __global__ void clip_finish(const double *sums, int n, double *st, int *status) {
  gdcEnter();
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double maxNorm = st[3];
  double s = 0;
  for (int i = 0; i < n; i++) s += sums[i];
  double norm = sqrt(s);
  st[1] = norm;
  st[0] = 0;
  st[2] = 1;
  if (!(maxNorm > 0)) return;
  if (norm != norm || norm - norm != 0) {
    st[0] = 1;
    atomicOr(status, StatusBadNorm);
    return;
  }
  st[2] = maxNorm / (norm + 1e-6);
}

// scale_by: g = g·scale (in the accumulator type, rounded once) when scale = st[2] < 1.
template <typename T> __device__ __forceinline__ void scaleBy(T *__restrict__ g, const double *st, long long n) {
  typedef typename Acc<T>::type A;
  double s = st[2];
  if (!(s < 1)) return;
  A sc = (A)s;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    T o;
    fromAcc(toAcc(g[i]) * sc, o);
    g[i] = o;
  }
}
extern "C" __global__ void __launch_bounds__(256) scale_by_f32(float *g, const double *st, long long n) {
  gdcEnter(); scaleBy<float>(g, st, n); }
extern "C" __global__ void __launch_bounds__(256) scale_by_f64(double *g, const double *st, long long n) {
  gdcEnter(); scaleBy<double>(g, st, n); }
extern "C" __global__ void __launch_bounds__(256) scale_by_bf16(__nv_bfloat16 *g, const double *st, long long n) {
  gdcEnter();
  scaleBy<__nv_bfloat16>(g, st, n);
}
