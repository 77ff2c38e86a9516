// unpermute.cuh: combine-unpermute forward and backward (CPU twin: unpermute.go; launcher:
// unpermute_cuda.go). Part of gomoe.cu's translation unit (included after gomoe.cuh, with namespace
// gomoe in scope); built into gomoe.fatbin by build_fatbin.sh.

// loadSlots reads token t's K rows (checkRow: a row outside [0, R) reads as -1) and weights (1
// without probs) into shared memory, for the whole block. Both loads are issued before the
// row's check, which waits for its load (checked first, it held the weight's load back: 1-3 %
// of the unpermute backward at the Mixtral and Qwen3 shapes on an H100).
template <typename A, typename PR>
__device__ __forceinline__ void loadSlots(int *rows, A *w, const int *__restrict__ rowOf, const PR *__restrict__ probs,
                                          long long t, int K, long long R, int *status) {
  for (int k = threadIdx.x; k < K; k += blockDim.x) {
    int r = rowOf[t * K + k];
    w[k] = probs ? (A)probs[t * K + k] : A(1);
    rows[k] = checkRow(r, R, status);
  }
  __syncthreads();
}

// ---------------------------------------------------------------------------------------------
// Unpermute forward: y[t] = Σ_k probs[t,k]·yp[rowOf[t,k]]: acc starts at 0, each slot in k
// order adds its product rounded on its own (no FMA); probs null: unweighted sum.

template <typename T, int N, typename PR>
__device__ __forceinline__ void unpermuteFwd(const T *__restrict__ yp, const PR *__restrict__ probs,
                                             T *__restrict__ y, const int *__restrict__ rowOf, int K,
                                             long long H, long long R, int *status) {
  typedef typename Acc<T>::type A;
  typedef Pack<T, N> P;
  extern __shared__ __align__(16) unsigned char smraw[];
  A *w = (A *)smraw;                 // [K]
  int *rows = (int *)(w + K);        // [K]
  long long t = blockIdx.x;
  loadSlots(rows, w, rowOf, probs, t, K, R, status);
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
// Unpermute backward with dprobs for float32 and float64 data, one pass per token that reads dy
// once (for K <= 8; slots go in groups of 8). BATCH issues the K yp loads of a pack before
// using any (more loads in flight, more registers: faster with K > 2); otherwise slot by slot.
// dyp[rowOf[t,k]] = probs[t,k]·dy[t] (a copy when unweighted), and dprobs[t,k] =
// <yp[rowOf[t,k]], dy[t]> with products rounded in float64 and summed in float64 per thread,
// then across the block in a fixed tree, rounded once to the probs type. The CPU sums the same
// products in h order, so dprobs may differ from it by float64 rounding only (see the
// tolerance in the tests). Blocks [T, ...) zero dyp's rows with tokenOf < 0.

#define KGROUP 8

// finishDots adds each of the kn slots' per-thread partial sums across the block (a warp tree:
// lane 0 of warpSumA, which is a shuffle-down tree there; then the warps' sums in order from
// 0) and writes them, 0 for a dropped slot (rows[kk] < 0), to out[kk]. red holds [8 warps]
// [KGROUP] accumulators.
template <typename A, typename PR>
__device__ __forceinline__ void finishDots(const A *part, A *red, int kn, const int *rows, PR *out) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int kk = 0; kk < KGROUP; kk++) {
    if (kk >= kn) break;
    A s = warpSumA(part[kk]);
    if (lane == 0) red[warp * KGROUP + kk] = s;
  }
  __syncthreads();
  if (threadIdx.x < kn) {
    int kk = threadIdx.x;
    A s = A(0);
    for (int x = 0; x < nw; x++) s = addRN(s, red[x * KGROUP + kk]);
    out[kk] = rows[kk] < 0 ? PR(0) : (PR)s;
  }
  __syncthreads();
}

template <typename T, int N, typename PR, bool BATCH>
__device__ __forceinline__ void unpermuteBwd(const T *__restrict__ dy, const T *__restrict__ yp,
                                             const PR *__restrict__ probs, T *__restrict__ dyp,
                                             PR *__restrict__ dprobs, const int *__restrict__ rowOf,
                                             const int *__restrict__ tokenOf, int Tn, int K, long long H,
                                             long long R, int zrows, int smode, int *status) {
  typedef typename Acc<T>::type A;
  typedef Pack<T, N> P;
  extern __shared__ __align__(16) unsigned char smraw[];
  long long nvec = H / N;
  if (blockIdx.x >= (unsigned)Tn) {
    if (dyp) zeroRows<P>((P *)dyp, nvec, tokenOf, R, Tn, (long long)(blockIdx.x - Tn) * zrows, zrows, status);
    return;
  }
  double *red = (double *)smraw;          // [32][KGROUP]
  A *w = (A *)(red + 32 * KGROUP);        // [K]
  int *rows = (int *)(w + K);             // [K]
  long long t = blockIdx.x;
  loadSlots(rows, w, rowOf, probs, t, K, R, status);
  const P *g = (const P *)(dy + t * H);
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
          for (int j = 0; j < N; j++) part[kk] = dotTerm(part[kk], toAcc(v.v[j]), ga[j]);
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
          for (int j = 0; j < N; j++) part[kk] = dotTerm(part[kk], toAcc(v[kk].v[j]), ga[j]);
        }
      }
    }
    finishDots(part, red, kn, rows + kg, dprobs + t * K + kg);
  }
}

