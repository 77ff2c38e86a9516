// embedding.cuh: the embedding lookup and its gradient (CPU twin: embedding.go; launcher:
// embedding_cuda.go), one thread per element (grid-stride). Part of gomoe.cu's translation
// unit (included after gomoe.cuh, with namespace gomoe in scope); built into gomoe.fatbin by
// build_fatbin.sh. The gradient sums in double in row order, like the CPU.

// embedFwd: out[i, c] = table[ids[i], c]; an id outside [0, V) gives a zero row and sets
// status bit 16 (StatusBadIndex).
template <typename T>
__device__ __forceinline__ void embedFwd(const T *__restrict__ table, const int *__restrict__ ids, T *__restrict__ out,
                                         long long n, int cols, int V, int *status) {
  NN_GRID_STRIDE(i, n) {
    long long r = i / cols;
    int c = (int)(i - r * cols), v = ids[r];
    if (v < 0 || v >= V) {
      out[i] = (T)0;
      if (c == 0) atomicOr(status, 16);
    } else {
      out[i] = table[(long long)v * cols + c];
    }
  }
}

// embedBwd: dtable[v, c] = Σ_{r: ids[r] = v} dy[r, c] (double, row order), one thread per
// element of the table.
template <typename T>
__device__ __forceinline__ void embedBwd(const T *__restrict__ dy, const int *__restrict__ ids, T *__restrict__ dtable,
                                         long long rows, int cols, int V) {
  NN_GRID_STRIDE(i, (long long)V * cols) {
    int v = (int)(i / cols), c = (int)(i - (long long)v * cols);
    double s = 0;
    for (long long r = 0; r < rows; r++)
      if (ids[r] == v) s += (double)dy[r * cols + c];
    dtable[i] = (T)s;
  }
}

#define EMBEDOPS(SUF, T)                                                                           \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      embed_fwd_##SUF(const T *table, const int *ids, T *o, long long n, int cols, int V, int *status) { gdcEnter(); \
    embedFwd<T>(table, ids, o, n, cols, V, status);                                                \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      embed_bwd_##SUF(const T *dy, const int *ids, T *dt, long long rows, int cols, int V) { gdcEnter(); \
    embedBwd<T>(dy, ids, dt, rows, cols, V);                                                       \
  }
EMBEDOPS(f32, float)
EMBEDOPS(f64, double)
#undef EMBEDOPS
