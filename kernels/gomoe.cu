// gomoe.cu: CUDA kernels of gomoe: the routing plan, permute-dispatch and combine-unpermute,
// forward and backward. Built into gomoe.fatbin by build_fatbin.sh; launched from Go through
// the driver API (cuda_cuda.go). Every kernel mirrors a CPU kernel in package kernels and keeps
// its rounding contract, so the GPU gives the CPU's bits (the dprobs dot products excepted:
// they sum in float64 in a tree, see unpermute_bwd).
//
// Layout of the flat int32 plan (kernels/plan.go): counts [E], offsets [E+1], rowOf [T*K],
// tokenOf [R]. Row order inside an expert's segment is ascending token index. No kernel uses
// an atomic to decide an order: the shared-memory histogram in plan_count only counts, ranks
// come from warp match/popc and fixed-order scans.
//
// Addressing is 64-bit: row*H is computed in long long.
//
// Status word (written with atomicOr, read by the host when it next synchronises):
//   1  an expert id outside [-1, E) (treated as -1)
//   2  a token names one expert twice (kept: the plan stays memory-safe)
//   4  a NaN prob under drop-by-prob (sorted below every other prob)
#include "gomoe.cuh"

using namespace gomoe;

#define WARPS_ASSIGN 8

// ---------------------------------------------------------------------------------------------
// Plan build: plan_count -> plan_assign (and, for drop-by-prob, a listing pass and plan_select
// before a final count/assign with the keep mask).

// plan_count: block c histograms the experts of tokens [c*CT, (c+1)*CT) into
// chunkCounts[c*E + e]; the grid also sets tokenOf[0..R) to -1. With check it validates
// the ids into *status. keep (may be null) masks pairs out.
extern "C" __global__ void __launch_bounds__(256)
plan_count(const int *__restrict__ ids, int T, int K, int E, int CT, int nchunks,
           const unsigned char *__restrict__ keep, int *__restrict__ chunkCounts,
           int *__restrict__ tokenOf, long long R, int check, int *__restrict__ status) {
  extern __shared__ int hist[];
  for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  int c = blockIdx.x;
  long long p0 = (long long)c * CT * K;
  long long tEnd = (long long)(c + 1) * CT;
  if (tEnd > T) tEnd = T;
  long long p1 = tEnd * K;
  int bad = 0;
  for (long long p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
    int e = ids[p];
    if (e < -1 || e >= E) {
      bad |= 1;
      continue;
    }
    if (e < 0) continue;
    if (check) {
      long long rowStart = p - p % K;
      for (long long j = rowStart; j < p; j++)
        if (ids[j] == e) bad |= 2;
    }
    if (keep && !keep[p]) continue;
    atomicAdd(&hist[e], 1);  // a count: the order of increments does not matter
  }
  if (check && bad) atomicOr(status, bad);
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) chunkCounts[(long long)c * E + e] = hist[e];
  for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < R;
       r += (long long)gridDim.x * blockDim.x)
    tokenOf[r] = -1;
}

