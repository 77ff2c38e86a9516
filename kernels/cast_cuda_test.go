//go:build gomoecuda

package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"gorgonia.org/cu"

	"github.com/gomoe/gomoe/bfloat16"
	. "github.com/gomoe/gomoe/kernels"
)

// TestCUDAConvert: every device conversion (float32 ↔ bfloat16, float32 ↔ float64) equals Go's
// round-to-nearest-even conversion bit for bit, with the input and the output each 16-byte
// aligned or one element off (the kernel's vector and one-at-a-time paths), and an odd length.
func TestCUDAConvert(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const n = 1031
	src := trRand(rng, n, 10)
	src[0], src[1], src[2] = math.Inf(1), 1e-40, math.Copysign(0, -1) // infinity, a float32 subnormal, -0
	for _, c := range [][2]DType{{F32, BF16}, {BF16, F32}, {F32, F64}, {F64, F32}} {
		from, to := c[0], c[1]
		// the input as the source dtype holds it: float32 values for F32, bfloat16 ones for BF16
		in := make([]float64, n)
		for i, x := range src {
			switch from {
			case F32:
				in[i] = float64(float32(x))
			case BF16:
				in[i] = float64(bfloat16.FromFloat32(float32(x)).Float32())
			default:
				in[i] = x
			}
		}
		want := cuBits(cuElems(to, in)) // Go's conversion, rounded to nearest even
		for _, off := range [][2]int{{0, 0}, {1, 1}, {0, 1}, {1, 0}} {
			b := cuUploadAny(t, cuElems(from, append(make([]float64, off[0]), in...)))
			out := cuAlloc(t, int64(to.Size()*(n+1)))
			cuMust(t, testCUDA.Convert(from, to, out.p+cu.DevicePtr(off[1]*to.Size()), b.p+cu.DevicePtr(off[0]*from.Size()), n))
			got := cuBits(cuDownloadAs(t, to, out, n+1))[off[1]:]
			for i := 0; i < n; i++ {
				if got[i] != want[i] {
					t.Fatalf("%v→%v offsets %v: [%d] = %#x, want %#x (input %v)", from, to, off, i, got[i], want[i], in[i])
				}
			}
		}
	}
}
