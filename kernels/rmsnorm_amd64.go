//go:build amd64 && !noasm

package kernels

import (
	"golang.org/x/sys/cpu"

	"github.com/gomoe/gomoe/internal/simd"
)

// hasRowAsm says that the float32 row kernels of internal/simd/rmsnorm_amd64.s (dot64's lanes,
// RMSNorm's rows) run on this CPU.
var hasRowAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// rowAsmMin is the shortest row the vector row kernels take (BenchmarkRowKernels: RMSNorm on
// rows of 8 is faster in Go).
const rowAsmMin = 32

// The helpers below run the vector kernels over the longest prefix of whole groups of 8 and
// return its length (0 when the CPU lacks AVX2 and FMA, or for rows shorter than rowAsmMin,
// where the call costs more than it saves); the Go loops finish the rest with the same
// operations, so the bits do not depend on which path ran. The slices after the first
// must be at least as long as it.

// dotLanes32 sets l to dot64's lanes of the prefix: lane j sums a[h]·b[h], h ≡ j (mod 8).
func dotLanes32(l *[8]float64, a, b []float32) int {
	m := len(a) &^ 7
	if !hasRowAsm || m < rowAsmMin {
		return 0
	}
	b = b[:m]
	simd.DotLanesF32AVX2(l, &a[0], &b[0], m)
	return m
}

// dot3Lanes32 sets l to dot3_64's lanes of the prefix: lane j sums round((a[h]·b[h])·c[h]).
func dot3Lanes32(l *[8]float64, a, b, c []float32) int {
	m := len(a) &^ 7
	if !hasRowAsm || m < rowAsmMin {
		return 0
	}
	b, c = b[:m], c[:m]
	simd.Dot3LanesF32AVX2(l, &a[0], &b[0], &c[0], m)
	return m
}

// rmsScale32 sets y[j] = float32((x[j]·r)·g[j]) (rmsRow).
func rmsScale32(y, x, g []float32, r float64) int {
	m := len(y) &^ 7
	if !hasRowAsm || m < rowAsmMin {
		return 0
	}
	x, g = x[:m], g[:m]
	simd.RMSScaleF32AVX2(&y[0], &x[0], &g[0], &r, m)
	return m
}

// rmsBack32 sets dx[j] = float32((r·g[j])·dy[j] − x[j]·c) (rmsBackRow).
func rmsBack32(dx, x, g, dy []float32, r, c float64) int {
	m := len(dx) &^ 7
	if !hasRowAsm || m < rowAsmMin {
		return 0
	}
	x, g, dy = x[:m], g[:m], dy[:m]
	rc := [2]float64{r, c}
	simd.RMSBackF32AVX2(&dx[0], &x[0], &g[0], &dy[0], &rc, m)
	return m
}
