// Kernels for training on the device (included by gomoe.cu): element-wise arithmetic for the
// device engine, the activations and row ops of package op (SwiGLU, GELU, sigmoid, row softmax,
// row normalisation), top-k routing with groups and bias, the top-k gather, and the optimiser
// updates (SGD, Adam). Each has a CPU twin of the same name in package kernels or op (see
// train.go and op/pointwise.go); the GPU tests compare the two.
//
// Element types: float (f32), double (f64) and __nv_bfloat16 (bf16, computed in float). The
// transcendental functions are CUDA's (expf, tanhf, ...), so results match the CPU within a
// few ulps, not bit for bit; the arithmetic ops (add, sub, mul, div) are correctly rounded and
// match bit for bit.

// ---- element-wise binary ops: out = a (op) b, with either side a scalar ---------------------

enum { BinAdd = 0, BinSub = 1, BinMul = 2, BinDiv = 3 };

template <typename A> __device__ __forceinline__ A binApply(int op, A x, A y) {
  switch (op) {
  case BinAdd: return x + y;
  case BinSub: return x - y;
  case BinMul: return x * y;
  default: return x / y;
  }
}

// mode: 0 both tensors, 1 b is the scalar s, 2 a is the scalar s.
template <typename T>
__device__ __forceinline__ void binElems(int op, int mode, const T *__restrict__ a, const T *__restrict__ b,
                                         double s, T *__restrict__ out, long long n) {
  typedef typename Acc<T>::type A;
  A sc = (A)s;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    A x = mode == 2 ? sc : toAcc(a[i]);
    A y = mode == 1 ? sc : toAcc(b[i]);
    T o;
    fromAcc(binApply<A>(op, x, y), o);
    out[i] = o;
  }
}

#define BINOP(SUF, T)                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      binop_##SUF(int op, int mode, const T *a, const T *b, double s, T *o, long long n) {         \
    binElems<T>(op, mode, a, b, s, o, n);                                                          \
  }
BINOP(f32, float)
BINOP(f64, double)
BINOP(bf16, __nv_bfloat16)
#undef BINOP

// ---- activations -------------------------------------------------------------------------

enum { PwSwiGLU = 1, PwGELU = 2, PwSigmoid = 3 };

__device__ __forceinline__ float sigm(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  float e = expf(x);
  return e / (1.f + e);
}
__device__ __forceinline__ double sigm(double x) {
  if (x >= 0.) return 1. / (1. + exp(-x));
  double e = exp(x);
  return e / (1. + e);
}
__device__ __forceinline__ float tanhA(float x) { return tanhf(x); }
__device__ __forceinline__ double tanhA(double x) { return tanh(x); }

// geluC is sqrt(2/pi); geluA the cubic coefficient of the tanh approximation.
#define GELU_C 0.7978845608028654
#define GELU_A 0.044715

// pw_fwd: SwiGLU out = silu(a)·b; GELU out = gelu(a); Sigmoid out = sigmoid(a).
template <typename T>
__device__ __forceinline__ void pwFwd(int kind, const T *__restrict__ a, const T *__restrict__ b,
                                      T *__restrict__ out, long long n) {
  typedef typename Acc<T>::type A;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    A x = toAcc(a[i]), r;
    if (kind == PwSwiGLU) {
      r = x * sigm(x) * toAcc(b[i]);
    } else if (kind == PwGELU) {
      A in = (A)GELU_C * (x + (A)GELU_A * x * x * x);
      r = (A)0.5 * x * ((A)1 + tanhA(in));
    } else {
      r = sigm(x);
    }
    T o;
    fromAcc(r, o);
    out[i] = o;
  }
}