// Unpermute backward with dprobs for bfloat16 data (float32 probs): dyp as above, and
// dprobs[t,k] summed in float32 in the order of kernels.DotBF16 (unpermute.go), which the CPU
// follows too, so both give the same bits. Thread τ of the block (blockDim.x =
// BF16DotLanes(H)) owns the packs q ≡ τ mod blockDim.x of 8 elements, in increasing q: the 8
// products of a pack (exact in float32) add as a tree, the tree's sum adds to the thread's
// partial; the partials add as a warp tree, the warps' sums in order. VEC: 16-byte packs;
// otherwise the same packs element by element (H % 8 != 0 or an unaligned pointer), padded with
// +0 products, so the order depends on H alone. KB > 1 loads the packs of yp of KB slots
// before it uses any (more loads in flight, more registers). Blocks [0, nb) take tokens
// blockIdx.x, + nb, ... (nb = Tn: one each), loading the next token's slots while they work on
// this one, so that the load of rowOf before the loads of yp is paid once per block, not per
// token; blocks [nb, ...) zero the pad rows of dyp.

// ldBF16x8 loads pack q of a bfloat16 row of H elements (+0 past the end).
template <bool VEC>
__device__ __forceinline__ Pack<__nv_bfloat16, 8> ldBF16x8(const __nv_bfloat16 *__restrict__ row, long long q,
                                                           long long H, bool stream) {
  typedef Pack<__nv_bfloat16, 8> P;
  if constexpr (VEC) {
    return stream ? ldcs((const P *)row + q) : ld((const P *)row + q);
  } else {
    P v;
#pragma unroll
    for (int j = 0; j < 8; j++) {
      long long h = q * 8 + j;
      v.v[j] = h < H ? row[h] : __float2bfloat16_rn(0.0f);
    }
    return v;
  }
}

// dotBF16x8 is the tree sum of a pack's 8 products, as DotBF16 adds them.
__device__ __forceinline__ float dotBF16x8(const Pack<__nv_bfloat16, 8> &a, const float *b) {
  float p[8];
#pragma unroll
  for (int j = 0; j < 8; j++) p[j] = __fmul_rn(__bfloat162float(a.v[j]), b[j]);
  return __fadd_rn(__fadd_rn(__fadd_rn(p[0], p[1]), __fadd_rn(p[2], p[3])),
                   __fadd_rn(__fadd_rn(p[4], p[5]), __fadd_rn(p[6], p[7])));
}

