// router.cuh: the fused router, top-k and probs forward and backward (CPU twin: router.go;
// launcher: router_cuda.go). Part of gomoe.cu's translation unit (included after topk.cuh,
// rowop.cuh and activation.cuh, whose helpers it uses); built into gomoe.fatbin by
// build_fatbin.sh.
//
// One warp per token. Each kernel repeats the arithmetic of the single-op kernels it replaces,
// in their order, so that its bits equal theirs: the row softmax and normalisation of rowop.cuh
// (lane j holds columns j, j+32, ...; per-lane sums in that order, then warpSumA), the sigmoid
// of activation.cuh, TopK's selection in double with topk.cuh's `better` order (a strict total
// order, so the warp's arg-max is the sequential scan's), GatherTopK's scatter (0 + g, slots
// in k order) and the engine's MulScalar for the scale. The exception: a sigmoid router's token
// whose chosen scores sum below 2^-64 takes the softmax of its chosen logits (routerSoft; the
// chain loses precision there or divides 0 by 0).
//
// Score kinds: RouterSoftmax 1, RouterSigmoid 2 (kernels.RouterScore). pre: softmax selects on
// the full softmax (else on the logits, with a softmax over the chosen).

enum { RouterSoftmax = 1, RouterSigmoid = 2 };

// ROUTER_TOKENS(t, n): the tokens of this warp, grid-stride (the warp's lanes share t).
#define ROUTER_TOKENS(t, n)                                                                        \
  for (long long t = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; t < (n);             \
       t += ((long long)gridDim.x * blockDim.x) >> 5)

// routerRowSoftmax gives the row's maximum m and Σ exp(x − m) as rowFwd computes them.
template <typename T>
__device__ __forceinline__ void routerRowSoftmax(const T *__restrict__ xr, int E, int lane, T &m, T &s) {
  m = -INFINITY;
  for (int j = lane; j < E; j += 32) m = fmax(m, xr[j]);
  m = warpMaxA(m);
  s = 0;
  for (int j = lane; j < E; j += 32) s += expA(xr[j] - m);
  s = warpSumA(s);
}

// routerScore is the score of logit x in T (softmax: exp(x − m)/s as rowFwd rounds it).
template <typename T> __device__ __forceinline__ T routerScore(int score, T x, T m, T s) {
  return score == RouterSoftmax ? expA(x - m) / s : sigm(x);
}

