//go:build amd64 && !noasm

package kernels

import (
	"golang.org/x/sys/cpu"

	"github.com/gomoe/gomoe/internal/simd"
)

// hasExpAsm says that expSub32 runs the AVX2 kernel on this CPU; the float32 row softmax uses
// it then.
var hasExpAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// expSub32 sets y[i] = exp(x[i] − m) with the AVX2 kernel (simd.ExpSubAVX2, beside the vector
// sigmoid in internal/simd/sigmoid_amd64.s); the last len(x) mod 8 elements go through the
// same kernel from a padded copy. m must be finite and every x[i] <= m or −Inf. Accuracy,
// measured for x = m − d (rounded) with every float32 d in [0, 110] at eight maxima m from
// −10⁶ to 3·10³⁸ (GOMOE_EXHAUSTIVE=1 go test -run ExpSub32 ./kernels/; every 97th by default): within
// 1 unit in the last place of exp(float64(x) − float64(m)) rounded to float32, subnormal
// results included; x = −Inf and x − m <= −104 give +0. Call it only when hasExpAsm.
func expSub32(y, x []float32, m float32) {
	n := len(x)
	y = y[:n]
	k := n &^ 7
	if k > 0 {
		simd.ExpSubAVX2(&y[0], &x[0], k, &m)
	}
	if k < n {
		var xs, ys [8]float32
		for i := range xs {
			xs[i] = m
		}
		copy(xs[:], x[k:])
		simd.ExpSubAVX2(&ys[0], &xs[0], 8, &m)
		copy(y[k:], ys[:])
	}
}
