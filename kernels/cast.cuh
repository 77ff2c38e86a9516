// cast.cuh: dtype conversions (CPU twin: cast.go; launcher: cast_cuda.go). Part of gomoe.cu's
// translation unit (included after gomoe.cuh, with namespace gomoe in scope); built into
// gomoe.fatbin by build_fatbin.sh.

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