// route_topk: ids [T,K] (NPL = slots per lane, E <= 32·NPL). The selection value of expert e
// is (double)v[e] + (double)bias[e], v the logits (softmax, pre 0) or the scores.
template <typename T, int NPL>
__device__ __forceinline__ void routeTopK(const T *__restrict__ x, const T *__restrict__ bias, int *__restrict__ ids,
                                          long long Tn, int E, int K, int score, int pre, int groups, int kept,
                                          int per, int *status) {
  int lane = threadIdx.x & 31;
  ROUTER_TOKENS(t, Tn) {
  const T *xr = x + t * E;
  T m = 0, s = 0;
  bool onLogits = score == RouterSoftmax && !pre;
  if (score == RouterSoftmax && pre) routerRowSoftmax(xr, E, lane, m, s);
  double sel[NPL];
  bool nan = false;
#pragma unroll
  for (int i = 0; i < NPL; i++) {
    int e = lane + 32 * i;
    sel[i] = 0;
    if (e < E) {
      T v = onLogits ? xr[e] : routerScore<T>(score, xr[e], m, s);
      sel[i] = (double)v + (bias ? (double)bias[e] : 0.0);
      if (sel[i] != sel[i]) nan = true;
    }
  }
  // warp arg-max over this lane's slots with mask ok (bit i: slot i may win)
  auto argmax = [&](unsigned ok, double &bv) -> int {
    int best = -1;
    bv = 0;
#pragma unroll
    for (int i = 0; i < NPL; i++) {
      int e = lane + 32 * i;
      if (e < E && (ok >> i & 1) && (best < 0 || better(sel[i], e, bv, best))) best = e, bv = sel[i];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      double ov = __shfl_xor_sync(0xffffffffu, bv, o);
      int oi = __shfl_xor_sync(0xffffffffu, best, o);
      if (oi >= 0 && (best < 0 || better(ov, oi, bv, best))) best = oi, bv = ov;
    }
    return best;
  };
  unsigned allowed = 0xffffffffu;
  if (groups > 1) {
    int gsize = E / groups;
    double g0 = 0, g1 = 0; // the scores of groups lane and lane+32
    int n = per < gsize ? per : gsize;
    for (int g = 0; g < groups; g++) {
      unsigned in = 0;
#pragma unroll
      for (int i = 0; i < NPL; i++) {
        int e = lane + 32 * i;
        if (e >= g * gsize && e < (g + 1) * gsize) in |= 1u << i;
      }
      double gs = 0;
      for (int k = 0; k < n; k++) {
        double bv;
        int b = argmax(in, bv);
        if ((b & 31) == lane) in &= ~(1u << (b >> 5));
        gs += bv;
      }
      if (gs != gs) nan = true;
      if ((g & 31) == lane) (g < 32 ? g0 : g1) = gs;
    }
    unsigned long long gtaken = 0;
    for (int k = 0; k < kept; k++) {
      int best = -1;
      double bv = 0;
      if (lane < groups && !(gtaken >> lane & 1)) best = lane, bv = g0;
      if (lane + 32 < groups && !(gtaken >> (lane + 32) & 1) && (best < 0 || better(g1, lane + 32, bv, best)))
        best = lane + 32, bv = g1;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        double ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, best, o);
        if (oi >= 0 && (best < 0 || better(ov, oi, bv, best))) best = oi, bv = ov;
      }
      gtaken |= 1ull << best;
    }
    allowed = 0;
#pragma unroll
    for (int i = 0; i < NPL; i++) {
      int e = lane + 32 * i;
      if (e < E && (gtaken >> (e / gsize) & 1)) allowed |= 1u << i;
    }
  }
  for (int k = 0; k < K; k++) {
    double bv;
    int b = argmax(allowed, bv);
    if ((b & 31) == lane) allowed &= ~(1u << (b >> 5));
    if (lane == 0) ids[t * K + k] = b;
  }
  if (nan) atomicOr(status, StatusNaNScore);
  }
}

// routerChosen is the value the probs of slot j are made of: the chosen logit (softmax, pre 0)
// or the chosen score (0 for an id of -1; an id outside [-1, E) sets StatusBadID and counts as -1).
template <typename T>
__device__ __forceinline__ T routerChosen(const T *__restrict__ xr, const int *__restrict__ idr, int j, int E,
                                          int score, bool onLogits, T m, T s, int *status) {
  int e = idr[j];
  if (e < -1 || e >= E) {
    atomicOr(status, 1);
    e = -1;
  }
  if (e < 0) return (T)0;
  return onLogits ? xr[e] : routerScore<T>(score, xr[e], m, s);
}

// routerNorm gives the row's softmax maximum and sum (softmax, pre 0) or the sum of the chosen
// values (sigmoid, K > 1) over the K chosen, as rowFwd computes them for a [T,K] matrix.
template <typename T>
__device__ __forceinline__ void routerNorm(const T *__restrict__ xr, const int *__restrict__ idr, int E, int K, int score,
                                           bool onLogits, T m, T s, int lane, int *status, T &cm, T &cs) {
  cm = -INFINITY;
  cs = 0;
  if (onLogits) {
    for (int j = lane; j < K; j += 32) cm = fmax(cm, routerChosen(xr, idr, j, E, score, onLogits, m, s, status));
    cm = warpMaxA(cm);
    for (int j = lane; j < K; j += 32) cs += expA(routerChosen(xr, idr, j, E, score, onLogits, m, s, status) - cm);
  } else {
    for (int j = lane; j < K; j += 32) cs += routerChosen(xr, idr, j, E, score, onLogits, m, s, status);
  }
  cs = warpSumA(cs);
}

// routerProb is prob j before the scale: the softmax over the chosen (softmax, pre 0), the
// normalised chosen score (sigmoid, K > 1) or the chosen score.
template <typename T>
__device__ __forceinline__ T routerProb(T c, int score, bool onLogits, int K, T cm, T cs) {
  if (onLogits) return expA(c - cm) / cs;
  if (score == RouterSigmoid && K > 1) return c / cs;
  return c;
}