// plan_assign: block c first sums, from chunkCounts, each expert's pairs in the chunks before c
// (its rank base) and in all chunks (its load); from the loads it computes the segment offsets
// (each segment min(load, C) rows, C = 0: no cap, rounded up to A, or fixed at roundup(C, A)
// with padToCap), and block 0 writes counts, offsets and (if loadOut) the loads. Then it walks
// its chunk's pairs in order, 256 at a time, and gives each valid pair its stable rank inside
// its expert: the base, plus the pairs of the same expert in earlier warps of this tile, plus
// the lanes before it in its warp with the same expert (__match_any_sync). Ranks >= limit are
// dropped. With list != null it only lists the pair indices expert-major
// (list[offsets[e]+rank] = p), the first pass of drop-by-prob. The shared-memory atomics only
// add integers, so their order does not matter.
extern "C" __global__ void __launch_bounds__(256)
plan_assign(const int *__restrict__ ids, int T, int K, int E, int CT, int nchunks,
            const int *__restrict__ chunkCounts, int A, int C, int padToCap, int limit,
            const unsigned char *__restrict__ keep, int *__restrict__ counts, int *__restrict__ offsets,
            int *__restrict__ loadOut, int *__restrict__ rowOf, int *__restrict__ tokenOf,
            int *__restrict__ list) {
  extern __shared__ int sm[];
  int *base = sm;            // [E]
  int *tot = sm + E;         // [E]
  int *offs = sm + 2 * E;    // [E+1]
  int *wc = sm + 3 * E + 1;  // [WARPS_ASSIGN][E]
  int c = blockIdx.x;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int e = threadIdx.x; e < E; e += blockDim.x) base[e] = tot[e] = 0;
  __syncthreads();
  {
    int parts = blockDim.x / E;
    if (parts < 1) parts = 1;
    for (int x = threadIdx.x; x < E * parts; x += blockDim.x) {
      int e = x % E, part = x / E;
      int b = 0, s = 0;
#pragma unroll 8
      for (int cc = part; cc < nchunks; cc += parts) {
        int v = chunkCounts[(long long)cc * E + e];
        s += v;
        if (cc < c) b += v;
      }
      atomicAdd(&tot[e], s);
      atomicAdd(&base[e], b);
    }
  }
  __syncthreads();
  if (warp == 0) {
    int per = (E + 31) / 32;
    int lo = lane * per, hi = lo + per;
    if (hi > E) hi = E;
    int s = 0;
    for (int e = lo; e < hi; e++) {
      int n = (C > 0 && tot[e] > C) ? C : tot[e];
      int sz = padToCap ? C : n;
      s += (sz + A - 1) / A * A;
    }
    int x = s;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      int y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane >= o) x += y;
    }
    int start = x - s;
    for (int e = lo; e < hi; e++) {
      offs[e] = start;
      int n = (C > 0 && tot[e] > C) ? C : tot[e];
      int sz = padToCap ? C : n;
      start += (sz + A - 1) / A * A;
      if (c == 0) {
        counts[e] = n;
        offsets[e] = offs[e];
        if (loadOut) loadOut[e] = tot[e];
      }
    }
    if (lane == 31) {
      offs[E] = x;
      if (c == 0) offsets[E] = x;
    }
  }
  __syncthreads();
  long long p0 = (long long)c * CT * K;
  long long tEnd = (long long)(c + 1) * CT;
  if (tEnd > T) tEnd = T;
  long long p1 = tEnd * K;
  for (long long tile = p0; tile < p1; tile += blockDim.x) {
    for (int i = threadIdx.x; i < WARPS_ASSIGN * E; i += blockDim.x) wc[i] = 0;
    __syncthreads();
    long long p = tile + threadIdx.x;
    int e = -1;
    if (p < p1) {
      e = ids[p];
      if (e < 0 || e >= E || (keep && !keep[p])) e = -1;
    }
    unsigned m = __match_any_sync(0xffffffffu, e);
    int lr = __popc(m & ((1u << lane) - 1u));
    if (e >= 0 && lr == 0) wc[warp * E + e] = __popc(m);
    __syncthreads();
    int rank = 0;
    if (e >= 0) {
      rank = base[e] + lr;
      for (int w = 0; w < warp; w++) rank += wc[w * E + e];
    }
    __syncthreads();
    for (int x = threadIdx.x; x < E; x += blockDim.x) {
      int s = 0;
      for (int w = 0; w < WARPS_ASSIGN; w++) s += wc[w * E + x];
      base[x] += s;
    }
    if (p < p1) {
      if (list) {
        if (e >= 0) list[offs[e] + rank] = (int)p;
      } else {
        int row = -1;
        if (e >= 0 && rank < limit) {
          row = offs[e] + rank;
          tokenOf[row] = (int)(p / K);
        }
        rowOf[p] = row;
      }
    }
    __syncthreads();
  }
}

