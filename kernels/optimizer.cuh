// optimizer.cuh: the optimiser updates SGD and Adam, in place (CPU twin: optimizer.go; launcher:
// optimizer_cuda.go). Part of gomoe.cu's translation unit (included after gomoe.cuh, with namespace
// gomoe in scope); built into gomoe.fatbin by build_fatbin.sh.

// ---- optimiser updates (in place, one thread per element) --------------------------------
// Each operation is rounded separately in the parameter's type (no FMA), exactly as the CPU
// twins in optimizer.go do, so both give the same bits.
//   sgd:  p = p − lr·(g + wd·p)
//   adam: m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g·g
//         p = p − lr·((m/c1) / (sqrt(v/c2) + eps) + wd·p)    c1 = 1−b1^t, c2 = 1−b2^t (host)
//         where g·g overflows, v takes ((1−b2)·g)·g; where v/c2 overflows, sqrt(v)/sqrt(c2)
//         (adamV, adamDen: one huge gradient no longer freezes the weight)
// (wd > 0 is decoupled weight decay, AdamW.) The scalars are rounded to the type first. With sc
// not null the kernels take them from device memory instead of their arguments (a step
// replayed from a CUDA graph, whose arguments are fixed): sgd sc = {lr, wd, skip}, adam sc =
// {lr, b1, b2, eps, c1, c2, wd, skip}; a skip other than 0 (written by clip_finish for a
// gradient norm that is NaN or infinite) leaves the weights and the moments as they are.

// fromSc replaces the scalar arguments by sc's values when sc is not null, and reports whether
// the step is skipped.
__device__ __forceinline__ bool fromSc(const double *sc, double &lr, double &wd) {
  if (sc) lr = sc[0], wd = sc[1];
  return sc && sc[2] != 0;
}
__device__ __forceinline__ bool fromSc(const double *sc, double &lr, double &b1, double &b2, double &eps, double &c1,
                                       double &c2, double &wd) {
  if (sc) lr = sc[0], b1 = sc[1], b2 = sc[2], eps = sc[3], c1 = sc[4], c2 = sc[5], wd = sc[6];
  return sc && sc[7] != 0;
}

