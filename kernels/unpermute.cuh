// unpermute.cuh: combine-unpermute forward and backward (CPU twin: unpermute.go; launcher:
// unpermute_cuda.go). Part of gomoe.cu's translation unit (included after gomoe.cuh, with namespace
// gomoe in scope); built into gomoe.fatbin by build_fatbin.sh.

// loadSlots reads token t's K rows and weights (1 without probs) into shared memory, for the
// whole block.
template <typename A, typename PR>
__device__ __forceinline__ void loadSlots(int *rows, A *w, const int *__restrict__ rowOf, const PR *__restrict__ probs,
                                          long long t, int K) {
  for (int k = threadIdx.x; k < K; k += blockDim.x) {
    rows[k] = rowOf[t * K + k];
    w[k] = probs ? (A)probs[t * K + k] : A(1);
  }
  __syncthreads();
}

// ---------------------------------------------------------------------------------------------
// Unpermute forward: y[t] = Σ_k probs[t,k]·yp[rowOf[t,k]]: acc starts at 0, each slot in k
// order adds its product rounded on its own (no FMA); probs null: unweighted sum.

template <typename T, int N, typename PR>
__device__ __forceinline__ void unpermuteFwd(const T *__restrict__ yp, const PR *__restrict__ probs,
                                             T *__restrict__ y, const int *__restrict__ rowOf, int K,
                                             long long H) {
  typedef typename Acc<T>::type A;
  typedef Pack<T, N> P;
  extern __shared__ __align__(16) unsigned char smraw[];
  A *w = (A *)smraw;                 // [K]
  int *rows = (int *)(w + K);        // [K]
  long long t = blockIdx.x;
  loadSlots(rows, w, rowOf, probs, t, K);
  long long nvec = H / N;
  P *out = (P *)(y + t * H);
  for (long long i = threadIdx.x; i < nvec; i += blockDim.x) {
    A a[N];
#pragma unroll
    for (int j = 0; j < N; j++) a[j] = A(0);
    for (int k = 0; k < K; k++) {
      int r = rows[k];
      if (r < 0) continue;
      P v = ldcs((const P *)(yp + (long long)r * H) + i);
      if (probs) {
        A wk = w[k];
#pragma unroll
        for (int j = 0; j < N; j++) a[j] = addRN(a[j], mulRN(wk, toAcc(v.v[j])));
      } else {
#pragma unroll
        for (int j = 0; j < N; j++) a[j] = addRN(a[j], toAcc(v.v[j]));
      }
    }
    P o;
    packFromAcc<T, N>(a, o);
    st(out + i, o);
  }
}

// ---------------------------------------------------------------------------------------------
// Unpermute backward with dprobs, one pass per token that reads dy once (for K <= 8; slots go in
// groups of 8). BATCH issues the K yp loads of a pack before using any (more loads in flight,
// more registers: faster for float32/float64 with K > 2); otherwise slot by slot. dyp[rowOf[t,k]] = probs[t,k]·dy[t] (a copy when unweighted), and
// dprobs[t,k] = <yp[rowOf[t,k]], dy[t]> with products rounded in float64 and summed in float64
// per thread, then across the block in a fixed tree, rounded once to the probs type. The CPU
// sums the same products in h order, so dprobs may differ from it by float64 rounding only
// (see the tolerance in the tests). Blocks [T, ...) zero dyp's rows with tokenOf < 0.

#define KGROUP 8