// pw_bwd: the gradient of input `which` (0: a, 1: b) from dy, the inputs a, b and the output y.
//   SwiGLU: da = dy·b·σ(a)·(1 + a·(1−σ(a))), db = dy·a·σ(a)
//   GELU:   da = dy·(0.5·(1+th) + 0.5·a·(1−th²)·c·(1 + 3·0.044715·a²))
//   Sigmoid: da = dy·y·(1−y)
template <typename T>
__device__ __forceinline__ void pwBwd(int kind, int which, const T *__restrict__ a, const T *__restrict__ b,
                                      const T *__restrict__ y, const T *__restrict__ dy, T *__restrict__ out,
                                      long long n) {
  typedef typename Acc<T>::type A;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    A g = toAcc(dy[i]), r;
    if (kind == PwSwiGLU) {
      A x = toAcc(a[i]), s = sigm(x);
      if (which == 0) {
        r = g * toAcc(b[i]) * s * ((A)1 + x * ((A)1 - s));
      } else {
        r = g * x * s;
      }
    } else if (kind == PwGELU) {
      A x = toAcc(a[i]);
      A th = tanhA((A)GELU_C * (x + (A)GELU_A * x * x * x));
      r = g * ((A)0.5 * ((A)1 + th) + (A)0.5 * x * ((A)1 - th * th) * (A)GELU_C * ((A)1 + (A)(3 * GELU_A) * x * x));
    } else {
      A v = toAcc(y[i]);
      r = g * v * ((A)1 - v);
    }
    T o;
    fromAcc(r, o);
    out[i] = o;
  }
}

#define PWOPS(SUF, T)                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      pw_fwd_##SUF(int kind, const T *a, const T *b, T *o, long long n) {                          \
    pwFwd<T>(kind, a, b, o, n);                                                                    \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256) pw_bwd_##SUF(                                  \
      int kind, int which, const T *a, const T *b, const T *y, const T *dy, T *o, long long n) {   \
    pwBwd<T>(kind, which, a, b, y, dy, o, n);                                                      \
  }
PWOPS(f32, float)
PWOPS(f64, double)
PWOPS(bf16, __nv_bfloat16)
#undef PWOPS

// ---- row ops: one warp per row of a [rows, cols] matrix ----------------------------------

enum { RowSoftmax = 1, RowNormalize = 2 };

template <typename A> __device__ __forceinline__ A warpSumA(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename A> __device__ __forceinline__ A warpMaxA(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float expA(float x) { return expf(x); }
__device__ __forceinline__ double expA(double x) { return exp(x); }

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
      row_fwd_##SUF(int kind, const T *x, T *y, long long rows, int cols) {                        \
    rowFwd<T>(kind, x, y, rows, cols);                                                             \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      row_bwd_##SUF(int kind, const T *x, const T *y, const T *dy, T *dx, long long rows, int cols) { \
    rowBwd<T>(kind, x, y, dy, dx, rows, cols);                                                     \
  }
ROWOPS(f32, float)
ROWOPS(f64, double)
#undef ROWOPS

// ---- top-k routing -----------------------------------------------------------------------
// One thread per token, with the CPU's rules (op/topk.go): selection score = score + bias in
// double; with groups, a group's score is the sum (in descending order) of its top `per`
// selection scores, the `kept` best groups win (ties to the lower group), then the K best
// experts of the kept groups in descending order (ties to the lower id). A NaN selection or
// group score sets StatusNaNScore in the status word and ranks lowest. At most 1024 experts
// and 64 groups.

#define TOPK_MAX_E 1024
#define StatusNaNScore 8

// better reports whether (v, i) ranks before (w, j): greater value first, ties to the lower
// index; NaN ranks after everything.
__device__ __forceinline__ bool better(double v, int i, double w, int j) {
  bool vn = v != v, wn = w != w;
  if (vn || wn) return !vn && wn ? true : (vn && wn ? i < j : false);
  return v > w || (v == w && i < j);
}

template <typename S>
__device__ __forceinline__ void topkRow(const S *__restrict__ scores, const S *__restrict__ bias, int *__restrict__ ids,
                                        long long T, int E, int K, int groups, int kept, int per, int *status) {
  long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= T) return;
  const S *row = scores + t * E;
  unsigned allowed[TOPK_MAX_E / 32];
  unsigned taken[TOPK_MAX_E / 32];
  int words = (E + 31) / 32;
  for (int w = 0; w < words; w++) allowed[w] = 0xffffffffu, taken[w] = 0;
  auto sel = [&](int e) -> double { return (double)row[e] + (bias ? (double)bias[e] : 0.0); };
  bool nan = false;
  if (groups > 1) {
    int gsize = E / groups;
    double gscore[64];
    for (int g = 0; g < groups; g++) {
      // the group's top `per` values, in descending order, summed in that order
      double s = 0;
      unsigned used[TOPK_MAX_E / 32];
      for (int w = 0; w < words; w++) used[w] = 0;
      int n = per < gsize ? per : gsize;
      for (int k = 0; k < n; k++) {
        int best = -1;
        double bv = 0;
        for (int e = g * gsize; e < (g + 1) * gsize; e++) {
          if (used[e >> 5] >> (e & 31) & 1) continue;
          double v = sel(e);
          if (best < 0 || better(v, e, bv, best)) best = e, bv = v;
        }
        used[best >> 5] |= 1u << (best & 31);
        s += bv;
      }
      gscore[g] = s;
      if (s != s) nan = true;
    }
    for (int w = 0; w < words; w++) allowed[w] = 0;
    unsigned long long gtaken = 0;
    for (int k = 0; k < kept; k++) {
      int best = -1;
      double bv = 0;
      for (int g = 0; g < groups; g++) {
        if (gtaken >> g & 1) continue;
        if (best < 0 || better(gscore[g], g, bv, best)) best = g, bv = gscore[g];
      }
      gtaken |= 1ull << best;
      for (int e = best * gsize; e < (best + 1) * gsize; e++) allowed[e >> 5] |= 1u << (e & 31);
    }
  }
  for (int k = 0; k < K; k++) {
    int best = -1;
    double bv = 0;
    for (int e = 0; e < E; e++) {
      unsigned bit = 1u << (e & 31);
      if (!(allowed[e >> 5] & bit) || (taken[e >> 5] & bit)) continue;
      double v = sel(e);
      if (v != v) nan = true;
      if (best < 0 || better(v, e, bv, best)) best = e, bv = v;
    }
    taken[best >> 5] |= 1u << (best & 31);
    ids[t * K + k] = best;
  }
  if (nan) atomicOr(status, StatusNaNScore);
}