__device__ __forceinline__ float subRN(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double subRN(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float divRN(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double divRN(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float sqrtRN(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double sqrtRN(double a) { return __dsqrt_rn(a); }

template <typename T>
__device__ __forceinline__ void sgdElems(T *__restrict__ p, const T *__restrict__ g, double lr_, double wd_, long long n) {
  T lr = (T)lr_, wd = (T)wd_;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    T x = p[i];
    p[i] = subRN(x, mulRN(lr, addRN(g[i], mulRN(wd, x))));
  }
}
// adamV is v's update b2·v + (1−b2)·g·g, with ((1−b2)·g)·g where g·g overflows.
template <typename T> __device__ __forceinline__ T adamV(T b2, T nb2, T v, T g) {
  T gg = mulRN(g, g);
  return addRN(mulRN(b2, v), isinf(gg) ? mulRN(mulRN(nb2, g), g) : mulRN(nb2, gg));
}
// adamDen is sqrt(v/c2), or sqrt(v)/sqrt(c2) where v/c2 overflows.
template <typename T> __device__ __forceinline__ T adamDen(T v, T c2) {
  T d = sqrtRN(divRN(v, c2));
  return isinf(d) ? divRN(sqrtRN(v), sqrtRN(c2)) : d;
}

template <typename T>
__device__ __forceinline__ void adamElems(T *__restrict__ p, const T *__restrict__ g, T *__restrict__ m, T *__restrict__ v,
                                          double lr_, double b1_, double b2_, double eps_, double c1_, double c2_,
                                          double wd_, long long n) {
  T lr = (T)lr_, b1 = (T)b1_, b2 = (T)b2_, eps = (T)eps_, c1 = (T)c1_, c2 = (T)c2_, wd = (T)wd_;
  T nb1 = (T)(1 - b1_), nb2 = (T)(1 - b2_);
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    T gi = g[i];
    T mi = addRN(mulRN(b1, m[i]), mulRN(nb1, gi));
    T vi = adamV(b2, nb2, v[i], gi);
    m[i] = mi;
    v[i] = vi;
    T x = p[i];
    T step = divRN(divRN(mi, c1), addRN(adamDen(vi, c2), eps));
    p[i] = subRN(x, mulRN(lr, addRN(step, mulRN(wd, x))));
  }
}
extern "C" __global__ void __launch_bounds__(256)
sgd_f32(float *p, const float *g, double lr, double wd, long long n, const double *sc) {
  gdcEnter();
  if (fromSc(sc, lr, wd)) return;
  sgdElems<float>(p, g, lr, wd, n);
}
extern "C" __global__ void __launch_bounds__(256)
sgd_f64(double *p, const double *g, double lr, double wd, long long n, const double *sc) {
  gdcEnter();
  if (fromSc(sc, lr, wd)) return;
  sgdElems<double>(p, g, lr, wd, n);
}
extern "C" __global__ void __launch_bounds__(256)
adam_f32(float *p, const float *g, float *m, float *v, double lr, double b1, double b2, double eps, double c1, double c2,
         double wd, long long n, const double *sc) {
  gdcEnter();
  if (fromSc(sc, lr, b1, b2, eps, c1, c2, wd)) return;
  adamElems<float>(p, g, m, v, lr, b1, b2, eps, c1, c2, wd, n);
}
extern "C" __global__ void __launch_bounds__(256)
adam_f64(double *p, const double *g, double *m, double *v, double lr, double b1, double b2, double eps, double c1,
         double c2, double wd, long long n, const double *sc) {
  gdcEnter();
  if (fromSc(sc, lr, b1, b2, eps, c1, c2, wd)) return;
  adamElems<double>(p, g, m, v, lr, b1, b2, eps, c1, c2, wd, n);
}

// ---- optimiser updates of bfloat16 weights with float32 master weights -------------------
// The float32 master copy w32 is updated exactly as a float32 weight would be (the gradient
// widened from bfloat16), then the bfloat16 weight is the master rounded to nearest even.

extern "C" __global__ void __launch_bounds__(256)
sgd_bf16(__nv_bfloat16 *p, const __nv_bfloat16 *g, float *w32, double lr_, double wd_, long long n, const double *sc) {
  gdcEnter();
  if (fromSc(sc, lr_, wd_)) return;
  float lr = (float)lr_, wd = (float)wd_;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    float x = w32[i];
    x = subRN(x, mulRN(lr, addRN(__bfloat162float(g[i]), mulRN(wd, x))));
    w32[i] = x;
    p[i] = __float2bfloat16_rn(x);
  }
}
extern "C" __global__ void __launch_bounds__(256)
adam_bf16(__nv_bfloat16 *p, const __nv_bfloat16 *g, float *w32, float *m, float *v, double lr_, double b1_, double b2_,
          double eps_, double c1_, double c2_, double wd_, long long n, const double *sc) {
  gdcEnter();
  if (fromSc(sc, lr_, b1_, b2_, eps_, c1_, c2_, wd_)) return;
  float lr = (float)lr_, b1 = (float)b1_, b2 = (float)b2_, eps = (float)eps_, c1 = (float)c1_, c2 = (float)c2_,
        wd = (float)wd_;
  float nb1 = (float)(1 - b1_), nb2 = (float)(1 - b2_);
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    float gi = __bfloat162float(g[i]);
    float mi = addRN(mulRN(b1, m[i]), mulRN(nb1, gi));
    float vi = adamV(b2, nb2, v[i], gi);
    m[i] = mi;
    v[i] = vi;
    float x = w32[i];
    float step = divRN(divRN(mi, c1), addRN(adamDen(vi, c2), eps));
    x = subRN(x, mulRN(lr, addRN(step, mulRN(wd, x))));
    w32[i] = x;
    p[i] = __float2bfloat16_rn(x);
  }
}