// plan_select: for each pair of an over-full expert (load > C), keep it if fewer than C pairs
// of that expert have a higher prob, or an equal prob and a lower token index. O(load) per
// pair; exactly C pairs are kept (the order is total).
template <typename P>
__device__ __forceinline__ void planSelect(const int *__restrict__ ids, const P *__restrict__ probs,
                                           long long TK, int E, int C, const int *__restrict__ listOffsets,
                                           const int *__restrict__ load, const int *__restrict__ list,
                                           unsigned char *__restrict__ keep, int *__restrict__ status) {
  for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < TK;
       p += (long long)gridDim.x * blockDim.x) {
    int e = ids[p];
    if (e < 0 || e >= E) {
      keep[p] = 0;
      continue;
    }
    int n = load[e];
    if (n <= C) {
      keep[p] = 1;
      continue;
    }
    double x = (double)probs[p];
    if (x != x) atomicOr(status, 4);
    unsigned long long kp = probKey(x);
    const int *lst = list + listOffsets[e];
    int rank = 0;
    for (int j = 0; j < n && rank < C; j++) {
      int q = lst[j];
      if (q == p) continue;
      unsigned long long kq = probKey((double)probs[q]);
      if (kq > kp || (kq == kp && q < p)) rank++;
    }
    keep[p] = rank < C ? 1 : 0;
  }
}

extern "C" __global__ void __launch_bounds__(256)
plan_select_f32(const int *ids, const float *probs, long long TK, int E, int C, const int *listOffsets,
                const int *load, const int *list, unsigned char *keep, int *status) {
  planSelect<float>(ids, probs, TK, E, C, listOffsets, load, list, keep, status);
}
extern "C" __global__ void __launch_bounds__(256)
plan_select_f64(const int *ids, const double *probs, long long TK, int E, int C, const int *listOffsets,
                const int *load, const int *list, unsigned char *keep, int *status) {
  planSelect<double>(ids, probs, TK, E, C, listOffsets, load, list, keep, status);
}

// ---------------------------------------------------------------------------------------------
// Permute forward: a byte copy, so one kernel per vector width serves every dtype. Blocks
// [0, T) each read their token's row once (U vectors per thread in flight) and write it to the
// token's K rows; blocks [T, T+ceil(R/zrows)) zero the rows with tokenOf < 0.


// Store and load cache policy of the row kernels (smode): bits 0-1 store: 0 streaming
// (st.global.cs), 1 default, 2 cache-global (st.global.cg); bit 2: load through the read-only
// path (ld.global.nc) instead of streaming (ld.global.cs).
template <typename R> __device__ __forceinline__ void stPolicy(R *p, const R &v, int smode) {
  switch (smode & 3) {
  case 0: __stcs(p, v); break;
  case 1: *p = v; break;
  default: __stcg(p, v); break;
  }
}
template <typename R> __device__ __forceinline__ R ldPolicy(const R *p, int smode) {
  return (smode & 4) ? __ldg(p) : __ldcs(p);
}
template <typename P> __device__ __forceinline__ void stPack(P *p, const P &v, int smode) {
  typedef typename Raw<sizeof(P)>::type R;
  R r;
  memcpy(&r, &v, sizeof(P));
  stPolicy((R *)p, r, smode);
}

