//go:build amd64 && !noasm

package kernels

import (
	"golang.org/x/sys/cpu"

	"github.com/gomoe/gomoe/internal/simd"
)

// hasSigmoidAsm says that sigmoidPair32 runs the AVX2 kernel on this CPU.
var hasSigmoidAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// sigmoidPair32 sets s[i] = σ(x[i]) and sm[i] = σ(−x[i]) with the AVX2 kernel
// (internal/simd/sigmoid_amd64.s); the last len(x) mod 8 elements go through the same kernel from a padded
// copy, so every element is computed the same way wherever it sits. Accuracy, measured over
// every float32 in [−110, 110] (TestSigmoidPair32 with GOMOE_EXHAUSTIVE=1): within 2 units in the last place of
// the float64 σ rounded to float32; σ(±Inf) = 1 and 0, NaN gives NaN. Call it only when
// hasSigmoidAsm.
func sigmoidPair32(s, sm, x []float32) {
	n := len(x)
	s, sm = s[:n], sm[:n]
	m := n &^ 7
	if m > 0 {
		simd.SigmoidPairAVX2(&s[0], &sm[0], &x[0], m)
	}
	if m < n {
		var xs, ss, ms [8]float32
		copy(xs[:], x[m:])
		simd.SigmoidPairAVX2(&ss[0], &ms[0], &xs[0], 8)
		copy(s[m:], ss[:])
		copy(sm[m:], ms[:])
	}
}
