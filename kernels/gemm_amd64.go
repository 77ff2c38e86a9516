//go:build amd64 && !noasm

package kernels

import (
	"golang.org/x/sys/cpu"

	"github.com/gomoe/gomoe/internal/simd"
)

// Assembly micro-kernels (internal/simd/gemm_amd64.s); see there for the contract.

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// The engine's assembly kernels. The slices' lengths are checked by gemmSerial's slicing
// (a kc·mr, b kc·nr, c (mr-1)·ldc+nr); kc >= 1 there.
var (
	gemmAVX2F32 = &gemmKern[float32]{name: "avx2", mr: 6, nr: 16, mc: 192, nc: 1024,
		fn: func(kc int, a, b, c []float32, ldc int, add bool) {
			_, _, _ = a[6*kc-1], b[16*kc-1], c[5*ldc+15]
			simd.Sgemm6x16AVX2(kc, &a[0], &b[0], &c[0], ldc, b2i(add))
		}}
	gemmAVX2F64 = &gemmKern[float64]{name: "avx2", mr: 6, nr: 8, mc: 96, nc: 1024,
		fn: func(kc int, a, b, c []float64, ldc int, add bool) {
			_, _, _ = a[6*kc-1], b[8*kc-1], c[5*ldc+7]
			simd.Dgemm6x8AVX2(kc, &a[0], &b[0], &c[0], ldc, b2i(add))
		}}
	gemmAVX512F32 = &gemmKern[float32]{name: "avx512", mr: 12, nr: 32, mc: 192, nc: 1024,
		fn: func(kc int, a, b, c []float32, ldc int, add bool) {
			_, _, _ = a[12*kc-1], b[32*kc-1], c[11*ldc+31]
			simd.Sgemm12x32AVX512(kc, &a[0], &b[0], &c[0], ldc, b2i(add))
		}}
	gemmAVX512F64 = &gemmKern[float64]{name: "avx512", mr: 12, nr: 16, mc: 96, nc: 1024,
		fn: func(kc int, a, b, c []float64, ldc int, add bool) {
			_, _, _ = a[12*kc-1], b[16*kc-1], c[11*ldc+15]
			simd.Dgemm12x16AVX512(kc, &a[0], &b[0], &c[0], ldc, b2i(add))
		}}
)

var (
	gemmHasAVX2   = cpu.X86.HasAVX2 && cpu.X86.HasFMA
	gemmHasAVX512 = cpu.X86.HasAVX512F
)

// gemmSetPath selects the micro-kernels by name ("avx512", "avx2", "go", or one of
// gemmExtraPaths such as "openblas") and reports
// whether this CPU runs them. Tests use it to compare the paths.
func gemmSetPath(name string) bool {
	switch {
	case name == "avx512" && gemmHasAVX512:
		gemmF32, gemmF64 = gemmAVX512F32, gemmAVX512F64
	case name == "avx2" && gemmHasAVX2:
		gemmF32, gemmF64 = gemmAVX2F32, gemmAVX2F64
	case name == "go":
		gemmF32, gemmF64 = gemmGoKern[float32](), gemmGoKern[float64]()
	default:
		set, ok := gemmExtraPaths[name]
		if !ok {
			return false
		}
		set()
	}
	return true
}

func init() {
	_ = gemmSetPath("avx512") || gemmSetPath("avx2")
}