template <typename T, int N, typename PR, bool BATCH>
__device__ __forceinline__ void unpermuteBwd(const T *__restrict__ dy, const T *__restrict__ yp,
                                             const PR *__restrict__ probs, T *__restrict__ dyp,
                                             PR *__restrict__ dprobs, const int *__restrict__ rowOf,
                                             const int *__restrict__ tokenOf, int Tn, int K, long long H,
                                             long long R, int zrows, int smode) {
  typedef typename Acc<T>::type A;
  typedef Pack<T, N> P;
  extern __shared__ __align__(16) unsigned char smraw[];
  long long nvec = H / N;
  if (blockIdx.x >= (unsigned)Tn) {
    if (dyp) zeroRows<P>((P *)dyp, nvec, tokenOf, R, (long long)(blockIdx.x - Tn) * zrows, zrows);
    return;
  }
  double *red = (double *)smraw;          // [32][KGROUP]
  A *w = (A *)(red + 32 * KGROUP);        // [K]
  int *rows = (int *)(w + K);             // [K]
  long long t = blockIdx.x;
  loadSlots(rows, w, rowOf, probs, t, K);
  const P *g = (const P *)(dy + t * H);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  // dyp[r] pack i = probs[t,k]·dy[t] pack i (a copy when unweighted).
  auto storeScaled = [&](int r, int k, long long i, const P &gv, const A *ga) {
    P o;
    if (probs) {
      A wk = w[k];
      A m[N];
#pragma unroll
      for (int j = 0; j < N; j++) m[j] = mulRN(wk, ga[j]);
      packFromAcc<T, N>(m, o);
    } else {
      o = gv;
    }
    stPack((P *)(dyp + (long long)r * H) + i, o, smode);
  };
  for (int kg = 0; kg < K; kg += KGROUP) {
    int kn = K - kg < KGROUP ? K - kg : KGROUP;
    double part[KGROUP];
#pragma unroll
    for (int kk = 0; kk < KGROUP; kk++) part[kk] = 0.0;
    for (long long i = threadIdx.x; i < nvec; i += blockDim.x) {
      P gv = ld(g + i);
      A ga[N];
#pragma unroll
      for (int j = 0; j < N; j++) ga[j] = toAcc(gv.v[j]);
      if (!BATCH) {
#pragma unroll
        for (int kk = 0; kk < KGROUP; kk++) {
          if (kk >= kn) break;
          int r = rows[kg + kk];
          if (r < 0) continue;
          if (dyp) storeScaled(r, kg + kk, i, gv, ga);
          P v = ldcs((const P *)(yp + (long long)r * H) + i);
#pragma unroll
          for (int j = 0; j < N; j++) part[kk] = dotTerm(part[kk], toAcc(v.v[j]), ga[j], sizeof(T) == 2);
        }
      } else {
        // Issue every slot's yp load before using any, so the loads overlap.
        int rr[KGROUP];
        P v[KGROUP];
#pragma unroll
        for (int kk = 0; kk < KGROUP; kk++) {
          rr[kk] = kk < kn ? rows[kg + kk] : -1;
          if (rr[kk] >= 0) v[kk] = ldcs((const P *)(yp + (long long)rr[kk] * H) + i);
        }
#pragma unroll
        for (int kk = 0; kk < KGROUP; kk++) {
          int r = rr[kk];
          if (r < 0) continue;
          if (dyp) storeScaled(r, kg + kk, i, gv, ga);
#pragma unroll
          for (int j = 0; j < N; j++) part[kk] = dotTerm(part[kk], toAcc(v[kk].v[j]), ga[j], sizeof(T) == 2);
        }
      }
    }
    {
#pragma unroll
      for (int kk = 0; kk < KGROUP; kk++) {
        double s = warpSum(part[kk]);
        if (lane == 0) red[warp * KGROUP + kk] = s;
      }
      __syncthreads();
      if (threadIdx.x < kn) {
        int kk = threadIdx.x;
        double s = 0.0;
        for (int x = 0; x < nw; x++) s = __dadd_rn(s, red[x * KGROUP + kk]);
        dprobs[t * K + kg + kk] = rows[kg + kk] < 0 ? PR(0) : (PR)s;
      }
      __syncthreads();
    }
  }
}

