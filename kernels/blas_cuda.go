//go:build gomoecuda

package kernels

/*
#cgo LDFLAGS: -lcublas
#include <stdint.h>
#include <cublas_v2.h>

// gomoe_blas_stream sets h's stream and, after it (cublasSetStream resets the workspace),
// gomoe's workspace: with it cuBLAS allocates nothing while a graph is being captured.
static int gomoe_blas_stream(cublasHandle_t h, cudaStream_t stream, uintptr_t work, size_t workBytes) {
	cublasStatus_t s = cublasSetStream(h, stream);
	if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetWorkspace(h, (void *)work, workBytes);
	return (int)s;
}

static int gomoe_blas_create(cublasHandle_t *out, cudaStream_t stream, uintptr_t work, size_t workBytes) {
	cublasHandle_t h;
	cublasStatus_t s = cublasCreate(&h);
	if (s != CUBLAS_STATUS_SUCCESS) return (int)s;
	s = (cublasStatus_t)gomoe_blas_stream(h, stream, work, workBytes);
	if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST);
	// No TF32: float32 GEMMs must match the CPU's float32 results within rounding.
	if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
	if (s != CUBLAS_STATUS_SUCCESS) {
		cublasDestroy(h);
		return (int)s;
	}
	*out = h;
	return 0;
}

static int gomoe_blas_destroy(cublasHandle_t h) { return (int)cublasDestroy(h); }

// dt: A's and B's type, ct: C's type; 0 float32, 1 float64, 2 bfloat16 (the kernels.DType
// values; float64 only with float64). Column-major arguments.
static int gomoe_gemm(cublasHandle_t h, int dt, int ct, int ta, int tb, int m, int n, int k,
		double alpha, uintptr_t A, int lda, uintptr_t B, int ldb, double beta, uintptr_t C, int ldc) {
	cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
	cublasOperation_t ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
	if (dt == 1) {
		return (int)cublasDgemm(h, oa, ob, m, n, k, &alpha, (const double *)A, lda,
			(const double *)B, ldb, &beta, (double *)C, ldc);
	}
	float fa = (float)alpha, fb = (float)beta;
	cudaDataType t = dt == 2 ? CUDA_R_16BF : CUDA_R_32F;
	cudaDataType tc = ct == 2 ? CUDA_R_16BF : CUDA_R_32F;
	return (int)cublasGemmEx(h, oa, ob, m, n, k, &fa, (const void *)A, t, lda, (const void *)B, t, ldb,
		&fb, (void *)C, tc, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

// gomoe_gemm_grouped runs cublasGemmGroupedBatchedEx (cuBLAS 12.5 and later) for float32 or
// bfloat16 data. ptrs is a device array of 3·total pointers: all A, then all B, then all C.
// It returns -1 when this cuBLAS has no grouped GEMM.
static int gomoe_gemm_grouped(cublasHandle_t h, int dt, int count, const cublasOperation_t *ta,
		const cublasOperation_t *tb, const int *m, const int *n, const int *k, const float *alpha,
		const int *lda, const int *ldb, const float *beta, const int *ldc, const int *size,
		int total, uintptr_t ptrs) {
#if defined(CUBLAS_VERSION) && CUBLAS_VERSION >= 120500
	cudaDataType t = dt == 2 ? CUDA_R_16BF : CUDA_R_32F;
	const void *const *A = (const void *const *)ptrs;
	const void *const *B = A + total;
	void *const *C = (void *const *)(A + 2 * (uintptr_t)total);
	return (int)cublasGemmGroupedBatchedEx(h, ta, tb, m, n, k, alpha, A, t, lda, B, t, ldb,
		beta, C, t, ldc, count, size, CUBLAS_COMPUTE_32F);
#else
	return -1;
#endif
}

static int gomoe_has_grouped(void) {
#if defined(CUBLAS_VERSION) && CUBLAS_VERSION >= 120500
	return 1;
#else
	return 0;
#endif
}
*/
import "C"

