// balance_loss.cuh: the load-balancing loss of the routing, forward and backward, float (f32)
// and double (f64) (CPU twin: balance_loss.go; launcher: balance_loss_cuda.go). Part of
// gomoe.cu's translation unit (included after gomoe.cuh, with namespace gomoe in scope; uses
// LOSS_LANES, lossDy and lossTree from it); built into gomoe.fatbin by build_fatbin.sh.
//
// Everything sums in double in a fixed order (no atomics decide a sum): per-chunk partial sums,
// then one block that adds them in order over LOSS_LANES lanes and a fixed pairwise tree. The
// products and sums use the _rn intrinsics (no FMA contraction), so the loss equals the CPU
// bit for bit.
//
// A gradient's dy is either a one-element device tensor (dyp != 0) or the value dyv.

#define LOSS_CHUNK 64

// lossRows sets [r0, r1), the rows of chunk c (chunk c % cps of sequence c / cps, S rows each).
__device__ __forceinline__ void lossRows(int c, int cps, int S, long long &r0, long long &r1) {
  long long b = c / cps;
  r0 = b * S + (long long)(c % cps) * LOSS_CHUNK;
  r1 = min(r0 + LOSS_CHUNK, (b + 1) * S);
}

// lossCountRow adds to n the ids of one token's row it (K ids) equal to e, and sets bad for an
// id outside [-1, E).
__device__ __forceinline__ void lossCountRow(const int *__restrict__ it, int K, int E, int e, int &n, bool &bad) {
  for (int k = 0; k < K; k++) {
    int x = __ldg(it + k);
    n += x == e;
    bad |= x < -1 || x >= E;
  }
}

// lossGrad is the scores' gradient (scale·dy)·cnt, rounded once to T (as the CPU).
template <typename T> __device__ __forceinline__ T lossGrad(double scale, const T *dyp, double dyv, long long cnt) {
  return (T)__dmul_rn(__dmul_rn(scale, lossDy(dyp, dyv)), (double)cnt);
}

// loss_partials: block c·ny + y handles chunk c (rows [r0, r1) of sequence c / cps) and the
// columns e = y·blockDim.x + threadIdx.x. partN[c·E + e] = the number of ids[t,k] = e in the
// chunk; with s, partP[c·E + e] = Σ_t s[t,e] in row order (double). Ids outside [-1, E) set
// status bit 1 and are not counted.
template <typename T>
__device__ __forceinline__ void lossPartials(const int *__restrict__ ids, const T *__restrict__ s,
                                             double *__restrict__ partP, int *__restrict__ partN, int K, int E,
                                             int S, int cps, int ny, int *__restrict__ status) {
  int c = blockIdx.x / ny;
  int e = (blockIdx.x % ny) * blockDim.x + threadIdx.x;
  long long r0, r1;
  lossRows(c, cps, S, r0, r1);
  if (e >= E) return;
  double p = 0;
  int n = 0;
  bool bad = false;
  for (long long t = r0; t < r1; t++) {
    if (s) p = __dadd_rn(p, (double)s[t * E + e]);
    lossCountRow(ids + t * K, K, E, e, n, bad);
  }
  if (bad && e == 0) atomicOr(status, 1);
  long long o = (long long)c * E + e;
  partN[o] = n;
  if (s) partP[o] = p;
}

// balance_loss_fwd (one block of LOSS_LANES threads): out = scale · Σ_{b,e} N[b,e]·P[b,e], the
// element i = b·E + e going to lane i mod LOSS_LANES.
template <typename T>
__device__ __forceinline__ void balanceFwd(const double *__restrict__ partP, const int *__restrict__ partN,
                                           T *__restrict__ out, int B, int E, int cps, double scale) {
  __shared__ double red[LOSS_LANES];
  double acc = 0;
  long long n = (long long)B * E;
  for (long long i = threadIdx.x; i < n; i += LOSS_LANES) {
    long long b = i / E, e = i % E;
    double p = 0;
    long long cnt = 0;
    for (int j = 0; j < cps; j++) {
      long long o = (b * cps + j) * E + e;
      p = __dadd_rn(p, partP[o]);
      cnt += partN[o];
    }
    acc = __dadd_rn(acc, __dmul_rn((double)cnt, p));
  }
  red[threadIdx.x] = acc;
  lossTree(red);
  if (threadIdx.x == 0) out[0] = (T)__dmul_rn(red[0], scale);
}