// routerSoft reports whether a sigmoid router's token takes the softmax of its chosen logits
// instead of σ(x_j)/Σσ(x_k) (router.go): its chosen scores sum cs below 2^-64 and it has a
// chosen logit above -inf. If so it sets cm and cs to that softmax's maximum and Σ exp(x − cm)
// over the chosen (an id outside [0, E) takes no part). The same on every lane.
template <typename T>
__device__ __forceinline__ bool routerSoft(const T *__restrict__ xr, const int *__restrict__ idr, int E, int K, int lane,
                                           T &cm, T &cs) {
  if (!(cs < (T)0x1p-64)) return false;
  T m = -INFINITY;
  for (int j = lane; j < K; j += 32)
    if (idr[j] >= 0 && idr[j] < E) m = fmax(m, xr[idr[j]]);
  m = warpMaxA(m);
  if (m == -INFINITY) return false;
  T z = 0;
  for (int j = lane; j < K; j += 32)
    if (idr[j] >= 0 && idr[j] < E) z += expA(xr[idr[j]] - m);
  cm = m;
  cs = warpSumA(z);
  return true;
}

// routerSoftProb is prob j (before the scale) of a token routerSoft took: exp(x − cm)/cs.
template <typename T>
__device__ __forceinline__ T routerSoftProb(const T *__restrict__ xr, const int *__restrict__ idr, int j, int E, T cm,
                                            T cs) {
  int e = idr[j];
  return e >= 0 && e < E ? expA(xr[e] - cm) / cs : (T)0;
}

// route_probs: probs [T,K] = scale · routerProb (scale 1: no multiply).
template <typename T>
__device__ __forceinline__ void routeProbs(const T *__restrict__ x, const int *__restrict__ ids, T *__restrict__ probs,
                                           long long Tn, int E, int K, int score, int pre, double scale, int *status) {
  int lane = threadIdx.x & 31;
  ROUTER_TOKENS(t, Tn) {
  const T *xr = x + t * E;
  const int *idr = ids + t * K;
  bool onLogits = score == RouterSoftmax && !pre;
  T m = 0, s = 0, cm, cs;
  if (score == RouterSoftmax && pre) routerRowSoftmax(xr, E, lane, m, s);
  routerNorm(xr, idr, E, K, score, onLogits, m, s, lane, status, cm, cs);
  bool soft = score == RouterSigmoid && K > 1 && routerSoft(xr, idr, E, K, lane, cm, cs);
  T sc = (T)scale;
  for (int j = lane; j < K; j += 32) {
    T p = soft ? routerSoftProb(xr, idr, j, E, cm, cs)
               : routerProb(routerChosen(xr, idr, j, E, score, onLogits, m, s, status), score, onLogits, K, cm, cs);
    probs[t * K + j] = scale != 1.0 ? p * sc : p;
  }
  }
}