import (
	"fmt"
	"math"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
)

// Matrix multiplication on cuBLAS.
//
// Every CUDA value has its own cuBLAS handle, created on first use inside Do (so on the
// context's thread), bound to the default stream: GEMMs are ordered with gomoe's kernels and
// do not wait for the host. The handle uses host pointer mode and the default math mode:
// float32 GEMMs compute in float32 (no TF32), bfloat16 GEMMs read and write bfloat16 and
// accumulate in float32, float64 GEMMs are cublasDgemm. cuBLAS gives the same bits on every
// run on one GPU model and toolkit (it uses no atomics by default), but not the CPU's bits:
// the summation order differs, so GPU and CPU agree within rounding only.
//
// Where no device-sized grouped GEMM applies (gmmDevice), the grouped matmul launchers size one
// cuBLAS GEMM per expert, so they must know the plan's counts and offsets on the host: each
// such call reads them (2E+1 int32) with one small synchronous copy from the device, which
// waits for all work enqueued before it. That drains the GPU's queue
// once per call (8–11 µs each: docs/grouped-gemm.md).

// blasState is the cuBLAS state of one CUDA value.
type blasState struct {
	mu      sync.Mutex
	h       C.cublasHandle_t
	work    cu.DevicePtr // cuBLAS's workspace (blasWorkBytes)
	ptrs    cu.DevicePtr // device scratch for the grouped GEMM's pointer arrays
	ptrsCap int64        // its size in bytes
	noGroup bool         // this cuBLAS has no grouped GEMM
	lastErr error        // the last grouped GEMM failure (the call then looped instead)
	seg     []int32      // host copy of counts and offsets
}

var blasStates struct {
	sync.Mutex
	m map[*CUDA]*blasState
}

// hasGroupedGEMM reports whether gomoe was built against a cuBLAS with
// cublasGemmGroupedBatchedEx (12.5 or later).
var hasGroupedGEMM = C.gomoe_has_grouped() != 0

// useGroupedGEMM selects cublasGemmGroupedBatchedEx for float32 and bfloat16 grouped matmuls
// (where cuBLAS has it); false issues one GEMM per expert. Tests flip it to check both paths.
var useGroupedGEMM = true

// blas returns c's cuBLAS state, creating the handle on first use. It must run inside c.do.
func (c *CUDA) blas() (*blasState, error) {
	blasStates.Lock()
	defer blasStates.Unlock()
	if st, ok := blasStates.m[c]; ok {
		return st, nil
	}
	work, err := cu.MemAlloc(blasWorkBytes)
	if err != nil {
		return nil, fmt.Errorf("gomoe: allocating cuBLAS's workspace: %w", err)
	}
	var h C.cublasHandle_t
	if s := C.gomoe_blas_create(&h, C.cudaStream_t(c.stream), C.uintptr_t(work), blasWorkBytes); s != 0 {
		_ = cu.MemFree(work)
		return nil, blasError("cublasCreate", int(s))
	}
	if blasStates.m == nil {
		blasStates.m = map[*CUDA]*blasState{}
	}
	st := &blasState{h: h, work: work}
	blasStates.m[c] = st
	return st, nil
}

// closeBLAS destroys c's cuBLAS handle and frees its scratch memory (no-op if c never ran a
// GEMM). Close must call it before the context goes away.
func (c *CUDA) closeBLAS() error {
	blasStates.Lock()
	st, ok := blasStates.m[c]
	delete(blasStates.m, c)
	blasStates.Unlock()
	if !ok {
		return nil
	}
	return c.run(func() error {
		st.mu.Lock()
		defer st.mu.Unlock()
		err := cu.Synchronize()
		if st.ptrs != 0 {
			if err2 := cu.MemFree(st.ptrs); err == nil {
				err = err2
			}
			st.ptrs, st.ptrsCap = 0, 0
		}
		if s := C.gomoe_blas_destroy(st.h); s != 0 && err == nil {
			err = blasError("cublasDestroy", int(s))
		}
		if err2 := cu.MemFree(st.work); err == nil {
			err = err2
		}
		return err
	})
}

