// bias.cuh: the bias add of the examples' models and its gradient, the column sum (CPU twin:
// bias.go; launcher: bias_cuda.go). Part of gomoe.cu's translation unit (included after
// gomoe.cuh, with namespace gomoe in scope); built into gomoe.fatbin by build_fatbin.sh.
//
// The bias add runs one thread per element (grid-stride); the column sum uses one thread per
// column and sums in double in row order, like the CPU, so it is deterministic.

template <typename T>
__device__ __forceinline__ void biasAdd(const T *__restrict__ x, const T *__restrict__ b, T *__restrict__ y,
                                        long long n, int cols) {
  NN_GRID_STRIDE(i, n) { y[i] = x[i] + b[i % cols]; }
}

// colSum: out[c] = sum over rows of x[r, c] (double, row order).
template <typename T>
__device__ __forceinline__ void colSum(const T *__restrict__ x, T *__restrict__ out, long long rows, int cols) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  double s = 0;
  for (long long r = 0; r < rows; r++) s += (double)x[r * cols + c];
  out[c] = (T)s;
}

#define BIASOPS(SUF, T)                                                                            \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      bias_add_##SUF(const T *x, const T *b, T *y, long long n, int cols) { gdcEnter();            \
    biasAdd<T>(x, b, y, n, cols);                                                                  \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256) col_sum_##SUF(const T *x, T *o, long long rows, int cols) { gdcEnter(); \
    colSum<T>(x, o, rows, cols);                                                                   \
  }
BIASOPS(f32, float)
BIASOPS(f64, double)
#undef BIASOPS
