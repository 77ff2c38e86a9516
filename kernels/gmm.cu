// gmm.cu: the grouped expert matmul's device-side set-up, compiled into gomoe_gmm.fatbin.
//
// A grouped matmul runs one GEMM per expert whose sizes come from the routing plan. Nothing
// about those sizes is read on the host: gmm_prepare (one thread per expert) turns the plan's
// counts and offsets into per-group problem sizes, operand pointers and leading dimensions in a
// device "group table", and the GEMM kernel (CUTLASS's ptr-array grouped GEMM on sm_90a, or
// its sm_80 grouped GEMM elsewhere: gmm_sm90.cu, gmm_sm80.cu) reads that table. The launch
// parameters of both therefore depend only on the shapes, never on the routing.
//
// The group table of G groups, in one buffer (byte offsets):
//   shapes   int32 [G][3]   (m, n, k) of each group                  at 0
//   ptrA     void* [G]                                             at gmmTableA(G)
//   ptrB, ptrC, ptrD        (C = D: the accumulate form reads D)    following, 8·G bytes each
//   ldA, ldB, ldC, ldD   int64 [G] leading dimensions (elements)    following, 8·G bytes each
// CUTLASS 3.x's packed strides for these layouts are one int64 each (the others are static),
// and CUTLASS 2.x takes int64 leading-dimension arrays, so one table serves both.
//
// The three forms (row-major storage; e = expert, o = offsets[e], n = counts[e]):
//   0 forward        z[o:o+n]   = xp[o:o+n] · W[e]     m=n, n=N, k=H   A row-major,  B row-major
//   1 rows gradient  dxp[o:o+n] = dz[o:o+n] · W[e]ᵀ    m=n, n=H, k=N   A row-major,  B column-major
//   2 weight grad.   dW[e]      = xp[o:o+n]ᵀ · dz[o:o+n] m=H, n=N, k=n A column-major, B row-major
// An expert with no rows gets m = 0 (no tiles): gmm_prepare clears its rows (forms 0, 1) with
// the other pad rows, and its dW (form 2).
#include "gdc.cuh"
#include "syncprobe.cuh"

#include <stdint.h>

__device__ __forceinline__ long long gmmAlign16(long long b) { return (b + 15) & ~15LL; }

// A segment outside [0, R) (a corrupt plan: counts or offsets negative, or offset + count
// past R) gets no GEMM (m = 0), and gmm_prepare sets GMM_STATUS_BAD_PLAN in *status, which the
// host reads at its next status check; gmm_prepare clears such an expert's dW.
#define GMM_STATUS_BAD_PLAN 32

__device__ __forceinline__ bool gmmSegmentOK(long long o, long long n, long long R) {
  return o >= 0 && n >= 0 && o <= R && n <= R - o;
}

// gmmTable writes the group table (one thread per expert, grid-stride).
__device__ __forceinline__ void gmmTable(int form, const int *__restrict__ counts, const int *__restrict__ offsets,
                                         int E, long long R, long long H, long long N, long long esize,
                                         const char *a, const char *b, char *d, char *table, int *status) {
  long long G = E;
  int *shapes = (int *)table;
  long long base = gmmAlign16(12 * G);
  const char **pa = (const char **)(table + base);
  const char **pb = pa + G;
  char **pc = (char **)(pb + G);
  char **pd = pc + G;
  long long *la = (long long *)(pd + G);
  long long *lb = la + G, *lc = lb + G, *ld = lc + G;
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < E; e += gridDim.x * blockDim.x) {
    long long o = offsets[e], n = counts[e];
    if (!gmmSegmentOK(o, n, R)) {
      atomicOr(status, GMM_STATUS_BAD_PLAN);
      o = 0, n = 0;
    }
    long long m = n, nn = N, k = H;
    const char *A, *B;
    char *D;
    long long lda, ldb, ldd;
    if (form == 0) {
      A = a + o * H * esize, lda = H;
      B = b + (long long)e * H * N * esize, ldb = N;
      D = d + o * N * esize, ldd = N;
    } else if (form == 1) {
      nn = H, k = N;
      A = a + o * N * esize, lda = N;
      B = b + (long long)e * H * N * esize, ldb = N;
      D = d + o * H * esize, ldd = H;
    } else {
      m = n > 0 ? H : 0, nn = N, k = n;
      A = a + o * H * esize, lda = H;
      B = b + o * N * esize, ldb = N;
      D = d + (long long)e * H * N * esize, ldd = N;
    }
    shapes[3 * e] = (int)m;
    shapes[3 * e + 1] = (int)nn;
    shapes[3 * e + 2] = (int)k;
    pa[e] = A, pb[e] = B, pc[e] = D, pd[e] = D;
    la[e] = lda, lb[e] = ldb, lc[e] = ldd, ld[e] = ldd;
  }
}

