// plan.cuh: the routing plan's CUDA kernels (CPU twin: plan.go; launcher: plan_cuda.go). Part of
// gomoe.cu's translation unit (included after gomoe.cuh, with namespace gomoe in scope); built into
// gomoe.fatbin by build_fatbin.sh.
//
// Layout of the flat int32 plan (kernels/plan.go): counts [E], offsets [E+1], rowOf [T*K], tokenOf
// [R]. Row order inside an expert's segment is ascending token index. No kernel uses an atomic to
// decide an order: the shared-memory histogram in plan_count only counts, ranks come from warp
// match/popc and fixed-order scans.
//
// Status bits: 1 an expert id outside [-1, E) (treated as -1), 2 a token names one expert twice
// (kept: the plan stays memory-safe), 4 a NaN prob under drop-by-prob (sorted below every other
// prob).

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
  gdcEnter();
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
  gdcEnter();
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
  gdcEnter();
  planSelect<float>(ids, probs, TK, E, C, listOffsets, load, list, keep, status);
}
extern "C" __global__ void __launch_bounds__(256)
plan_select_f64(const int *ids, const double *probs, long long TK, int E, int C, const int *listOffsets,
                const int *load, const int *list, unsigned char *keep, int *status) {
  gdcEnter();
  planSelect<double>(ids, probs, TK, E, C, listOffsets, load, list, keep, status);
}
