//go:build openblas && cgo

package kernels

// #cgo LDFLAGS: -lopenblas
// void openblas_set_num_threads(int);
import "C"

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/netlib/blas/netlib"
)

// The openblas build tag routes every CPU GEMM to OpenBLAS through gonum.org/v1/netlib:
//
//	go test -tags openblas ./...     # needs OpenBLAS's library (Debian: libopenblas-dev)
//
// It replaces the engine's micro-kernels as the "openblas" path (gemmSetPath) and makes it the
// default, and it routes gonum's blas32 and blas64 to OpenBLAS for the rest of the program.
// OpenBLAS runs single-threaded inside each call: gomoe's own goroutines already split Gemm
// into blocks and the grouped matmul into experts, and a second pool under them would
// oversubscribe the cores.
//
// Rounding. OpenBLAS chooses its own blocking and kernels, so its sums are not ordered as the
// engine's (gemm.go): results agree with the built-in paths within the kernels' tolerances,
// not bitwise, and the bitwise guarantee across GOMAXPROCS holds only for the built-in paths.

func init() {
	C.openblas_set_num_threads(1)
	var impl netlib.Implementation
	blas32.Use(impl)
	blas64.Use(impl)
	f32 := &gemmKern[float32]{name: "openblas", whole: func(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
		impl.Sgemm(blasTrans(tA), blasTrans(tB), m, n, k, 1, a, blasLd(lda, tA, m, k), b, blasLd(ldb, tB, k, n), beta, c, ldc)
	}}
	f64 := &gemmKern[float64]{name: "openblas", whole: func(tA, tB bool, m, n, k int, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
		impl.Dgemm(blasTrans(tA), blasTrans(tB), m, n, k, 1, a, blasLd(lda, tA, m, k), b, blasLd(ldb, tB, k, n), beta, c, ldc)
	}}
	gemmExtraPaths["openblas"] = func() { gemmF32, gemmF64 = f32, f64 }
	gemmSetPath("openblas")
}

func blasTrans(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}

// blasLd returns the leading dimension to pass gonum for a matrix op(x) of rows×cols stored
// transposed when trans: at least the stored row's length and at least 1, as gonum checks
// (the engine's callers already pass no less, except 0 for empty matrices, which have no rows).
func blasLd(ld int, trans bool, rows, cols int) int {
	if trans {
		return max(ld, rows, 1)
	}
	return max(ld, cols, 1)
}
