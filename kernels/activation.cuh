// activation.cuh: the element-wise activations SwiGLU, GELU and sigmoid, forward and backward (CPU
// twin: activation.go; launcher: activation_cuda.go). Part of gomoe.cu's translation unit (included
// after gomoe.cuh, with namespace gomoe in scope); built into gomoe.fatbin by build_fatbin.sh.
//
// Element types: float (f32), double (f64) and __nv_bfloat16 (bf16, computed in float). The
// transcendental functions are CUDA's (expf, tanhf, ...), so results match the CPU within a few
// ulps, not bit for bit.

// ---- activations -------------------------------------------------------------------------

enum { PwSwiGLU = 1, PwGELU = 2, PwSigmoid = 3 };

// sigm is 1/(1+e^-x) for x >= 0 and e^x/(1+e^x) below (neither overflows), written with one
// exponential and one division of e = e^-|x| and no branch: a warp whose lanes straddle 0
// would otherwise run both sides.
__device__ __forceinline__ float sigm(float x) {
  float e = expf(-fabsf(x));
  return (x >= 0.f ? 1.f : e) / (1.f + e);
}
__device__ __forceinline__ double sigm(double x) {
  double e = exp(-fabs(x));
  return (x >= 0. ? 1. : e) / (1. + e);
}
__device__ __forceinline__ float tanhA(float x) { return tanhf(x); }
__device__ __forceinline__ double tanhA(double x) { return tanh(x); }

// geluC is sqrt(2/pi); geluA the cubic coefficient of the tanh approximation.
#define GELU_C 0.7978845608028654
#define GELU_A 0.044715

// pw_fwd: SwiGLU out = silu(a)·b; GELU out = gelu(a); Sigmoid out = sigmoid(a).
template <typename A> __device__ __forceinline__ A pwFwdOne(int kind, A x, A y) {
  if (kind == PwSwiGLU) return x * sigm(x) * y;
  if (kind == PwGELU) {
    A in = (A)GELU_C * (x + (A)GELU_A * x * x * x);
    return (A)0.5 * x * ((A)1 + tanhA(in));
  }
  return sigm(x);
}

template <typename T>
__device__ __forceinline__ void pwFwd(int kind, const T *__restrict__ a, const T *__restrict__ b,
                                      T *__restrict__ out, long long n) {
  typedef typename Acc<T>::type A;
  bool two = kind == PwSwiGLU;
  ewise<T>(n, aligned16(a, two ? b : nullptr, out), [&](auto w, long long i) {
    constexpr int V = decltype(w)::value;
    A x[V], y[V];
    loadAcc<V>(a, i, x);
    if (two) loadAcc<V>(b, i, y);
#pragma unroll
    for (int j = 0; j < V; j++) x[j] = pwFwdOne<A>(kind, x[j], two ? y[j] : (A)0);
    storeAcc<V>(out, i, x);
  });
}

// pw_bwd: the gradient of input `which` (0: a, 1: b) from dy, the inputs a, b and the output y.
//   SwiGLU: da = dy·b·σ(a)·(1 + a·(1−σ(a))), db = dy·a·σ(a)
//   GELU:   da = dy·(0.5·(1+th) + 0.5·a·(1−th²)·c·(1 + 3·0.044715·a²))
//   Sigmoid: da = dy·y·(1−y)
// x is a (y for Sigmoid), v is b (SwiGLU's da only).
template <typename A> __device__ __forceinline__ A pwBwdOne(int kind, int which, A g, A x, A v) {
  if (kind == PwSwiGLU) {
    A s = sigm(x);
    if (which == 0) return g * v * s * ((A)1 + x * ((A)1 - s));
    return g * x * s;
  }
  if (kind == PwGELU) {
    A th = tanhA((A)GELU_C * (x + (A)GELU_A * x * x * x));
    A d = (A)0.5 * ((A)1 + th), s = (A)1 - th * th;
    // Where tanh has saturated (s = 0), (3·0.044715·x)·x may overflow (|x| > 5e19 in float): 0·inf = NaN.
    if (s != (A)0) d += (A)0.5 * x * s * (A)GELU_C * ((A)1 + (A)(3 * GELU_A) * x * x);
    return g * d;
  }
  return g * x * ((A)1 - x);
}