// gmmZeroRows clears each row r < R of out (rowBytes bytes) whose tokenOf[r] is negative: the
// pad rows of every segment and the unused rows past offsets[E]. Each thread checks one row
// (grid-stride over blocks of rows); each warp then clears its flagged rows one after another
// with all its lanes. A dropless plan without masked ids has no such row, and the scan costs a
// read of tokenOf.
__device__ __forceinline__ void gmmZeroRows(char *out, const int *__restrict__ tokenOf, long long R,
                                            long long rowBytes) {
  int lane = threadIdx.x & 31;
  bool vec = (((unsigned long long)out | (unsigned long long)rowBytes) & 15) == 0;
  for (long long r0 = (long long)blockIdx.x * blockDim.x; r0 < R; r0 += (long long)gridDim.x * blockDim.x) {
    long long r = r0 + threadIdx.x;
    unsigned pad = __ballot_sync(0xffffffffu, r < R && tokenOf[r] < 0);
    while (pad) {
      int l = __ffs(pad) - 1;
      pad &= pad - 1;
      char *p = out + (r - lane + l) * rowBytes;
      if (vec) {
        uint4 z = make_uint4(0, 0, 0, 0);
        for (long long i = lane; i < rowBytes / 16; i += 32) ((uint4 *)p)[i] = z;
      } else {
        for (long long i = lane; i < rowBytes; i += 32) p[i] = 0;
      }
    }
  }
}

// gmmZeroEmpty clears dw[e] (matBytes bytes) of each expert with no rows: counts[e] == 0, or a
// segment outside [0, R) (which gmmTable flags). Work item j (grid-stride over blocks) is
// expert j / chunks, which it clears from 16-byte word (byte, when dw or matBytes is not 16-byte
// aligned) (j % chunks)·blockDim.x + threadIdx.x on, every chunks·blockDim.x words.
__device__ __forceinline__ void gmmZeroEmpty(char *dw, const int *__restrict__ counts,
                                             const int *__restrict__ offsets, int E, long long R,
                                             long long matBytes, int chunks) {
  // Most plans give every expert rows: a block first checks all experts at once (independent
  // loads, one round trip for E up to blockDim.x) and leaves if none is empty, rather than
  // checking its work items' experts one after another, a chain of round trips (gmm_prepare
  // took 11.5 µs that way at E = 128 on an H100, and 4.2–4.7 µs with this check).
  int any = 0;
  for (int e = threadIdx.x; e < E; e += blockDim.x)
    any |= counts[e] == 0 || !gmmSegmentOK(offsets[e], counts[e], R);
  if (!__syncthreads_or(any)) return;
  for (long long j = blockIdx.x; j < (long long)E * chunks; j += gridDim.x) {
    int e = (int)(j / chunks), c = (int)(j % chunks);
    if (counts[e] != 0 && gmmSegmentOK(offsets[e], counts[e], R)) continue;
    char *p = dw + (long long)e * matBytes;
    long long step = (long long)chunks * blockDim.x, i0 = (long long)c * blockDim.x + threadIdx.x;
    if ((((unsigned long long)p | (unsigned long long)matBytes) & 15) == 0) {
      uint4 z = make_uint4(0, 0, 0, 0);
      for (long long i = i0; i < matBytes / 16; i += step) ((uint4 *)p)[i] = z;
    } else {
      for (long long i = i0; i < matBytes; i += step) p[i] = 0;
    }
  }
}

// gmm_prepare writes form's group table from the plan's counts and offsets and, when zero is
// set, clears what of d belongs to no expert (forms 0, 1: rows whose tokenOf is negative; form
// 2: dW[e] of the experts with no rows), all in one launch: the table and the cleared memory
// do not overlap, and the GEMM that reads both comes after it on the stream.
extern "C" __global__ void __launch_bounds__(256)
gmm_prepare(int form, const int *__restrict__ counts, const int *__restrict__ offsets, int E,
            long long R, long long H, long long N, long long esize, const char *a, const char *b,
            char *d, char *table, int *status, const int *__restrict__ tokenOf, int zero, int chunks) {
  gdcEnter();
  gmmTable(form, counts, offsets, E, R, H, N, esize, a, b, d, table, status);
  if (!zero) return;
  if (form == 2) {
    gmmZeroEmpty(d, counts, offsets, E, R, H * N * esize, chunks);
  } else {
    gmmZeroRows(d, tokenOf, R, (form == 0 ? N : H) * esize);
  }
}
