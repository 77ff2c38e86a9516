// binary.cuh: element-wise arithmetic of the device engine: add and the binary ops with an optional
// scalar side (launcher: binary_cuda.go; the CPU side is Gorgonia's arithmetic, see
// op/pointwise.go). Part of gomoe.cu's translation unit (included after gomoe.cuh, with namespace
// gomoe in scope); built into gomoe.fatbin by build_fatbin.sh.
//
// Element types: float (f32), double (f64) and __nv_bfloat16 (bf16, computed in float). The
// arithmetic ops (add, sub, mul, div) are correctly rounded and match the CPU bit for bit.

// ---------------------------------------------------------------------------------------------
// Element-wise helpers for the device engine: out = a + b (rounded once in the data type;
// bfloat16 adds in float32 and rounds once).

template <typename T>
__device__ __forceinline__ void addElems(const T *__restrict__ a, const T *__restrict__ b,
                                         T *__restrict__ out, long long n) {
  typedef typename Acc<T>::type A;
  ewise<T>(n, aligned16(a, b, out), [&](auto w, long long i) {
    constexpr int V = decltype(w)::value;
    A x[V], y[V];
    loadAcc<V>(a, i, x);
    loadAcc<V>(b, i, y);
#pragma unroll
    for (int j = 0; j < V; j++) x[j] = addRN(x[j], y[j]);
    storeAcc<V>(out, i, x);
  });
}
extern "C" __global__ void __launch_bounds__(256) add_f32(const float *a, const float *b, float *o, long long n) {
  gdcEnter();
  addElems<float>(a, b, o, n);
}
extern "C" __global__ void __launch_bounds__(256) add_f64(const double *a, const double *b, double *o, long long n) {
  gdcEnter();
  addElems<double>(a, b, o, n);
}
extern "C" __global__ void __launch_bounds__(256)
add_bf16(const __nv_bfloat16 *a, const __nv_bfloat16 *b, __nv_bfloat16 *o, long long n) {
  gdcEnter();
  addElems<__nv_bfloat16>(a, b, o, n);
}

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
  ewise<T>(n, aligned16(mode == 2 ? nullptr : a, mode == 1 ? nullptr : b, out), [&](auto w, long long i) {
    constexpr int V = decltype(w)::value;
    A x[V], y[V];
    if (mode == 2) {
#pragma unroll
      for (int j = 0; j < V; j++) x[j] = sc;
    } else {
      loadAcc<V>(a, i, x);
    }
    if (mode == 1) {
#pragma unroll
      for (int j = 0; j < V; j++) y[j] = sc;
    } else {
      loadAcc<V>(b, i, y);
    }
#pragma unroll
    for (int j = 0; j < V; j++) x[j] = binApply<A>(op, x[j], y[j]);
    storeAcc<V>(out, i, x);
  });
}

#define BINOP(SUF, T)                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      binop_##SUF(int op, int mode, const T *a, const T *b, double s, T *o, long long n) { gdcEnter(); \
    binElems<T>(op, mode, a, b, s, o, n);                                                          \
  }
BINOP(f32, float)
BINOP(f64, double)
BINOP(bf16, __nv_bfloat16)
#undef BINOP
