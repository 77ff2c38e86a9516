//go:build amd64 && !noasm

package kernels

import (
	"golang.org/x/sys/cpu"

	"github.com/gomoe/gomoe/internal/simd"
)

// hasAdamAsm says that adam32 runs the AVX kernel (internal/simd/adam_amd64.s) on this CPU.
var hasAdamAsm = cpu.X86.HasAVX

// adam32 runs AdamUpdate's float32 step over p, g, m, v (equal lengths) with the AVX kernel for
// whole groups of 8 (k as AdamAVX takes it) and returns how many leading elements it updated;
// the caller runs the rest.
func adam32(p, g, m, v []float32, k *[10]float32) int {
	n := len(p) &^ 7
	if n == 0 {
		return 0
	}
	_, _, _ = g[n-1], m[n-1], v[n-1]
	return simd.AdamAVX(&p[0], &g[0], &m[0], &v[0], n, k)
}
