// relu.cuh: ReLU and its gradient (CPU twin: relu.go; launcher: relu_cuda.go), one thread per
// element (grid-stride). Part of gomoe.cu's translation unit (included after gomoe.cuh, with
// namespace gomoe in scope); built into gomoe.fatbin by build_fatbin.sh.

template <typename T>
__device__ __forceinline__ void reluFwd(const T *__restrict__ x, T *__restrict__ y, long long n) {
  NN_GRID_STRIDE(i, n) {
    T v = x[i];
    y[i] = (v > (T)0 || v != v) ? v : (T)0;
  }
}

template <typename T>
__device__ __forceinline__ void reluBwd(const T *__restrict__ x, const T *__restrict__ dy, T *__restrict__ dx,
                                        long long n) {
  NN_GRID_STRIDE(i, n) { dx[i] = x[i] > (T)0 ? dy[i] : (T)0; }
}

#define RELUOPS(SUF, T)                                                                            \
  extern "C" __global__ void __launch_bounds__(256) relu_fwd_##SUF(const T *x, T *y, long long n) { gdcEnter(); \
    reluFwd<T>(x, y, n);                                                                           \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      relu_bwd_##SUF(const T *x, const T *dy, T *dx, long long n) { gdcEnter();                    \
    reluBwd<T>(x, dy, dx, n);                                                                      \
  }
RELUOPS(f32, float)
RELUOPS(f64, double)
#undef RELUOPS
