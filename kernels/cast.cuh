// cast.cuh: dtype conversions (CPU twin: cast.go; launcher: cast_cuda.go). Part of gomoe.cu's
// translation unit (included after gomoe.cuh, with namespace gomoe in scope); built into
// gomoe.fatbin by build_fatbin.sh.

// ---- dtype conversion: out[i] = (To)in[i], rounded to nearest even -----------------------

// 16 bytes of the wider type at a time where both pointers are 16-byte aligned.
template <typename S, typename D>
__device__ __forceinline__ void convertElems(const S *__restrict__ in, D *__restrict__ out, long long n) {
  constexpr int V = 16 / (sizeof(S) > sizeof(D) ? sizeof(S) : sizeof(D));
  ewiseN<V>(n, aligned16(in, out), [&](auto w, long long i) {
    constexpr int W = decltype(w)::value;
    typename Acc<S>::type x[W];
    typename Acc<D>::type y[W];
    loadAcc<W>(in, i, x);
#pragma unroll
    for (int j = 0; j < W; j++) y[j] = (typename Acc<D>::type)x[j];
    storeAcc<W>(out, i, y);
  });
}
#define CONVERT(A, S, B, D)                                                                        \
  extern "C" __global__ void __launch_bounds__(256) convert_##A##_##B(const S *in, D *out, long long n) { gdcEnter(); \
    convertElems<S, D>(in, out, n);                                                                \
  }
CONVERT(f32, float, bf16, __nv_bfloat16)
CONVERT(bf16, __nv_bfloat16, f32, float)
CONVERT(f32, float, f64, double)
CONVERT(f64, double, f32, float)
#undef CONVERT