template <typename T>
__device__ __forceinline__ void pwBwd(int kind, int which, const T *__restrict__ a, const T *__restrict__ b,
                                      const T *__restrict__ y, const T *__restrict__ dy, T *__restrict__ out,
                                      long long n) {
  typedef typename Acc<T>::type A;
  const T *xs = kind == PwSigmoid ? y : a;                         // the input the formula reads
  const T *vs = kind == PwSwiGLU && which == 0 ? b : nullptr;     // SwiGLU's da also reads b
  ewise<T>(n, aligned16(xs, vs, dy, out), [&](auto w, long long i) {
    constexpr int V = decltype(w)::value;
    A g[V], x[V], v[V];
    loadAcc<V>(dy, i, g);
    loadAcc<V>(xs, i, x);
    if (vs != nullptr) loadAcc<V>(vs, i, v);
#pragma unroll
    for (int j = 0; j < V; j++) g[j] = pwBwdOne<A>(kind, which, g[j], x[j], vs != nullptr ? v[j] : (A)0);
    storeAcc<V>(out, i, g);
  });
}

#define PWOPS(SUF, T)                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      pw_fwd_##SUF(int kind, const T *a, const T *b, T *o, long long n) { gdcEnter();              \
    pwFwd<T>(kind, a, b, o, n);                                                                    \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256) pw_bwd_##SUF(                                  \
      int kind, int which, const T *a, const T *b, const T *y, const T *dy, T *o, long long n) { gdcEnter(); \
    pwBwd<T>(kind, which, a, b, y, dy, o, n);                                                      \
  }
PWOPS(f32, float)
PWOPS(f64, double)
PWOPS(bf16, __nv_bfloat16)
#undef PWOPS

// ---- SwiGLU on packed halves ---------------------------------------------------------------
// z [rows, 2f] holds a row's gate a = z[r, 0:f] and up b = z[r, f:2f] side by side (the output of
// one grouped matmul with the two projections packed as one [H, 2f] weight). swiglu_packed_fwd
// writes out[r, c] = silu(a)·b; swiglu_packed_bwd writes both halves of dz from dy in one pass.
// The arithmetic per element is pwFwdOne/pwBwdOne's, the two-input kernels'. The vector width
// needs f to be a multiple of it (rows stay whole and aligned).

// packedRow is i / f, in 32-bit arithmetic where every index fits (narrow; a 64-bit division
// costs several times the instructions).
__device__ __forceinline__ long long packedRow(long long i, int f, bool narrow) {
  return narrow ? (long long)((unsigned)i / (unsigned)f) : i / f;
}

template <typename T>
__device__ __forceinline__ void swigluPackedFwd(const T *__restrict__ z, T *__restrict__ out, long long rows, int f) {
  typedef typename Acc<T>::type A;
  constexpr int W = 16 / sizeof(T);
  bool narrow = rows * f <= 0xffffffffLL;
  ewise<T>(rows * f, aligned16(z, out) && f % W == 0, [&](auto w, long long i) {
    constexpr int V = decltype(w)::value;
    long long r = packedRow(i, f, narrow), za = i + r * f; // z offset of a: r·2f + (i − r·f)
    A x[V], y[V];
    loadAcc<V>(z, za, x);
    loadAcc<V>(z, za + f, y);
#pragma unroll
    for (int j = 0; j < V; j++) x[j] = pwFwdOne<A>(PwSwiGLU, x[j], y[j]);
    storeAcc<V>(out, i, x);
  });
}

template <typename T>
__device__ __forceinline__ void swigluPackedBwd(const T *__restrict__ z, const T *__restrict__ dy, T *__restrict__ dz,
                                                long long rows, int f) {
  typedef typename Acc<T>::type A;
  constexpr int W = 16 / sizeof(T);
  bool narrow = rows * f <= 0xffffffffLL;
  ewise<T>(rows * f, aligned16(z, dy, dz) && f % W == 0, [&](auto w, long long i) {
    constexpr int V = decltype(w)::value;
    long long r = packedRow(i, f, narrow), za = i + r * f;
    A g[V], x[V], y[V], da[V], db[V];
    loadAcc<V>(dy, i, g);
    loadAcc<V>(z, za, x);
    loadAcc<V>(z, za + f, y);
#pragma unroll
    for (int j = 0; j < V; j++) {
      da[j] = pwBwdOne<A>(PwSwiGLU, 0, g[j], x[j], y[j]);
      db[j] = pwBwdOne<A>(PwSwiGLU, 1, g[j], x[j], (A)0);
    }
    storeAcc<V>(dz, za, da);
    storeAcc<V>(dz, za + f, db);
  });
}

#define SWIGLU_PACKED(SUF, T)                                                                      \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      swiglu_packed_fwd_##SUF(const T *z, T *o, long long rows, int f) { gdcEnter();               \
    swigluPackedFwd<T>(z, o, rows, f);                                                             \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      swiglu_packed_bwd_##SUF(const T *z, const T *dy, T *dz, long long rows, int f) { gdcEnter(); \
    swigluPackedBwd<T>(z, dy, dz, rows, f);                                                        \
  }
SWIGLU_PACKED(f32, float)
SWIGLU_PACKED(f64, double)
SWIGLU_PACKED(bf16, __nv_bfloat16)
#undef SWIGLU_PACKED