template <typename V, int U>
__device__ __forceinline__ void permuteFwd(const V *__restrict__ x, V *__restrict__ xp,
                                           const int *__restrict__ rowOf, const int *__restrict__ tokenOf,
                                           int T, int K, long long R, long long nvec, int zrows,
                                           int smode) {
  extern __shared__ int rows[];
  if (blockIdx.x >= (unsigned)T) {
    zeroRows<V>(xp, nvec, tokenOf, R, (long long)(blockIdx.x - T) * zrows, zrows);
    return;
  }
  long long t = blockIdx.x;
  for (int k = threadIdx.x; k < K; k += blockDim.x) rows[k] = rowOf[t * K + k];
  __syncthreads();
  const V *src = x + t * nvec;
  long long step = (long long)blockDim.x * U;
  for (long long i0 = threadIdx.x; i0 < nvec; i0 += step) {
    V v[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      long long i = i0 + (long long)u * blockDim.x;
      if (i < nvec) v[u] = ldPolicy(src + i, smode);
    }
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
  extern "C" __global__ void __launch_bounds__(256)                                             \
  NAME(const V *x, V *xp, const int *rowOf, const int *tokenOf, int T, int K, long long R,      \
       long long nvec, int zrows, int smode) {                                                  \
    permuteFwd<V, U>(x, xp, rowOf, tokenOf, T, K, R, nvec, zrows, smode);                       \
  }
// 16-byte packs keep 8 in flight per thread (measured: 8 beat 4 and 2 at K >= 2 on an H200).
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
                                           const int *__restrict__ rowOf, int K, long long H) {
  typedef typename Acc<T>::type A;
  typedef Pack<T, N> P;
  extern __shared__ int rows[];
  long long t = blockIdx.x;
  for (int k = threadIdx.x; k < K; k += blockDim.x) rows[k] = rowOf[t * K + k];
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
  for (int k = threadIdx.x; k < K; k += blockDim.x) {
    rows[k] = rowOf[t * K + k];
    w[k] = probs ? (A)probs[t * K + k] : A(1);
  }
  __syncthreads();
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
  for (int k = threadIdx.x; k < K; k += blockDim.x) {
    rows[k] = rowOf[t * K + k];
    w[k] = probs ? (A)probs[t * K + k] : A(1);
  }
  __syncthreads();
  const P *g = (const P *)(dy + t * H);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
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
          if (dyp) {
            P o;
            if (probs) {
              A wk = w[kg + kk];
              A m[N];
#pragma unroll
              for (int j = 0; j < N; j++) m[j] = mulRN(wk, ga[j]);
              packFromAcc<T, N>(m, o);
            } else {
              o = gv;
            }
            stPack((P *)(dyp + (long long)r * H) + i, o, smode);
          }
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
          if (dyp) {
            P o;
            if (probs) {
              A wk = w[kg + kk];
              A m[N];
#pragma unroll
              for (int j = 0; j < N; j++) m[j] = mulRN(wk, ga[j]);
              packFromAcc<T, N>(m, o);
            } else {
              o = gv;
            }
            stPack((P *)(dyp + (long long)r * H) + i, o, smode);
          }
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
  for (int k = threadIdx.x; k < K; k += blockDim.x) {
    rows[k] = rowOf[t * K + k];
    w[k] = probs ? (A)probs[t * K + k] : A(1);
  }
  __syncthreads();
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

#define TYPED(SUF, T, N, PR)                                                                     \
  extern "C" __global__ void __launch_bounds__(256)                                              \
  permute_bwd_##SUF(const T *dxp, T *dx, const int *rowOf, int K, long long H) {                 \
    permuteBwd<T, N>(dxp, dx, rowOf, K, H);                                                      \
  }                                                                                              \
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

TYPED(f32_v, float, 4, float)
TYPED(f32_s, float, 1, float)
TYPED(f64_v, double, 2, double)
TYPED(f64_s, double, 1, double)
TYPED(bf16_v, __nv_bfloat16, 8, float)
TYPED(bf16_s, __nv_bfloat16, 1, float)

// ---------------------------------------------------------------------------------------------
// Permuted probs: pp[r] = probs[t,k] for the slot (t,k) with rowOf[t,k] = r, 0 for other rows;
// backward dprobs[t,k] = dpp[rowOf[t,k]], 0 for dropped slots. Bit copies (B = element type
// of the same size).

template <typename B>
__device__ __forceinline__ void permuteProbsFwd(const B *__restrict__ probs, B *__restrict__ pp,
                                                const int *__restrict__ rowOf,
                                                const int *__restrict__ tokenOf, int K, long long R) {
  for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < R;
       r += (long long)gridDim.x * blockDim.x) {
    B v = B(0);
    long long t = tokenOf[r];
    if (t >= 0)
      for (int k = 0; k < K; k++)
        if (rowOf[t * K + k] == r) v = probs[t * K + k];
    pp[r] = v;
  }
}

template <typename B>
__device__ __forceinline__ void permuteProbsBwd(const B *__restrict__ dpp, B *__restrict__ dprobs,
                                                const int *__restrict__ rowOf, long long TK) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < TK;
       i += (long long)gridDim.x * blockDim.x) {
    int r = rowOf[i];
    dprobs[i] = r >= 0 ? dpp[r] : B(0);
  }
}

