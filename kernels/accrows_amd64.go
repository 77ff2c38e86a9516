//go:build amd64 && !noasm

package kernels

import (
	"golang.org/x/sys/cpu"

	"github.com/gomoe/gomoe/internal/simd"
)

// hasAccRowsAsm says that accRows runs the AVX2 kernel (internal/simd/accrows_amd64.s) on
// this CPU.
var hasAccRowsAsm = cpu.X86.HasAVX2

// accRows sets d[i] = Σ_j round(w[j]·src[offs[j]+i]), summed from +0 in j order in the data
// type, one rounding per product and per add: the bits of setScaledRow followed by
// addScaledRow for each further row, in one pass over d. The columns the vector kernel leaves
// (len(d) mod 8 for float32, mod 4 for float64) run the same operations in Go. Every
// src[offs[j] : offs[j]+len(d)] must lie in src.
func accRows[F Float](d, src []F, offs []int, w []F) {
	n := len(d)
	for _, o := range offs {
		_ = src[o : o+n] // the kernel reads these rows: keep them in bounds
	}
	w = w[:len(offs)]
	if len(offs) == 0 || n == 0 {
		clear(d)
		return
	}
	if hasAccRowsAsm {
		switch dd := any(d).(type) {
		case []float32:
			ss, ww := any(src).([]float32), any(w).([]float32)
			m := n &^ 7
			if m > 0 {
				simd.AccRowsF32AVX2(&dd[0], &ss[0], &offs[0], &ww[0], len(offs), m)
			}
			accRowsTail(dd, ss, offs, ww, m)
			return
		case []float64:
			ss, ww := any(src).([]float64), any(w).([]float64)
			m := n &^ 3
			if m > 0 {
				simd.AccRowsF64AVX2(&dd[0], &ss[0], &offs[0], &ww[0], len(offs), m)
			}
			accRowsTail(dd, ss, offs, ww, m)
			return
		}
	}
	accRowsGo(d, src, offs, w)
}