extern "C" __global__ void __launch_bounds__(128)
topk_f32(const float *s, const float *bias, int *ids, long long T, int E, int K, int groups, int kept, int per, int *status) {
  topkRow<float>(s, bias, ids, T, E, K, groups, kept, per, status);
}
extern "C" __global__ void __launch_bounds__(128)
topk_f64(const double *s, const double *bias, int *ids, long long T, int E, int K, int groups, int kept, int per, int *status) {
  topkRow<double>(s, bias, ids, T, E, K, groups, kept, per, status);
}

// gather_topk: out[t,k] = s[t, ids[t,k]] (0 for a negative id). gather_topk_bwd: ds [T,E] =
// 0 except ds[t, ids[t,k]] += g[t,k] (one thread per row, so repeated ids add in k order). An
// id >= E is treated as -1 and sets StatusBadID (1) in the status word: nothing outside the
// buffers is read or written.
template <typename T>
__device__ __forceinline__ void gatherTopK(const T *__restrict__ s, const int *__restrict__ ids, T *__restrict__ out,
                                           long long TK, int E, int K, int *status) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < TK;
       i += (long long)gridDim.x * blockDim.x) {
    int e = ids[i];
    if (e >= E) {
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
    if (e >= E) {
      atomicOr(status, 1);
      continue;
    }
    if (e >= 0) row[e] += g[t * K + k];
  }
}
extern "C" __global__ void __launch_bounds__(256)
gather_topk_f32(const float *s, const int *ids, float *o, long long TK, int E, int K, int *st) { gatherTopK<float>(s, ids, o, TK, E, K, st); }
extern "C" __global__ void __launch_bounds__(256)
gather_topk_f64(const double *s, const int *ids, double *o, long long TK, int E, int K, int *st) { gatherTopK<double>(s, ids, o, TK, E, K, st); }
extern "C" __global__ void __launch_bounds__(256)
gather_topk_bwd_f32(const float *g, const int *ids, float *ds, long long T, int E, int K, int *st) { gatherTopKBwd<float>(g, ids, ds, T, E, K, st); }
extern "C" __global__ void __launch_bounds__(256)
gather_topk_bwd_f64(const double *g, const int *ids, double *ds, long long T, int E, int K, int *st) { gatherTopKBwd<double>(g, ids, ds, T, E, K, st); }