// BLASStatusError is a cuBLAS call's failure status.
type BLASStatusError struct {
	Call   string // the cuBLAS function
	Status int    // its cublasStatus_t
}

func (e *BLASStatusError) Error() string {
	return fmt.Sprintf("gomoe: cuBLAS %s: %s", e.Call, blasStatusName(e.Status))
}

func blasError(call string, s int) error { return &BLASStatusError{call, s} }

func blasStatusName(s int) string {
	switch s {
	case 0:
		return "CUBLAS_STATUS_SUCCESS"
	case 1:
		return "CUBLAS_STATUS_NOT_INITIALIZED"
	case 3:
		return "CUBLAS_STATUS_ALLOC_FAILED"
	case 7:
		return "CUBLAS_STATUS_INVALID_VALUE"
	case 8:
		return "CUBLAS_STATUS_ARCH_MISMATCH"
	case 11:
		return "CUBLAS_STATUS_MAPPING_ERROR"
	case 13:
		return "CUBLAS_STATUS_EXECUTION_FAILED"
	case 14:
		return "CUBLAS_STATUS_INTERNAL_ERROR"
	case 15:
		return "CUBLAS_STATUS_NOT_SUPPORTED"
	case 16:
		return "CUBLAS_STATUS_LICENSE_ERROR"
	}
	return fmt.Sprintf("cublasStatus_t(%d)", s)
}

// rowGemm is one row-major problem C[m,n] = alpha·op(A)·op(B) + beta·C, where op(A) is
// [m,k] (A is [k,m] when ta), op(B) is [k,n] (B is [n,k] when tb), and lda, ldb, ldc are the
// row strides in elements.
type rowGemm struct {
	ta, tb     bool
	m, n, k    int
	a, b, c    cu.DevicePtr
	lda, ldb   int
	ldc        int
	alpha, bet float64
}

func (p rowGemm) check(what string) error {
	const maxInt = math.MaxInt32
	for _, v := range []struct {
		name string
		v    int
	}{{"m", p.m}, {"n", p.n}, {"k", p.k}} {
		if v.v < 1 || v.v > maxInt {
			return fmt.Errorf("gomoe: %s: %s=%d, want 1 <= %s <= %d", what, v.name, v.v, v.name, maxInt)
		}
	}
	ra, rb := p.k, p.n // row widths of A and B as stored
	if p.ta {
		ra = p.m
	}
	if p.tb {
		rb = p.k
	}
	for _, v := range []struct {
		name    string
		ld, min int
	}{{"lda", p.lda, ra}, {"ldb", p.ldb, rb}, {"ldc", p.ldc, p.n}} {
		if v.ld < v.min || v.ld > maxInt {
			return fmt.Errorf("gomoe: %s: %s=%d, want %d <= %s <= %d (row-major)", what, v.name, v.ld, v.min, v.name, maxInt)
		}
	}
	if p.a == 0 || p.b == 0 || p.c == 0 {
		return fmt.Errorf("gomoe: %s: null device pointer", what)
	}
	return nil
}

// run issues the problem on cuBLAS: a row-major C is the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ,
// so A and B swap places and keep their transpose flags.
func (p rowGemm) run(st *blasState, d DType) error { return p.runAs(st, d, d) }