// Rows only (no dprobs): dyp[rowOf[t,k]] = probs[t,k]·dy[t], with U packs of dy per thread in
// flight like permute forward (8; 4 for bfloat16 with K = 1, where 8 costs occupancy). Blocks [T, ...) zero dyp's rows with tokenOf < 0.
template <typename T, int N, typename PR, int U>
__device__ __forceinline__ void unpermuteBwdRows(const T *__restrict__ dy, const PR *__restrict__ probs,
                                                 T *__restrict__ dyp, const int *__restrict__ rowOf,
                                                 const int *__restrict__ tokenOf, int Tn, int K,
                                                 long long H, long long R, int zrows, int smode) {
  typedef typename Acc<T>::type A;
  typedef Pack<T, N> P;
  extern __shared__ __align__(16) unsigned char smraw[];
  long long nvec = H / N;
  if (blockIdx.x >= (unsigned)Tn) {
    zeroRows<P>((P *)dyp, nvec, tokenOf, R, (long long)(blockIdx.x - Tn) * zrows, zrows);
    return;
  }
  A *w = (A *)smraw;          // [K]
  int *rows = (int *)(w + K); // [K]
  long long t = blockIdx.x;
  loadSlots(rows, w, rowOf, probs, t, K);
  const P *g = (const P *)(dy + t * H);
  long long step = (long long)blockDim.x * U;
  for (long long i0 = threadIdx.x; i0 < nvec; i0 += step) {
    P gv[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      long long i = i0 + (long long)u * blockDim.x;
      if (i < nvec) gv[u] = ldcs(g + i);
    }
    for (int k = 0; k < K; k++) {
      int r = rows[k];
      if (r < 0) continue;
      P *dst = (P *)(dyp + (long long)r * H);
      A wk = w[k];
#pragma unroll
      for (int u = 0; u < U; u++) {
        long long i = i0 + (long long)u * blockDim.x;
        if (i >= nvec) continue;
        P o;
        if (probs) {
          A m[N];
#pragma unroll
          for (int j = 0; j < N; j++) m[j] = mulRN(wk, toAcc(gv[u].v[j]));
          packFromAcc<T, N>(m, o);
        } else {
          o = gv[u];
        }
        stPack(dst + i, o, smode);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Typed instantiations. _v: 16-byte packs (H·size % 16 == 0 and 16-byte aligned pointers);
// _s: one element at a time.

#define UNPERMUTE_TYPED(SUF, T, N, PR)                                                           \
  extern "C" __global__ void __launch_bounds__(256)                                              \
  unpermute_fwd_##SUF(const T *yp, const PR *probs, T *y, const int *rowOf, int K, long long H) { \
    unpermuteFwd<T, N, PR>(yp, probs, y, rowOf, K, H);                                           \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
  unpermute_bwd_##SUF(const T *dy, const T *yp, const PR *probs, T *dyp, PR *dprobs,             \
                      const int *rowOf, const int *tokenOf, int Tn, int K, long long H,          \
                      long long R, int zrows, int smode) {                                       \
    unpermuteBwd<T, N, PR, true>(dy, yp, probs, dyp, dprobs, rowOf, tokenOf, Tn, K, H, R, zrows, smode); \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
  unpermute_bwdseq_##SUF(const T *dy, const T *yp, const PR *probs, T *dyp, PR *dprobs,          \
                      const int *rowOf, const int *tokenOf, int Tn, int K, long long H,          \
                      long long R, int zrows, int smode) {                                       \
    unpermuteBwd<T, N, PR, false>(dy, yp, probs, dyp, dprobs, rowOf, tokenOf, Tn, K, H, R, zrows, smode); \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
  unpermute_bwd_rows_##SUF(const T *dy, const PR *probs, T *dyp, const int *rowOf,               \
                           const int *tokenOf, int Tn, int K, long long H, long long R, int zrows, \
                           int smode) {                                                          \
    unpermuteBwdRows<T, N, PR, 8>(dy, probs, dyp, rowOf, tokenOf, Tn, K, H, R, zrows, smode);    \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
  unpermute_bwd_rows4_##SUF(const T *dy, const PR *probs, T *dyp, const int *rowOf,              \
                            const int *tokenOf, int Tn, int K, long long H, long long R,         \
                            int zrows, int smode) {                                              \
    unpermuteBwdRows<T, N, PR, 4>(dy, probs, dyp, rowOf, tokenOf, Tn, K, H, R, zrows, smode);    \
  }

UNPERMUTE_TYPED(f32_v, float, 4, float)
UNPERMUTE_TYPED(f32_s, float, 1, float)
UNPERMUTE_TYPED(f64_v, double, 2, double)
UNPERMUTE_TYPED(f64_s, double, 1, double)
UNPERMUTE_TYPED(bf16_v, __nv_bfloat16, 8, float)
UNPERMUTE_TYPED(bf16_s, __nv_bfloat16, 1, float)