template <bool VEC, int KB>
__device__ __forceinline__ void unpermuteBwdBF16(const __nv_bfloat16 *__restrict__ dy,
                                                 const __nv_bfloat16 *__restrict__ yp,
                                                 const float *__restrict__ probs, __nv_bfloat16 *__restrict__ dyp,
                                                 float *__restrict__ dprobs, const int *__restrict__ rowOf,
                                                 const int *__restrict__ tokenOf, int Tn, int nb, int K, long long H,
                                                 long long R, int zrows, int smode, int *status) {
  typedef __nv_bfloat16 T;
  typedef Pack<T, 8> P;
  extern __shared__ __align__(16) unsigned char smraw[];
  long long nq = (H + 7) / 8;
  if (blockIdx.x >= (unsigned)nb) {
    if (dyp) {
      long long r0 = (long long)(blockIdx.x - nb) * zrows;
      if constexpr (VEC) zeroRows<P>((P *)dyp, nq, tokenOf, R, Tn, r0, zrows, status);
      else zeroRows<T>(dyp, H, tokenOf, R, Tn, r0, zrows, status);
    }
    return;
  }
  float *red = (float *)smraw;  // [8 warps][KGROUP]
  float *w = red + 8 * KGROUP;  // [K]
  int *rows = (int *)(w + K);   // [K]
  long long t = blockIdx.x;
  if (t >= Tn) return;  // nb > Tn: not launched so
  loadSlots(rows, w, rowOf, probs, t, K, R, status);
  // dyp[r] pack q = probs[t,k]·dy[t] pack q rounded to bfloat16 (a copy when unweighted).
  auto storeScaled = [&](int r, int k, long long q, const P &gv, const float *ga) {
    P o = gv;
    if (probs) {
      float m[8];
#pragma unroll
      for (int j = 0; j < 8; j++) m[j] = __fmul_rn(w[k], ga[j]);
      packFromAcc<T, 8>(m, o);
    }
    T *dst = dyp + (long long)r * H;
    if constexpr (VEC) {
      stPack((P *)dst + q, o, smode);
    } else {
#pragma unroll
      for (int j = 0; j < 8; j++)
        if (q * 8 + j < H) dst[q * 8 + j] = o.v[j];
    }
  };
  const bool prefetch = K <= (int)blockDim.x;
  for (; t < Tn; t += nb) {
    // The next token's slots, loaded now (thread k: slot k) so that the load overlaps this token.
    long long tn = t + nb;
    int nextRow = -1;
    float nextW = 1.0f;
    if (prefetch && tn < Tn && (int)threadIdx.x < K) {
      nextRow = rowOf[tn * K + threadIdx.x];  // checked below, after this token (checkRow)
      if (probs) nextW = probs[tn * K + threadIdx.x];
    }
    const T *g = dy + t * H;
    for (int kg = 0; kg < K; kg += KGROUP) {
      int kn = K - kg < KGROUP ? K - kg : KGROUP;
      float part[KGROUP];
#pragma unroll
      for (int kk = 0; kk < KGROUP; kk++) part[kk] = 0.0f;
      for (long long q = threadIdx.x; q < nq; q += blockDim.x) {
        P gv = ldBF16x8<VEC>(g, q, H, false);
        float ga[8];
#pragma unroll
        for (int j = 0; j < 8; j++) ga[j] = __bfloat162float(gv.v[j]);
#pragma unroll
        for (int k0 = 0; k0 < KGROUP; k0 += KB) {
          if (k0 >= kn) break;
          if constexpr (KB == 1) {
            // slot by slot: the row of dyp first, then the load of yp and its dot product
            int r = rows[kg + k0];
            if (r < 0) continue;
            if (dyp) storeScaled(r, kg + k0, q, gv, ga);
            P v = ldBF16x8<VEC>(yp + (long long)r * H, q, H, true);
            part[k0] = __fadd_rn(part[k0], dotBF16x8(v, ga));
          } else {
            // KB slots: every load of yp before its use. A dropped or missing slot loads row 0
            // (unused): with no branch around them the compiler issues the KB loads back to back
            // (with one, it waited for each load before the next).
            int rr[KB];
            P v[KB];
#pragma unroll
            for (int kb = 0; kb < KB; kb++) {
              rr[kb] = k0 + kb < kn ? rows[kg + k0 + kb] : -1;
              v[kb] = ldBF16x8<VEC>(yp + (long long)max(rr[kb], 0) * H, q, H, true);
            }
#pragma unroll
            for (int kb = 0; kb < KB; kb++) {
              if (rr[kb] < 0) continue;
              if (dyp) storeScaled(rr[kb], kg + k0 + kb, q, gv, ga);
              part[k0 + kb] = __fadd_rn(part[k0 + kb], dotBF16x8(v[kb], ga));
            }
          }
        }
      }
      finishDots(part, red, kn, rows + kg, dprobs + t * K + kg);
    }
    // finishDots ended with a barrier: no thread reads this token's slots any more.
    if (tn < Tn) {
      if (prefetch) {
        if ((int)threadIdx.x < K) rows[threadIdx.x] = checkRow(nextRow, R, status), w[threadIdx.x] = nextW;
        __syncthreads();
      } else {
        loadSlots(rows, w, rowOf, probs, tn, K, R, status);
      }
    }
  }
}

// unpermute_bwd_bf16dot_k<KB>_v: 16-byte packs, the yp loads of KB slots in flight (k1: slot by
// slot); _s: element by element, slot by slot. All give the same bits. MINB, the resident
// blocks per SM asked of the register allocator, keeps the smaller variants at high occupancy.
#define UNPERMUTE_BF16DOT(SUF, VEC, KB, MINB)                                                    \
  extern "C" __global__ void __launch_bounds__(256, MINB)                                        \
  unpermute_bwd_bf16dot_##SUF(const __nv_bfloat16 *dy, const __nv_bfloat16 *yp, const float *probs, \
                              __nv_bfloat16 *dyp, float *dprobs, const int *rowOf, const int *tokenOf, \
                              int Tn, int nb, int K, long long H, long long R, int zrows, int smode,    \
                              int *status) { gdcEnter();                                         \
    unpermuteBwdBF16<VEC, KB>(dy, yp, probs, dyp, dprobs, rowOf, tokenOf, Tn, nb, K, H, R, zrows, smode, status); \
  }
UNPERMUTE_BF16DOT(k1_v, true, 1, 6)
UNPERMUTE_BF16DOT(k2_v, true, 2, 4)
UNPERMUTE_BF16DOT(k8_v, true, 8, 2)
UNPERMUTE_BF16DOT(k1_s, false, 1, 4)

