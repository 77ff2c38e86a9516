//go:build amd64 && !noasm

package kernels

import (
	"unsafe"

	"golang.org/x/sys/cpu"

	"github.com/gomoe/gomoe/internal/simd"
)

// hasUnpermAsm says that the one-pass row kernels of the unpermute backward
// (internal/simd/unpermute_amd64.s) run on this CPU.
var hasUnpermAsm = cpu.X86.HasAVX2

// unpermBwdAsm runs the vector kernel of unpermBwdRow over the longest prefix of whole groups
// of 8 of the row g and returns its length (0 without AVX2, or for rows shorter than
// rowAsmMin): with ubStore it writes d's prefix (w·g under ubScale, else g), with ubDot it sets
// l to dot64's lanes of ⟨yp, g⟩ over the prefix. ubNT asks for non-temporal stores, which it
// uses only where d starts on a 32-byte boundary. d and yp, where used, are as long as g.
func unpermBwdAsm[F Float](l *[8]float64, d, g, yp []F, w F, flags int) int {
	m := len(g) &^ 7
	if !hasUnpermAsm || m < rowAsmMin {
		return 0
	}
	if flags&ubStore != 0 {
		d = d[:m]
		if uintptr(unsafe.Pointer(&d[0]))&31 != 0 {
			flags &^= ubNT
		}
	} else {
		flags &^= ubNT | ubScale
	}
	switch gg := any(g).(type) {
	case []float32:
		var dp, yq *float32
		if flags&ubStore != 0 {
			dp = &any(d).([]float32)[0]
		}
		if flags&ubDot != 0 {
			yq = &any(yp).([]float32)[:m][0]
		}
		w32 := float32(w)
		simd.UnpermBwdF32AVX2(l, dp, &gg[0], yq, &w32, m, flags)
	case []float64:
		var dp, yq *float64
		if flags&ubStore != 0 {
			dp = &any(d).([]float64)[0]
		}
		if flags&ubDot != 0 {
			yq = &any(yp).([]float64)[:m][0]
		}
		w64 := float64(w)
		simd.UnpermBwdF64AVX2(l, dp, &gg[0], yq, &w64, m, flags)
	default:
		return 0
	}
	return m
}