extern "C" __global__ void __launch_bounds__(256)
permute_probs_fwd_b4(const unsigned int *probs, unsigned int *pp, const int *rowOf, const int *tokenOf,
                     int K, long long R) {
  permuteProbsFwd<unsigned int>(probs, pp, rowOf, tokenOf, K, R);
}
extern "C" __global__ void __launch_bounds__(256)
permute_probs_fwd_b8(const unsigned long long *probs, unsigned long long *pp, const int *rowOf,
                     const int *tokenOf, int K, long long R) {
  permuteProbsFwd<unsigned long long>(probs, pp, rowOf, tokenOf, K, R);
}
extern "C" __global__ void __launch_bounds__(256)
permute_probs_bwd_b4(const unsigned int *dpp, unsigned int *dprobs, const int *rowOf, long long TK) {
  permuteProbsBwd<unsigned int>(dpp, dprobs, rowOf, TK);
}
extern "C" __global__ void __launch_bounds__(256)
permute_probs_bwd_b8(const unsigned long long *dpp, unsigned long long *dprobs, const int *rowOf,
                     long long TK) {
  permuteProbsBwd<unsigned long long>(dpp, dprobs, rowOf, TK);
}

// ---------------------------------------------------------------------------------------------
// Element-wise helpers for the device engine: out = a + b (rounded once in the data type;
// bfloat16 adds in float32 and rounds once), and a dtype conversion float32 <-> bfloat16.

template <typename T>
__device__ __forceinline__ void addElems(const T *__restrict__ a, const T *__restrict__ b,
                                         T *__restrict__ out, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    T o;
    fromAcc(addRN(toAcc(a[i]), toAcc(b[i])), o);
    st(out + i, o);
  }
}
extern "C" __global__ void __launch_bounds__(256) add_f32(const float *a, const float *b, float *o, long long n) {
  addElems<float>(a, b, o, n);
}
extern "C" __global__ void __launch_bounds__(256) add_f64(const double *a, const double *b, double *o, long long n) {
  addElems<double>(a, b, o, n);
}
extern "C" __global__ void __launch_bounds__(256)
add_bf16(const __nv_bfloat16 *a, const __nv_bfloat16 *b, __nv_bfloat16 *o, long long n) {
  addElems<__nv_bfloat16>(a, b, o, n);
}

// ---------------------------------------------------------------------------------------------
// block_copy: n byte copies in one launch, for package ep's staged exchanges (one block per
// (peer, expert)). desc holds n triples of long long (source byte offset from src, destination
// byte offset from dst, bytes); the host splits long blocks into pieces, so a thread block
// takes one piece after another (grid-stride over the triples). A piece whose two addresses
// and length are multiples of 16 (8, 4) moves in 16-byte (8-, 4-byte) words, four in flight
// per thread; any other piece moves byte by byte. Pieces must not overlap: the copies are
// plain bytes, so they arrive bit for bit whatever the element type.

template <typename W>
__device__ __forceinline__ void copyWords(const char *__restrict__ s, char *__restrict__ t, long long nb) {
  const W *__restrict__ sw = reinterpret_cast<const W *>(s);
  W *__restrict__ tw = reinterpret_cast<W *>(t);
  long long nw = nb / (long long)sizeof(W), i = threadIdx.x, step = blockDim.x;
  for (; i + 3 * step < nw; i += 4 * step) {
    W a = sw[i], b = sw[i + step], c = sw[i + 2 * step], d = sw[i + 3 * step];
    tw[i] = a;
    tw[i + step] = b;
    tw[i + 2 * step] = c;
    tw[i + 3 * step] = d;
  }
  for (; i < nw; i += step) tw[i] = sw[i];
}

extern "C" __global__ void __launch_bounds__(256)
block_copy(const char *src, char *dst, const long long *desc, int n) {
  for (int k = blockIdx.x; k < n; k += gridDim.x) {
    const char *s = src + desc[3 * k];
    char *t = dst + desc[3 * k + 1];
    long long nb = desc[3 * k + 2];
    unsigned long long a = (unsigned long long)s | (unsigned long long)t | (unsigned long long)nb;
    if ((a & 15) == 0) {
      copyWords<uint4>(s, t, nb);
    } else if ((a & 7) == 0) {
      copyWords<uint2>(s, t, nb);
    } else if ((a & 3) == 0) {
      copyWords<unsigned int>(s, t, nb);
    } else {
      copyWords<unsigned char>(s, t, nb);
    }
  }
}

#include "train.cuh"
#include "nn.cuh"
#include "loss.cuh"