// loss_counts_sum: N[b·E + e] = Σ_j partN[(b·cps + j)·E + e], one warp per (b, e) (integers:
// the order does not matter), so that the backward kernels read each count once instead of
// adding cps chunk counts in every block.
extern "C" __global__ void __launch_bounds__(256)
loss_counts_sum(const int *__restrict__ partN, int *__restrict__ N, int B, int E, int cps) {
  gdcEnter();
  long long w = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (w >= (long long)B * E) return;
  long long b = w / E, e = w % E;
  int n = 0;
  for (int j = lane; j < cps; j += 32) n += partN[(b * cps + j) * E + e];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
  if (lane == 0) N[w] = n;
}

// balance_loss_bwd: block c·ny + y writes ds[t,e] = (scale·dy)·N[b,e] for the rows of chunk c.
template <typename T>
__device__ __forceinline__ void balanceBwd(const int *__restrict__ N, T *__restrict__ ds, const T *dyp,
                                           double dyv, int E, int S, int cps, int ny, double scale) {
  int c = blockIdx.x / ny;
  int e = (blockIdx.x % ny) * blockDim.x + threadIdx.x;
  if (e >= E) return;
  long long r0, r1;
  lossRows(c, cps, S, r0, r1);
  T v = lossGrad<T>(scale, dyp, dyv, N[(long long)(c / cps) * E + e]);
  for (long long t = r0; t < r1; t++) ds[t * E + e] = v;
}

// ---- the router's balancing loss from the logits (op.RouterBalanceLoss) ----------------------
// The scores s [T,E] the loss sums are computed from the logits inside the two kernels below,
// with the arithmetic of the ops they replace, so that the loss and the logits' gradient have
// the bits of the unfused chain on the GPU: softmax as rowFwd/rowBwd (rowop.cuh, via router.cuh's
// routerRowSoftmax and routerScore), sigmoid then row normalisation as pw_fwd/pw_bwd's Sigmoid
// (activation.cuh) and rowFwd/rowBwd's RowNormalize. Each row's statistics (softmax: max and
// Σ exp; sigmoid: Σ σ) are found by one warp, as the row ops find them.

// routerRowStats sets the row's statistics: softmax m (max) and s (Σ exp(x − m)); sigmoid
// s = Σ σ(x) (m = 0), each summed as rowFwd sums it. It returns the score function the row
// takes: a sigmoid row whose sigmoids sum below 2^-64 takes the softmax (balance_loss.go).
template <typename T>
__device__ __forceinline__ int routerRowStats(const T *__restrict__ xr, int E, int lane, int score, T &m, T &s) {
  if (score == RouterSoftmax) {
    routerRowSoftmax(xr, E, lane, m, s);
    return RouterSoftmax;
  }
  m = 0;
  s = 0;
  for (int j = lane; j < E; j += 32) s += sigm(xr[j]);
  s = warpSumA(s);
  if (s < (T)0x1p-64) {
    routerRowSoftmax(xr, E, lane, m, s);
    return RouterSoftmax;
  }
  return RouterSigmoid;
}

// routerAuxScore is s[t,e] from the logit x and its row's statistics (rowFwd's rounding).
template <typename T> __device__ __forceinline__ T routerAuxScore(int score, T x, T m, T s) {
  return score == RouterSoftmax ? expA(x - m) / s : sigm(x) / s;
}

// loss_partials_logits: lossPartials of the scores computed from the logits x, block c for chunk
// c and every expert (loop over the columns), the same partP and partN.
template <typename T>
__device__ __forceinline__ void lossPartialsLogits(const int *__restrict__ ids, const T *__restrict__ x,
                                                   double *__restrict__ partP, int *__restrict__ partN, int K,
                                                   int E, int S, int cps, int score, int *__restrict__ status) {
  __shared__ T rowM[LOSS_CHUNK], rowS[LOSS_CHUNK];
  __shared__ int rowScore[LOSS_CHUNK];
  int c = blockIdx.x;
  long long r0, r1;
  lossRows(c, cps, S, r0, r1);
  int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (long long t = r0 + (threadIdx.x >> 5); t < r1; t += warps) {
    T m, s;
    int sc = routerRowStats(x + t * E, E, lane, score, m, s);
    if (lane == 0) {
      rowM[t - r0] = m;
      rowS[t - r0] = s;
      rowScore[t - r0] = sc;
    }
  }
  __syncthreads();
  bool bad = false;
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    double p = 0;
    int n = 0;
    for (long long t = r0; t < r1; t++) {
      p = __dadd_rn(p, (double)routerAuxScore<T>(rowScore[t - r0], x[t * E + e], rowM[t - r0], rowS[t - r0]));
      lossCountRow(ids + t * K, K, E, e, n, bad);
    }
    long long o = (long long)c * E + e;
    partN[o] = n;
    partP[o] = p;
  }
  if (bad) atomicOr(status, 1);
}

