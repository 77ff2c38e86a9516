package kernels

import "gonum.org/v1/gonum/blas/gonum"

// On amd64 the row updates run through gonum's BLAS axpy, whose SSE assembly multiplies and
// then adds (MULPS/ADDPS, MULPD/ADDPD: two roundings, never a fused multiply-add), so it keeps
// the kernels' rounding contract while moving several elements per instruction. Each element
// is computed on its own, so the result does not depend on alignment.

var blasImpl gonum.Implementation

// hasAxpyAsm says that axpyAsm handles float32 and float64 rows (for w != 0).
const hasAxpyAsm = true

// axpyAsm sets d += round(w·s) with SIMD and reports true, or reports false for a type it
// does not handle or for w = 0.
func axpyAsm[F Float](d, s []F, w F) bool {
	if w == 0 {
		return false // BLAS skips alpha = 0, but 0·Inf must still give NaN
	}
	switch dd := any(d).(type) {
	case []float32:
		ss := any(s).([]float32)
		blasImpl.Saxpy(len(dd), float32(w), ss[:len(dd)], 1, dd, 1)
		return true
	case []float64:
		ss := any(s).([]float64)
		blasImpl.Daxpy(len(dd), float64(w), ss[:len(dd)], 1, dd, 1)
		return true
	}
	return false
}
