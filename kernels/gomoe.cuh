// gomoe.cuh: shared device helpers for gomoe's CUDA kernels (see gomoe.cu).
//
// Rounding helpers use the _rn intrinsics so that nvcc never contracts a multiply and an add
// into an FMA: the CPU kernels in package kernels round every product and every sum on its own,
// and the GPU must give the same bits.
#pragma once

#include <cuda_bf16.h>
#include <stdint.h>

#include "gdc.cuh"

namespace gomoe {

// Accumulation type of a data type: float32 and bfloat16 accumulate in float32, float64 in
// float64.
template <typename T> struct Acc;
template <> struct Acc<float> { typedef float type; };
template <> struct Acc<double> { typedef double type; };
template <> struct Acc<__nv_bfloat16> { typedef float type; };

__device__ __forceinline__ float toAcc(float v) { return v; }
__device__ __forceinline__ double toAcc(double v) { return v; }
__device__ __forceinline__ float toAcc(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void fromAcc(float a, float &o) { o = a; }
__device__ __forceinline__ void fromAcc(double a, double &o) { o = a; }
__device__ __forceinline__ void fromAcc(float a, __nv_bfloat16 &o) { o = __float2bfloat16_rn(a); }

__device__ __forceinline__ float addRN(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double addRN(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float mulRN(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mulRN(double a, double b) { return __dmul_rn(a, b); }

// Pack is N elements of T moved as one load or store (16 bytes in the vector kernels).
template <typename T, int N> struct __align__(sizeof(T) * N) Pack { T v[N]; };

// Streaming (evict-first) loads and stores of a Pack through the built-in vector type of the
// same size, so that 16-byte packs move with one 128-bit instruction.
template <int S> struct Raw;
template <> struct Raw<16> { typedef uint4 type; };
template <> struct Raw<8> { typedef uint2 type; };
template <> struct Raw<4> { typedef unsigned int type; };
template <> struct Raw<2> { typedef unsigned short type; };

template <typename P> __device__ __forceinline__ P ldcs(const P *p) {
  typedef typename Raw<sizeof(P)>::type R;
  R r = __ldcs((const R *)p);
  P v;
  memcpy(&v, &r, sizeof(P));
  return v;
}
template <typename P> __device__ __forceinline__ void stcs(P *p, const P &v) {
  typedef typename Raw<sizeof(P)>::type R;
  R r;
  memcpy(&r, &v, sizeof(P));
  __stcs((R *)p, r);
}
template <typename P> __device__ __forceinline__ P ld(const P *p) {
  typedef typename Raw<sizeof(P)>::type R;
  R r = *(const R *)p;
  P v;
  memcpy(&v, &r, sizeof(P));
  return v;
}
template <typename P> __device__ __forceinline__ void st(P *p, const P &v) {
  typedef typename Raw<sizeof(P)>::type R;
  R r;
  memcpy(&r, &v, sizeof(P));
  *(R *)p = r;
}

// packFromAcc rounds N accumulators into a Pack; bfloat16 converts two at a time
// (cvt.rn.bf16x2.f32, the same round-to-nearest-even as one at a time, half the instructions).
template <typename T, int N, typename A>
__device__ __forceinline__ void packFromAcc(const A *a, Pack<T, N> &o) {
#pragma unroll
  for (int j = 0; j < N; j++) fromAcc(a[j], o.v[j]);
}
template <int N>
__device__ __forceinline__ void packFromAcc(const float *a, Pack<__nv_bfloat16, N> &o) {
  if (N % 2 == 0) {
#pragma unroll
    for (int j = 0; j < N; j += 2) {
      __nv_bfloat162 h = __floats2bfloat162_rn(a[j], a[j + 1]);
      o.v[j] = h.x;
      o.v[j + 1] = h.y;
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; j++) o.v[j] = __float2bfloat16_rn(a[j]);
  }
}

// Width tag of the element-wise loops below: V elements at a time.
template <int V> struct Width {
  static constexpr int value = V;
};

// aligned16 reports whether every pointer is 16-byte aligned (null pointers count as aligned).
__device__ __forceinline__ bool aligned16(const void *a, const void *b = nullptr, const void *c = nullptr,
                                          const void *d = nullptr, const void *e = nullptr) {
  return ((((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d | (uintptr_t)e) & 15) == 0);
}

// ewiseN runs f(Width<V>{}, i) for elements [i, i+V) of n, grid-stride, when vec is set (every
// pointer f touches 16-byte aligned), then f(Width<1>{}, i) for the rest one at a time. Each
// element goes through the same arithmetic at either width, so the width never changes a
// result; launch it with about n/V threads. ewise<T> moves 16 bytes of T at a time.
template <int V, typename F> __device__ __forceinline__ void ewiseN(long long n, bool vec, F f) {
  long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x, step = (long long)gridDim.x * blockDim.x;
  long long nv = vec ? n / V * V : 0;
  for (long long i = tid * V; i < nv; i += step * V) f(Width<V>{}, i);
  for (long long i = nv + tid; i < n; i += step) f(Width<1>{}, i);
}
template <typename T, typename F> __device__ __forceinline__ void ewise(long long n, bool vec, F f) {
  ewiseN<16 / sizeof(T)>(n, vec, f);
}

// loadAcc reads V elements of p from i (one load for V > 1) into accumulators; storeAcc rounds V
// accumulators into p from i (one store).
template <int V, typename T, typename A> __device__ __forceinline__ void loadAcc(const T *p, long long i, A *x) {
  Pack<T, V> pk = ld((const Pack<T, V> *)(p + i));
#pragma unroll
  for (int j = 0; j < V; j++) x[j] = toAcc(pk.v[j]);
}
template <int V, typename T, typename A> __device__ __forceinline__ void storeAcc(T *p, long long i, const A *x) {
  Pack<T, V> pk;
  packFromAcc(x, pk);
  st((Pack<T, V> *)(p + i), pk);
}

// dotTerm adds a·b to a float64 partial sum: float32 operands multiply in float64 (exact),
// float64 ones round the product once, like the CPU.
__device__ __forceinline__ double dotTerm(double s, float a, float b) {
  return __dadd_rn(s, __dmul_rn((double)a, (double)b));
}
__device__ __forceinline__ double dotTerm(double s, double a, double b) {
  return __dadd_rn(s, __dmul_rn(a, b));
}

// Order-preserving 64-bit key of a probability for drop-by-prob: larger prob, larger key.
// -0 counts as +0 (the CPU compares float64 values, where -0 == +0) and NaN sorts below
// everything (the CPU rejects NaN; the GPU flags it in the status word).
__device__ __forceinline__ unsigned long long probKey(double x) {
  if (x != x) return 0ull;
  if (x == 0.0) x = 0.0;
  unsigned long long b = (unsigned long long)__double_as_longlong(x);
  return (b >> 63) ? ~b : (b | 0x8000000000000000ull);
}

// planRow reads rowOf[i] for a data kernel: a row in [0, R), or -1 (a dropped slot). Any other
// value, which only a plan not made by the plan kernels holds (a plan filled by hand), reads as
// -1 and sets status bit 128, so that no permute or combine kernel follows a row outside its
// buffers. checkRow is its check of a row already loaded: a kernel that loads rowOf ahead of its
// use (with other loads, or for the next token) checks it where it uses it, since the check
// waits for the load. planToken does the same for tokenOf[r] and [0, T).
__device__ __forceinline__ int checkRow(int r, long long R, int *status) {
  if (r < -1 || r >= R) {
    atomicOr(status, 128);
    r = -1;
  }
  return r;
}
__device__ __forceinline__ int planRow(const int *__restrict__ rowOf, long long i, long long R, int *status) {
  return checkRow(rowOf[i], R, status);
}
__device__ __forceinline__ long long planToken(const int *__restrict__ tokenOf, long long r, long long T, int *status) {
  long long t = tokenOf[r];
  if (t < -1 || t >= T) {
    atomicOr(status, 128);
    t = -1;
  }
  return t;
}

// zeroRows clears, with the whole block, every row r in [r0, r0+nrows) of buf (rows of nvec
// V-vectors) whose tokenOf[r] < 0 (or outside [0, T): planToken). Each warp reads 32 entries of
// tokenOf at once (a lane each) and takes the pad rows' mask from a ballot: every warp finds the
// same mask, so the block clears the same rows with no barrier. (Read one row at a time, a zero
// block's 32 dependent loads ran after the token blocks and cost the unpermute backward up to
// 6 %: docs/gpu-bench.md.) The block size must be a multiple of 32.
template <typename V>
__device__ __forceinline__ void zeroRows(V *buf, long long nvec, const int *tokenOf, long long R,
                                         long long T, long long r0, int nrows, int *status) {
  typedef typename Raw<sizeof(V)>::type Z;
  Z z;
  memset(&z, 0, sizeof(Z));
  const int lane = threadIdx.x & 31;
  for (int j0 = 0; j0 < nrows; j0 += 32) {
    long long r = r0 + j0 + lane;
    bool pad = j0 + lane < nrows && r < R && planToken(tokenOf, r, T, status) < 0;
    unsigned m = __ballot_sync(0xffffffffu, pad);
    while (m) {
      int j = __ffs(m) - 1;
      m &= m - 1;
      Z *dst = (Z *)(buf + (r0 + j0 + j) * nvec);
      for (long long i = threadIdx.x; i < nvec; i += blockDim.x) dst[i] = z;
    }
  }
}

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
// ldPack loads a Pack with ldPolicy's cache policy, through the built-in vector type of its size.
template <typename P> __device__ __forceinline__ P ldPack(const P *p, int smode) {
  typedef typename Raw<sizeof(P)>::type R;
  R r = ldPolicy((const R *)p, smode);
  P v;
  memcpy(&v, &r, sizeof(P));
  return v;
}

// loadPacks reads src[i0 + u·blockDim.x] into v[u] for u < U, where below n: U packs of a row
// in flight per thread (permute forward, unpermute backward's rows).
template <typename P, int U>
__device__ __forceinline__ void loadPacks(P *v, const P *__restrict__ src, long long i0, long long n, int smode) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    long long i = i0 + (long long)u * blockDim.x;
    if (i < n) v[u] = ldPack(src + i, smode);
  }
}
template <typename P> __device__ __forceinline__ void stPack(P *p, const P &v, int smode) {
  typedef typename Raw<sizeof(P)>::type R;
  R r;
  memcpy(&r, &v, sizeof(P));
  stPolicy((R *)p, r, smode);
}

// Warp-wide sum and maximum in the accumulator type (xor butterfly: every lane gets the result),
// and exp in the accumulator type, for the one-warp-per-row kernels (rowop, scale_rows, rmsnorm,
// cross_entropy).
template <typename A> __device__ __forceinline__ A warpSumA(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename A> __device__ __forceinline__ A warpMaxA(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float expA(float x) { return expf(x); }
__device__ __forceinline__ double expA(double x) { return exp(x); }

// Grid-stride loop over n elements (the element-wise kernels of bias.cuh, relu.cuh and
// embedding.cuh).
#define NN_GRID_STRIDE(i, n)                                                                       \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                    \
       i += (long long)gridDim.x * blockDim.x)

// The routing losses' final sums (balance_loss.cuh, z_loss.cuh): one block of LOSS_LANES
// threads, and the output gradient of their backward kernels.
#define LOSS_LANES 256

// lossDy is the output gradient: *dyp if given, else dyv.
template <typename T> __device__ __forceinline__ double lossDy(const T *dyp, double dyv) {
  return dyp ? (double)dyp[0] : dyv;
}

// lossTree adds the block's LOSS_LANES values in red[] with a fixed pairwise tree; the result
// is in red[0] for every thread.
__device__ __forceinline__ void lossTree(double *red) {
  __syncthreads();
  for (int st = LOSS_LANES / 2; st > 0; st >>= 1) {
    if (threadIdx.x < st) red[threadIdx.x] = __dadd_rn(red[threadIdx.x], red[threadIdx.x + st]);
    __syncthreads();
  }
}

}  // namespace gomoe