// balance_loss_bwd_logits: the logits' gradient dx [T,E]; block c·split + p takes the rows
// r0 + p·warps + w of chunk c, one per warp w (the launcher makes split·warps = LOSS_CHUNK):
// the scores' gradient v[e] = (scale·dy)·N[b,e] (balanceBwd's rounding, kept in shared memory,
// E elements), then per row the backward of the score: softmax dx = s·(v − Σ v·s) (rowBwd);
// sigmoid g = (v − Σ v·s)/Σσ (rowBwd's RowNormalize), dx = g·σ·(1 − σ) (pw_bwd's Sigmoid).
template <typename T>
__device__ __forceinline__ void balanceBwdLogits(const int *__restrict__ N, const T *__restrict__ x,
                                                 T *__restrict__ dx, const T *dyp, double dyv, int E, int S,
                                                 int cps, int split, double scale, int score) {
  extern __shared__ __align__(16) unsigned char smemBytes[];
  T *v = (T *)smemBytes;
  int c = blockIdx.x / split, part = blockIdx.x % split;
  long long r0, r1;
  lossRows(c, cps, S, r0, r1);
  const int *nb = N + (long long)(c / cps) * E;
  for (int e = threadIdx.x; e < E; e += blockDim.x) v[e] = lossGrad<T>(scale, dyp, dyv, nb[e]);
  __syncthreads();
  int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (long long t = r0 + part * warps + (threadIdx.x >> 5); t < r1; t += split * warps) {
    const T *xr = x + t * E;
    T *dr = dx + t * E;
    T m, s;
    int sc = routerRowStats(xr, E, lane, score, m, s);
    T d = 0;
    for (int j = lane; j < E; j += 32) d += v[j] * routerAuxScore<T>(sc, xr[j], m, s);
    d = warpSumA(d);
    for (int j = lane; j < E; j += 32) {
      T g = v[j] - d;
      if (sc == RouterSoftmax) { // also a sigmoid row that took the softmax: 1 − σ rounds to 1
        dr[j] = routerAuxScore<T>(sc, xr[j], m, s) * g;
      } else {
        T sg = sigm(xr[j]);
        T gn = g / s;
        dr[j] = gn * sg * ((T)1 - sg);
      }
    }
  }
}

#define BALANCEOPS(SUF, T)                                                                         \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      loss_partials_##SUF(const int *ids, const T *s, double *partP, int *partN, int K, int E, int S, \
                          int cps, int ny, int *status) { gdcEnter();                              \
    lossPartials<T>(ids, s, partP, partN, K, E, S, cps, ny, status);                               \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(LOSS_LANES)                                         \
      balance_loss_fwd_##SUF(const double *partP, const int *partN, T *out, int B, int E, int cps,  \
                             double scale) { gdcEnter();                                           \
    balanceFwd<T>(partP, partN, out, B, E, cps, scale);                                            \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      balance_loss_bwd_##SUF(const int *N, T *ds, const T *dyp, double dyv, int E, int S, int cps,  \
                             int ny, double scale) { gdcEnter();                                   \
    balanceBwd<T>(N, ds, dyp, dyv, E, S, cps, ny, scale);                                          \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      loss_partials_logits_##SUF(const int *ids, const T *x, double *partP, int *partN, int K, int E, \
                                 int S, int cps, int score, int *status) { gdcEnter();             \
    lossPartialsLogits<T>(ids, x, partP, partN, K, E, S, cps, score, status);                      \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256)                                                \
      balance_loss_bwd_logits_##SUF(const int *N, const T *x, T *dx, const T *dyp, double dyv, int E, \
                                    int S, int cps, int split, double scale, int score) { gdcEnter(); \
    balanceBwdLogits<T>(N, x, dx, dyp, dyv, E, S, cps, split, scale, score);                       \
  }
BALANCEOPS(f32, float)
BALANCEOPS(f64, double)
#undef BALANCEOPS