// Rows only (no dprobs): dyp[rowOf[t,k]] = probs[t,k]·dy[t], with U packs of dy per thread in
// flight like permute forward (8; 4 for bfloat16 with K = 1, where 8 costs occupancy). Blocks [T, ...) zero dyp's rows with tokenOf < 0.
template <typename T, int N, typename PR, int U>
__device__ __forceinline__ void unpermuteBwdRows(const T *__restrict__ dy, const PR *__restrict__ probs,
                                                 T *__restrict__ dyp, const int *__restrict__ rowOf,
                                                 const int *__restrict__ tokenOf, int Tn, int K,
                                                 long long H, long long R, int zrows, int smode, int *status) {
  typedef typename Acc<T>::type A;
  typedef Pack<T, N> P;
  extern __shared__ __align__(16) unsigned char smraw[];
  long long nvec = H / N;
  if (blockIdx.x >= (unsigned)Tn) {
    zeroRows<P>((P *)dyp, nvec, tokenOf, R, Tn, (long long)(blockIdx.x - Tn) * zrows, zrows, status);
    return;
  }
  A *w = (A *)smraw;          // [K]
  int *rows = (int *)(w + K); // [K]
  long long t = blockIdx.x;
  loadSlots(rows, w, rowOf, probs, t, K, R, status);
  const P *g = (const P *)(dy + t * H);
  long long step = (long long)blockDim.x * U;
  for (long long i0 = threadIdx.x; i0 < nvec; i0 += step) {
    P gv[U];
    loadPacks<P, U>(gv, g, i0, nvec, smode & ~4);  // streaming loads of dy whatever smode says
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
  unpermute_fwd_##SUF(const T *yp, const PR *probs, T *y, const int *rowOf, int K, long long H,  \
                      long long R, int *status) { gdcEnter();                                    \
    unpermuteFwd<T, N, PR>(yp, probs, y, rowOf, K, H, R, status);                                \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
  unpermute_bwd_rows_##SUF(const T *dy, const PR *probs, T *dyp, const int *rowOf,               \
                           const int *tokenOf, int Tn, int K, long long H, long long R, int zrows, \
                           int smode, int *status) { gdcEnter();                                 \
    unpermuteBwdRows<T, N, PR, 8>(dy, probs, dyp, rowOf, tokenOf, Tn, K, H, R, zrows, smode, status); \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
  unpermute_bwd_rows4_##SUF(const T *dy, const PR *probs, T *dyp, const int *rowOf,              \
                            const int *tokenOf, int Tn, int K, long long H, long long R,         \
                            int zrows, int smode, int *status) { gdcEnter();                     \
    unpermuteBwdRows<T, N, PR, 4>(dy, probs, dyp, rowOf, tokenOf, Tn, K, H, R, zrows, smode, status); \
  }

// The float64-summed dprobs kernels, for float32 and float64 data (bfloat16 has its own above).
#define UNPERMUTE_DOT64(SUF, T, N, PR)                                                           \
  extern "C" __global__ void __launch_bounds__(256)                                              \
  unpermute_bwd_##SUF(const T *dy, const T *yp, const PR *probs, T *dyp, PR *dprobs,             \
                      const int *rowOf, const int *tokenOf, int Tn, int K, long long H,          \
                      long long R, int zrows, int smode, int *status) { gdcEnter();              \
    unpermuteBwd<T, N, PR, true>(dy, yp, probs, dyp, dprobs, rowOf, tokenOf, Tn, K, H, R, zrows, smode, status); \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
  unpermute_bwdseq_##SUF(const T *dy, const T *yp, const PR *probs, T *dyp, PR *dprobs,          \
                      const int *rowOf, const int *tokenOf, int Tn, int K, long long H,          \
                      long long R, int zrows, int smode, int *status) { gdcEnter();              \
    unpermuteBwd<T, N, PR, false>(dy, yp, probs, dyp, dprobs, rowOf, tokenOf, Tn, K, H, R, zrows, smode, status); \
  }

UNPERMUTE_TYPED(f32_v, float, 4, float)
UNPERMUTE_TYPED(f32_s, float, 1, float)
UNPERMUTE_TYPED(f64_v, double, 2, double)
UNPERMUTE_TYPED(f64_s, double, 1, double)
UNPERMUTE_TYPED(bf16_v, __nv_bfloat16, 8, float)
UNPERMUTE_TYPED(bf16_s, __nv_bfloat16, 1, float)
UNPERMUTE_DOT64(f32_v, float, 4, float)
UNPERMUTE_DOT64(f32_s, float, 1, float)
UNPERMUTE_DOT64(f64_v, double, 2, double)
UNPERMUTE_DOT64(f64_s, double, 1, double)