// runAs is run with A and B of type d and C of type cd (float32 or bfloat16 each; float64
// only with float64).
func (p rowGemm) runAs(st *blasState, d, cd DType) error {
	if (d == F64) != (cd == F64) {
		return fmt.Errorf("gomoe: cuBLAS gemm: %v operands with a %v output", d, cd)
	}
	if s := C.gomoe_gemm(st.h, C.int(d), C.int(cd), cbool(p.tb), cbool(p.ta), C.int(p.n), C.int(p.m), C.int(p.k),
		C.double(p.alpha), C.uintptr_t(p.b), C.int(p.ldb), C.uintptr_t(p.a), C.int(p.lda),
		C.double(p.bet), C.uintptr_t(p.c), C.int(p.ldc)); s != 0 {
		name := "cublasGemmEx"
		if d == F64 {
			name = "cublasDgemm"
		}
		return blasError(name, int(s))
	}
	return nil
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// Gemm computes the row-major C[m,n] = alpha·op(A)·op(B) + beta·C on the default stream,
// where op(A) = A [m,k] (or Aᵀ for A [k,m] when transA), op(B) = B [k,n] (or Bᵀ for B [n,k]
// when transB), and lda, ldb, ldc are row strides in elements. F32 computes in float32 (no
// TF32); BF16 reads and writes bfloat16 and accumulates in float32; F64 is cublasDgemm.
// alpha and beta are rounded to float32 for F32 and BF16. With beta 0, C is not read.
func (c *CUDA) Gemm(d DType, transA, transB bool, m, n, k int, alpha float64, a cu.DevicePtr, lda int, b cu.DevicePtr, ldb int, beta float64, cmat cu.DevicePtr, ldc int) error {
	if !d.valid() {
		return fmt.Errorf("gomoe: cuBLAS gemm: unknown dtype %v", d)
	}
	p := rowGemm{ta: transA, tb: transB, m: m, n: n, k: k, a: a, b: b, c: cmat, lda: lda, ldb: ldb, ldc: ldc, alpha: alpha, bet: beta}
	if err := p.check("cuBLAS gemm"); err != nil {
		return err
	}
	return c.withBLAS(func(st *blasState) error { return p.run(st, d) })
}

// withBLAS runs f inside c.do with c's cuBLAS state, locked.
func (c *CUDA) withBLAS(f func(st *blasState) error) error {
	return c.do(func() error {
		st, err := c.blas()
		if err != nil {
			return err
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		return f(st)
	})
}

// PlanSegments waits for the device and returns the counts [E] and offsets [E+1] of the flat
// device plan of geometry g, checked against the plan's R rows. It is the one host sync of a
// grouped matmul call.
func (c *CUDA) PlanSegments(g Geometry, plan cu.DevicePtr) (counts, offsets []int32, err error) {
	if err := g.Validate(); err != nil {
		return nil, nil, err
	}
	if plan == 0 {
		return nil, nil, fmt.Errorf("gomoe: plan segments: null plan pointer")
	}
	seg := make([]int32, 2*g.E+1)
	if err := c.do(func() error { return c.readSegments(seg, plan) }); err != nil {
		return nil, nil, err
	}
	if err := checkSegments(g, seg); err != nil {
		return nil, nil, err
	}
	return seg[:g.E], seg[g.E:], nil
}

// readSegments copies counts and offsets (len(seg) int32 at the plan's start) to the host.
// It must run inside c.do.
func (c *CUDA) readSegments(seg []int32, plan cu.DevicePtr) error {
	if err := c.CopyDtoH(unsafe.Pointer(&seg[0]), plan, int64(4*len(seg))); err != nil {
		return fmt.Errorf("gomoe: reading the plan's offsets: %w", err)
	}
	return nil
}

// checkSegments checks counts and offsets (seg = counts[E] ++ offsets[E+1]) against the plan's
// rows, so that no GEMM can touch memory outside the buffers.
func checkSegments(g Geometry, seg []int32) error {
	E, R := g.E, int64(g.Rows())
	counts, offsets := seg[:E], seg[E:]
	for e := 0; e < E; e++ {
		o, n := int64(offsets[e]), int64(counts[e])
		if o < 0 || n < 0 || o+n > int64(offsets[e+1]) || o+n > R {
			return fmt.Errorf("gomoe: grouped matmul: plan's expert %d has offset %d and count %d, outside the %d rows", e, o, n, R)
		}
	}
	if int64(offsets[E]) > R || offsets[0] < 0 {
		return fmt.Errorf("gomoe: grouped matmul: plan's offsets[E] = %d is outside the %d rows", offsets[E], R)
	}
	return nil
}

// maxZeroRanges is the most separate row ranges a grouped matmul clears with one memset each;
// with more (pad rows of many experts), it clears the whole output once before the GEMMs.
const maxZeroRanges = 8

type rowRange struct{ lo, hi int64 }

// appendRange adds [lo,hi) to rs, merging it with the last range if they touch.
func appendRange(rs []rowRange, lo, hi int64) []rowRange {
	if hi <= lo {
		return rs
	}
	if n := len(rs); n > 0 && rs[n-1].hi == lo {
		rs[n-1].hi = hi
		return rs
	}
	return append(rs, rowRange{lo, hi})
}

// zeroRows clears the ranges (in units of rowBytes) of buf, or all rows [0,total) of it when
// there are more than maxZeroRanges ranges. It must run inside c.do, before the GEMMs that
// write the other rows (the whole-buffer clear covers them too).
func (c *CUDA) zeroRows(buf cu.DevicePtr, rowBytes int64, rs []rowRange, total int64) error {
	if len(rs) > maxZeroRanges {
		return c.Memset(buf, 0, total*rowBytes, 1)
	}
	for _, r := range rs {
		if err := c.Memset(buf+cu.DevicePtr(r.lo*rowBytes), 0, (r.hi-r.lo)*rowBytes, 1); err != nil {
			return err
		}
	}
	return nil
}

// padRanges lists the rows that belong to no expert: pad rows after each segment and the rows
// from offsets[E] to R.
func padRanges(g Geometry, seg []int32) []rowRange {
	E := g.E
	counts, offsets := seg[:E], seg[E:]
	var rs []rowRange
	for e := 0; e < E; e++ {
		rs = appendRange(rs, int64(offsets[e]+counts[e]), int64(offsets[e+1]))
	}
	return appendRange(rs, int64(offsets[E]), int64(g.Rows()))
}

// gmmCall checks a grouped matmul's arguments, reads the plan's segments and runs f with the
// cuBLAS state locked, all inside c.do.
func (c *CUDA) gmmCall(what string, d DType, g Geometry, H, N int, ptrs []cu.DevicePtr, plan cu.DevicePtr, f func(st *blasState, seg []int32) error) error {
	if !d.valid() {
		return fmt.Errorf("gomoe: grouped matmul %s: unknown dtype %v", what, d)
	}
	if err := g.Validate(); err != nil {
		return err
	}
	if H < 1 || N < 1 || H > math.MaxInt32 || N > math.MaxInt32 {
		return fmt.Errorf("gomoe: grouped matmul %s: H=%d N=%d, want both >= 1", what, H, N)
	}
	for _, p := range append(ptrs, plan) {
		if p == 0 {
			return fmt.Errorf("gomoe: grouped matmul %s: null device pointer", what)
		}
	}
	return c.withBLAS(func(st *blasState) error {
		if cap(st.seg) < 2*g.E+1 {
			st.seg = make([]int32, 2*g.E+1)
		}
		seg := st.seg[:2*g.E+1]
		if err := c.readSegments(seg, plan); err != nil {
			return err
		}
		if err := checkSegments(g, seg); err != nil {
			return err
		}
		return f(st, seg)
	})
}

// groupedMinGEMMs is the fewest problems (non-empty experts) for which one grouped GEMM is
// issued instead of one GEMM each. Measured on an H200 (cuBLAS 13, 2026-11-26): with 128
// experts of ~256 rows (Qwen3-30B-A3B) the grouped call is 1.3–2.8x faster than the loop; with
// 8 experts of ~1024 rows (Mixtral) the loop is as fast or up to 2.2x faster (bfloat16).
var groupedMinGEMMs = 16

// runGemms issues the problems: one grouped GEMM (float32 and bfloat16, where cuBLAS has it,
// for at least groupedMinGEMMs problems) or one GEMM each. It must run inside c.do with st
// locked.
func (c *CUDA) runGemms(st *blasState, d DType, ps []rowGemm) error {
	if len(ps) == 0 {
		return nil
	}
	if d != F64 && useGroupedGEMM && !st.noGroup && len(ps) >= groupedMinGEMMs && aligned16(ps) {
		err := c.runGrouped(st, d, ps)
		if err == nil {
			return nil
		}
		se, ok := err.(*BLASStatusError)
		if !ok {
			return err
		}
		// No grouped GEMM in this cuBLAS (then never try again), or it refused these
		// problems: one GEMM per expert instead.
		st.lastErr = err
		if se.Status == -1 {
			st.noGroup = true
		}
	}
	for _, p := range ps {
		if err := p.run(st, d); err != nil {
			return err
		}
	}
	return nil
}

func aligned16(ps []rowGemm) bool {
	for _, p := range ps {
		if p.a%16 != 0 || p.b%16 != 0 || p.c%16 != 0 {
			return false
		}
	}
	return true
}

type gemmShape struct {
	ta, tb        bool
	m, n, k       int
	lda, ldb, ldc int
	alpha, beta   float64
}

// runGrouped issues all problems in one cublasGemmGroupedBatchedEx call, with problems of
// equal shape in one group. The pointer arrays go to a device scratch buffer with one copy;
// that copy from pageable memory waits for earlier work on the stream, so a previous grouped
// GEMM is done reading the buffer before it is overwritten.
func (c *CUDA) runGrouped(st *blasState, d DType, ps []rowGemm) error {
	var shapes []gemmShape
	var members [][]int
	index := map[gemmShape]int{}
	for i, p := range ps {
		s := gemmShape{p.ta, p.tb, p.m, p.n, p.k, p.lda, p.ldb, p.ldc, p.alpha, p.bet}
		j, ok := index[s]
		if !ok {
			j = len(shapes)
			index[s] = j
			shapes = append(shapes, s)
			members = append(members, nil)
		}
		members[j] = append(members[j], i)
	}
	G := len(shapes)
	ta := make([]C.cublasOperation_t, G)
	tb := make([]C.cublasOperation_t, G)
	m := make([]C.int, G)
	n := make([]C.int, G)
	k := make([]C.int, G)
	lda := make([]C.int, G)
	ldb := make([]C.int, G)
	ldc := make([]C.int, G)
	size := make([]C.int, G)
	alpha := make([]C.float, G)
	beta := make([]C.float, G)
	total := len(ps)
	ptrs := make([]uint64, 3*total)
	idx := 0
	for j, s := range shapes {
		// Column-major view: Cᵀ[n,m] = op(B)ᵀ·op(A)ᵀ, A and B swapped.
		ta[j], tb[j] = cop(s.tb), cop(s.ta)
		m[j], n[j], k[j] = C.int(s.n), C.int(s.m), C.int(s.k)
		lda[j], ldb[j], ldc[j] = C.int(s.ldb), C.int(s.lda), C.int(s.ldc)
		alpha[j], beta[j] = C.float(s.alpha), C.float(s.beta)
		size[j] = C.int(len(members[j]))
		for _, i := range members[j] {
			ptrs[idx] = uint64(ps[i].b)
			ptrs[total+idx] = uint64(ps[i].a)
			ptrs[2*total+idx] = uint64(ps[i].c)
			idx++
		}
	}
	need := int64(8 * len(ptrs))
	if need > st.ptrsCap {
		if st.ptrs != 0 {
			if err := cu.Synchronize(); err != nil {
				return err
			}
			if err := cu.MemFree(st.ptrs); err != nil {
				return err
			}
			st.ptrs, st.ptrsCap = 0, 0
		}
		capBytes := max(need, 4096)
		p, err := cu.MemAlloc(capBytes)
		if err != nil {
			return fmt.Errorf("gomoe: grouped GEMM pointer scratch: %w", err)
		}
		st.ptrs, st.ptrsCap = p, capBytes
	}
	if err := c.CopyHtoD(st.ptrs, unsafe.Pointer(&ptrs[0]), need); err != nil {
		return fmt.Errorf("gomoe: grouped GEMM pointers: %w", err)
	}
	s := C.gomoe_gemm_grouped(st.h, C.int(d), C.int(G), &ta[0], &tb[0], &m[0], &n[0], &k[0], &alpha[0],
		&lda[0], &ldb[0], &beta[0], &ldc[0], &size[0], C.int(total), C.uintptr_t(st.ptrs))
	if s != 0 {
		return blasError("cublasGemmGroupedBatchedEx", int(s))
	}
	return nil
}

func cop(t bool) C.cublasOperation_t {
	if t {
		return C.CUBLAS_OP_T
	}
	return C.CUBLAS_OP_N
}

func ptrAt(p cu.DevicePtr, elems int64, d DType) cu.DevicePtr {
	return p + cu.DevicePtr(elems*int64(d.Size()))
}

// expertGemms is the grouped matmul's GEMMs on cuBLAS, one gemm(e, o, n) for each expert e
// with n > 0 real rows starting at row o (seg as PlanSegments returns it), in expert order;
// empty lists the experts with no rows, as ranges of expert indices.
func expertGemms(g Geometry, seg []int32, gemm func(e int, o int64, n int) rowGemm) (ps []rowGemm, empty []rowRange) {
	for e := 0; e < g.E; e++ {
		o, n := int64(seg[g.E+e]), int(seg[e])
		if n == 0 {
			empty = appendRange(empty, int64(e), int64(e+1))
			continue
		}
		ps = append(ps, gemm(e, o, n))
	}
	return ps, empty
}

// GroupedMatMulForward writes z [R,N] from xp [R,H] and w [E,H,N] (device pointers, all of
// dtype d): each real row of expert e times w[e], as the CPU GroupedMatMulForward. Pad rows
// and rows past offsets[E] are written as 0. Where a device-sized grouped GEMM applies
// (gmmDevice: bfloat16 on sm_90a with H, N multiples of 8; float32, float64) it reads nothing
// back; otherwise it reads the plan's offsets with one small synchronous copy (see
// PlanSegments) and then enqueues cuBLAS GEMMs without waiting.
func (c *CUDA) GroupedMatMulForward(d DType, g Geometry, H, N int, z, xp, w, plan cu.DevicePtr) error {
	if done, err := c.gmmDevice("forward", gmmForward, d, g, H, N, z, xp, w, plan, false); done {
		return err
	}
	return c.gmmCall("forward", d, g, H, N, []cu.DevicePtr{z, xp, w}, plan, func(st *blasState, seg []int32) error {
		if err := c.zeroRows(z, int64(N)*int64(d.Size()), padRanges(g, seg), int64(g.Rows())); err != nil {
			return err
		}
		ps, _ := expertGemms(g, seg, func(e int, o int64, n int) rowGemm {
			return rowGemm{m: n, n: N, k: H,
				a: ptrAt(xp, o*int64(H), d), lda: H,
				b: ptrAt(w, int64(e)*int64(H)*int64(N), d), ldb: N,
				c: ptrAt(z, o*int64(N), d), ldc: N, alpha: 1}
		})
		c.lastGMM = "cublas"
		return c.runGemms(st, d, ps)
	})
}

// GroupedMatMulBackwardRows writes dxp [R,H] = dz [R,N] · w[e]ᵀ on the real rows of each
// expert, as the CPU GroupedMatMulBackwardRows: with accumulate false it overwrites dxp and
// zeroes the pad and unused rows; with accumulate true it adds into dxp and leaves the other
// rows untouched. On the cuBLAS path one small synchronous copy reads the plan's offsets.
func (c *CUDA) GroupedMatMulBackwardRows(d DType, g Geometry, H, N int, dxp, dz, w, plan cu.DevicePtr, accumulate bool) error {
	if done, err := c.gmmDevice("backward rows", gmmRows, d, g, H, N, dxp, dz, w, plan, accumulate); done {
		return err
	}
	return c.gmmCall("backward rows", d, g, H, N, []cu.DevicePtr{dxp, dz, w}, plan, func(st *blasState, seg []int32) error {
		beta := 0.0
		if accumulate {
			beta = 1
		} else if err := c.zeroRows(dxp, int64(H)*int64(d.Size()), padRanges(g, seg), int64(g.Rows())); err != nil {
			return err
		}
		ps, _ := expertGemms(g, seg, func(e int, o int64, n int) rowGemm {
			return rowGemm{tb: true, m: n, n: H, k: N,
				a: ptrAt(dz, o*int64(N), d), lda: N,
				b: ptrAt(w, int64(e)*int64(H)*int64(N), d), ldb: N,
				c: ptrAt(dxp, o*int64(H), d), ldc: H, alpha: 1, bet: beta}
		})
		c.lastGMM = "cublas"
		return c.runGemms(st, d, ps)
	})
}

// GroupedMatMulBackwardWeights writes dw [E,H,N] with dw[e] = xp[seg e]ᵀ · dz[seg e] over the
// real rows of expert e, as the CPU GroupedMatMulBackwardWeights: with accumulate false it
// overwrites dw (an expert with no rows gets 0); with accumulate true it adds into dw. On the
// cuBLAS path one small synchronous copy reads the plan's offsets.
func (c *CUDA) GroupedMatMulBackwardWeights(d DType, g Geometry, H, N int, dw, xp, dz, plan cu.DevicePtr, accumulate bool) error {
	if done, err := c.gmmDevice("backward weights", gmmWeights, d, g, H, N, dw, xp, dz, plan, accumulate); done {
		return err
	}
	return c.gmmCall("backward weights", d, g, H, N, []cu.DevicePtr{dw, xp, dz}, plan, func(st *blasState, seg []int32) error {
		beta := 0.0
		if accumulate {
			beta = 1
		}
		ps, empty := expertGemms(g, seg, func(e int, o int64, n int) rowGemm {
			return rowGemm{ta: true, m: H, n: N, k: n,
				a: ptrAt(xp, o*int64(H), d), lda: H,
				b: ptrAt(dz, o*int64(N), d), ldb: N,
				c: ptrAt(dw, int64(e)*int64(H)*int64(N), d), ldc: N, alpha: 1, bet: beta}
		})
		if !accumulate {
			if err := c.zeroRows(dw, int64(H)*int64(N)*int64(d.Size()), empty, int64(g.E)); err != nil {
				return err
			}
		}
		c.lastGMM = "cublas"
		return c.runGemms(st, d, ps)
	})
}

// blasStream points c's cuBLAS handle, if it has one, at c's current stream. It must run
// inside c.do.
func (c *CUDA) blasStream() error {
	blasStates.Lock()
	st, ok := blasStates.m[c]
	blasStates.Unlock()
	if !ok {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if s := C.gomoe_blas_stream(st.h, C.cudaStream_t(c.stream), C.uintptr_t(st.work), blasWorkBytes); s != 0 {
		return blasError("cublasSetStream", int(s))
	}
	return nil
}

// blasWorkBytes is the size of cuBLAS's workspace: 32 MiB, what NVIDIA recommends for Hopper.
const blasWorkBytes = 32 << 20