// ---- optimiser updates (in place, one thread per element) --------------------------------
// Each operation is rounded separately in the parameter's type (no FMA), exactly as the CPU
// twins in train.go do, so both give the same bits.
//   sgd:  p = p − lr·(g + wd·p)
//   adam: m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g·g
//         p = p − lr·((m/c1) / (sqrt(v/c2) + eps) + wd·p)    c1 = 1−b1^t, c2 = 1−b2^t (host)
// (wd > 0 is decoupled weight decay, AdamW.) The scalars are rounded to the type first.

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
    T vi = addRN(mulRN(b2, v[i]), mulRN(nb2, mulRN(gi, gi)));
    m[i] = mi;
    v[i] = vi;
    T x = p[i];
    T step = divRN(divRN(mi, c1), addRN(sqrtRN(divRN(vi, c2)), eps));
    p[i] = subRN(x, mulRN(lr, addRN(step, mulRN(wd, x))));
  }
}
extern "C" __global__ void __launch_bounds__(256) sgd_f32(float *p, const float *g, double lr, double wd, long long n) {
  sgdElems<float>(p, g, lr, wd, n);
}
extern "C" __global__ void __launch_bounds__(256) sgd_f64(double *p, const double *g, double lr, double wd, long long n) {
  sgdElems<double>(p, g, lr, wd, n);
}
extern "C" __global__ void __launch_bounds__(256)
adam_f32(float *p, const float *g, float *m, float *v, double lr, double b1, double b2, double eps, double c1, double c2,
         double wd, long long n) {
  adamElems<float>(p, g, m, v, lr, b1, b2, eps, c1, c2, wd, n);
}
extern "C" __global__ void __launch_bounds__(256)
adam_f64(double *p, const double *g, double *m, double *v, double lr, double b1, double b2, double eps, double c1,
         double c2, double wd, long long n) {
  adamElems<double>(p, g, m, v, lr, b1, b2, eps, c1, c2, wd, n);
}

// ---- dtype conversion: out[i] = (To)in[i], rounded to nearest even -----------------------

template <typename S, typename D>
__device__ __forceinline__ void convertElems(const S *__restrict__ in, D *__restrict__ out, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    D o;
    fromAcc((typename Acc<D>::type)toAcc(in[i]), o);
    out[i] = o;
  }
}
#define CONVERT(A, S, B, D)                                                                        \
  extern "C" __global__ void __launch_bounds__(256) convert_##A##_##B(const S *in, D *out, long long n) { \
    convertElems<S, D>(in, out, n);                                                                \
  }
CONVERT(f32, float, bf16, __nv_bfloat16)
CONVERT(bf16, __nv_bfloat16, f32, float)
CONVERT(f32, float, f64, double)
CONVERT(f64, double, f32, float)
#undef CONVERT

// ---- optimiser updates of bfloat16 weights with float32 master weights -------------------
// The float32 master copy w32 is updated exactly as a float32 weight would be (the gradient
// widened from bfloat16), then the bfloat16 weight is the master rounded to nearest even.

extern "C" __global__ void __launch_bounds__(256)
sgd_bf16(__nv_bfloat16 *p, const __nv_bfloat16 *g, float *w32, double lr_, double wd_, long long n) {
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
          double eps_, double c1_, double c2_, double wd_, long long n) {
  float lr = (float)lr_, b1 = (float)b1_, b2 = (float)b2_, eps = (float)eps_, c1 = (float)c1_, c2 = (float)c2_,
        wd = (float)wd_;
  float nb1 = (float)(1 - b1_), nb2 = (float)(1 - b2_);
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    float gi = __bfloat162float(g[i]);
    float mi = addRN(mulRN(b1, m[i]), mulRN(nb1, gi));
    float vi = addRN(mulRN(b2, v[i]), mulRN(nb2, mulRN(gi, gi)));
    m[i] = mi;
    v[i] = vi;
    float x = w32[i];
    float step = divRN(divRN(mi, c1), addRN(sqrtRN(divRN(vi, c2)), eps));
    x = subRN(x, mulRN(lr, addRN(step, mulRN(wd, x))));
    w32[i] = x;
    p[i] = __float2bfloat16_rn(x);
  }
}

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
      scale_rows_##SUF(const T *x, const P *s, T *y, long long rows, int cols) {                   \
    scaleRows<T, P>(x, s, y, rows, cols);                                                          \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      row_dot_##SUF(const T *a, const T *b, P *out, long long rows, int cols) {                    \
    rowDot<T, P>(a, b, out, rows, cols);                                                           \
  }
ROWSCALE(f32, float, float)
ROWSCALE(f64, double, double)
ROWSCALE(bf16, __nv_bfloat16, float)
#undef ROWSCALE
