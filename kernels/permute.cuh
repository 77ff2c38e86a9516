// permute.cuh: permute-dispatch forward and backward (CPU twin: permute.go; launcher:
// permute_cuda.go). Part of gomoe.cu's translation unit (included after gomoe.cuh, with namespace
// gomoe in scope); built into gomoe.fatbin by build_fatbin.sh.

// ---------------------------------------------------------------------------------------------
// Permute forward: a byte copy, so one kernel per vector width serves every dtype. Blocks
// [0, T) each read their token's row once (U vectors per thread in flight, the first ones
// before the token's rows of the plan, so both loads are in flight together) and write it to
// the token's K rows; blocks [T, T+ceil(R/zrows)) zero the rows with tokenOf < 0.

template <typename V, int U>
__device__ __forceinline__ void permuteFwd(const V *__restrict__ x, V *__restrict__ xp,
                                           const int *__restrict__ rowOf, const int *__restrict__ tokenOf,
                                           int T, int K, long long R, long long nvec, int zrows,
                                           int smode, int *status) {
  extern __shared__ int rows[];
  if (blockIdx.x >= (unsigned)T) {
    zeroRows<V>(xp, nvec, tokenOf, R, T, (long long)(blockIdx.x - T) * zrows, zrows, status);
    return;
  }
  long long t = blockIdx.x;
  const V *src = x + t * nvec;
  V v[U];
  loadPacks<V, U>(v, src, threadIdx.x, nvec, smode);
  for (int k = threadIdx.x; k < K; k += blockDim.x) rows[k] = planRow(rowOf, t * K + k, R, status);
  __syncthreads();
  long long step = (long long)blockDim.x * U;
  for (long long i0 = threadIdx.x; i0 < nvec; i0 += step) {
    if (i0 != threadIdx.x) loadPacks<V, U>(v, src, i0, nvec, smode);
    for (int k = 0; k < K; k++) {
      int r = rows[k];
      if (r < 0) continue;
      V *dst = xp + (long long)r * nvec;
#pragma unroll
      for (int u = 0; u < U; u++) {
        long long i = i0 + (long long)u * blockDim.x;
        if (i < nvec) stPolicy(dst + i, v[u], smode);
      }
    }
  }
}

#define PERMUTE_FWD(NAME, V, U)                                                                 \
  extern "C" __global__ void __launch_bounds__(256, 4)                                          \
  NAME(const V *x, V *xp, const int *rowOf, const int *tokenOf, int T, int K, long long R,      \
       long long nvec, int zrows, int smode, int *status) { gdcEnter();                         \
    permuteFwd<V, U>(x, xp, rowOf, tokenOf, T, K, R, nvec, zrows, smode, status);               \
  }
// 16-byte packs keep 8 in flight per thread (measured: 8 beat 4 and 2 at K >= 2 on an H200).
// The launch bound (4 blocks of 256 threads) holds a kernel to 64 registers, so 16 of its
// 64-thread blocks fit an SM.
PERMUTE_FWD(permute_fwd_v16, uint4, 8)
PERMUTE_FWD(permute_fwd_v8, uint2, 4)
PERMUTE_FWD(permute_fwd_v4, unsigned int, 4)
PERMUTE_FWD(permute_fwd_v2, unsigned short, 4)

// ---------------------------------------------------------------------------------------------
// Permute backward: dx[t] = Σ_k dxp[rowOf[t,k]], in k order, starting from the first kept
// slot (not from 0, like the CPU's copy-then-add), in the accumulation type; bfloat16 rounds
// once at the end. A token with no kept slot gets 0.

template <typename T, int N>
__device__ __forceinline__ void permuteBwd(const T *__restrict__ dxp, T *__restrict__ dx,
                                           const int *__restrict__ rowOf, int K, long long H,
                                           long long R, int *status) {
  typedef typename Acc<T>::type A;
  typedef Pack<T, N> P;
  extern __shared__ int rows[];
  long long t = blockIdx.x;
  for (int k = threadIdx.x; k < K; k += blockDim.x) rows[k] = planRow(rowOf, t * K + k, R, status);
  __syncthreads();
  long long nvec = H / N;
  P *out = (P *)(dx + t * H);
  for (long long i = threadIdx.x; i < nvec; i += blockDim.x) {
    A a[N];
    bool first = true;
    for (int k = 0; k < K; k++) {
      int r = rows[k];
      if (r < 0) continue;
      P v = ldcs((const P *)(dxp + (long long)r * H) + i);
#pragma unroll
      for (int j = 0; j < N; j++) {
        A x = toAcc(v.v[j]);
        a[j] = first ? x : addRN(a[j], x);
      }
      first = false;
    }
    if (first) {
#pragma unroll
      for (int j = 0; j < N; j++) a[j] = A(0);
    }
    P o;
    packFromAcc<T, N>(a, o);
    st(out + i, o);
  }
}

// ---------------------------------------------------------------------------------------------
// Typed instantiations. _v: 16-byte packs (H·size % 16 == 0 and 16-byte aligned pointers);
// _s: one element at a time.

#define PERMUTE_TYPED(SUF, T, N, PR)                                                             \
  extern "C" __global__ void __launch_bounds__(256)                                              \
  permute_bwd_##SUF(const T *dxp, T *dx, const int *rowOf, int K, long long H, long long R,      \
                    int *status) { gdcEnter();                                                   \
    permuteBwd<T, N>(dxp, dx, rowOf, K, H, R, status);                                           \
  }

PERMUTE_TYPED(f32_v, float, 4, float)
PERMUTE_TYPED(f32_s, float, 1, float)
PERMUTE_TYPED(f64_v, double, 2, double)
PERMUTE_TYPED(f64_s, double, 1, double)
PERMUTE_TYPED(bf16_v, __nv_bfloat16, 8, float)
PERMUTE_TYPED(bf16_s, __nv_bfloat16, 1, float)