// route_probs_bwd: dlogits [T,E] from dprobs [T,K] (the chain's backward: the scale, rowBwd
// over the chosen, gatherTopKBwd's scatter, then rowBwd over E or the sigmoid's pwBwd).
template <typename T>
__device__ __forceinline__ void routeProbsBwd(const T *__restrict__ x, const int *__restrict__ ids, const T *__restrict__ dp,
                                              T *__restrict__ dx, long long Tn, int E, int K, int score, int pre,
                                              double scale, int *status) {
  int lane = threadIdx.x & 31;
  ROUTER_TOKENS(t, Tn) {
  const T *xr = x + t * E;
  const int *idr = ids + t * K;
  const T *dpr = dp + t * K;
  T *dxr = dx + t * E;
  bool onLogits = score == RouterSoftmax && !pre;
  T m = 0, s = 0, cm, cs;
  if (score == RouterSoftmax && pre) routerRowSoftmax(xr, E, lane, m, s);
  routerNorm(xr, idr, E, K, score, onLogits, m, s, lane, status, cm, cs);
  bool soft = score == RouterSigmoid && K > 1 && routerSoft(xr, idr, E, K, lane, cm, cs);
  T sc = (T)scale;
  // the scaled gradient, rounded (mulRN) as the engine's MulScalar stores it: a plain product
  // here would be fused into the subtraction below
  auto grad = [&](int j) -> T { return scale != 1.0 ? mulRN(dpr[j], sc) : dpr[j]; };
  bool norm = onLogits || (score == RouterSigmoid && K > 1);
  // d = Σ_j g_j·y_j over the chosen (rowBwd), y the probs before the scale
  T d = 0;
  if (norm) {
    for (int j = lane; j < K; j += 32) {
      T y = soft ? routerSoftProb(xr, idr, j, E, cm, cs)
                 : routerProb(routerChosen(xr, idr, j, E, score, onLogits, m, s, status), score, onLogits, K, cm, cs);
      d += grad(j) * y;
    }
    d = warpSumA(d);
  }
  // dc_j, the gradient of chosen value j (a token routerSoft took: of its chosen logit)
  auto dchosen = [&](int j) -> T {
    T g = grad(j);
    if (!norm) return g;
    if (soft) return routerSoftProb(xr, idr, j, E, cm, cs) * (g - d);
    T c = routerChosen(xr, idr, j, E, score, onLogits, m, s, status);
    T y = routerProb(c, score, onLogits, K, cm, cs);
    return onLogits ? y * (g - d) : (g - d) / cs;
  };
  // ds_e = 0 + Σ_{k: ids[k] = e} dc_k in k order (gatherTopKBwd: each dc_k rounded before it
  // is added, so addRN keeps the compiler from fusing the add into dc_k's multiply)
  auto scatter = [&](int e) -> T {
    T v = 0;
    for (int k = 0; k < K; k++)
      if (idr[k] == e) v = addRN(v, dchosen(k));
    return v;
  };
  if (onLogits) {
    for (int e = lane; e < E; e += 32) dxr[e] = scatter(e);
  } else if (score == RouterSoftmax) {
    T dd = 0;
    for (int e = lane; e < E; e += 32) dd += scatter(e) * routerScore<T>(score, xr[e], m, s);
    dd = warpSumA(dd);
    for (int e = lane; e < E; e += 32) dxr[e] = routerScore<T>(score, xr[e], m, s) * (scatter(e) - dd);
  } else {
    for (int e = lane; e < E; e += 32) {
      T v = sigm(xr[e]);
      dxr[e] = soft ? scatter(e) : scatter(e) * v * ((T)1 - v); // soft: 1 − σ rounds to 1
    }
  }
  for (int k = lane; k < K; k += 32)
    if (idr[k] < -1 || idr[k] >= E) atomicOr(status, 1);
  }
}

#define ROUTER_TOPK(SUF, T, NPL)                                                                  \
  extern "C" __global__ void __launch_bounds__(128)                                                \
      route_topk##NPL##_##SUF(const T *x, const T *b, int *ids, long long n, int E, int K, int sc, int pre, int g, \
                              int kept, int per, int *st) { gdcEnter();                            \
    routeTopK<T, NPL>(x, b, ids, n, E, K, sc, pre, g, kept, per, st);                              \
  }
#define ROUTER(SUF, T)                                                                             \
  ROUTER_TOPK(SUF, T, 4)                                                                           \
  ROUTER_TOPK(SUF, T, 8)                                                                           \
  ROUTER_TOPK(SUF, T, 32)                                                                          \
  extern "C" __global__ void __launch_bounds__(128)                                                \
      route_probs_##SUF(const T *x, const int *ids, T *p, long long n, int E, int K, int sc, int pre, double scale, \
                        int *st) { gdcEnter();                                                     \
    routeProbs<T>(x, ids, p, n, E, K, sc, pre, scale, st);                                         \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(128)                                                \
      route_probs_bwd_##SUF(const T *x, const int *ids, const T *dp, T *dx, long long n, int E, int K, int sc, \
                            int pre, double scale, int *st) { gdcEnter();                          \
    routeProbsBwd<T>(x, ids, dp, dx, n, E, K, sc, pre, scale, st);                                 \
  }
ROUTER(f32, float)
ROUTER(f64, double)
#undef ROUTER
#undef ROUTER_TOPK
#undef ROUTER_TOKENS
