//go:build gomoecuda

package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// The GPU kernels against their CPU twins: element-wise arithmetic, bit for bit.

// TestCUDABinary: add, sub, mul and div in float32, with two tensors, a scalar b and a scalar a,
// equal Go's float32 arithmetic bit for bit.
func TestCUDABinary(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	const n = 4099
	a, b := trRand(rng, n, 2), trRand(rng, n, 2)
	A, B := f32s(a), f32s(b)
	ba, bb := cuUpload(t, A), cuUpload(t, B)
	out := cuAlloc(t, 4*n)
	for _, op := range []BinaryOp{OpAdd, OpSub, OpMul, OpDiv} {
		f := func(x, y float32) float32 {
			switch op {
			case OpAdd:
				return x + y
			case OpSub:
				return x - y
			case OpMul:
				return x * y
			}
			return x / y
		}
		for mode := 0; mode < 3; mode++ {
			pa, pb, s := ba.p, bb.p, 0.0
			const sc = float32(1.25)
			switch mode {
			case 1:
				pb, s = 0, float64(sc)
			case 2:
				pa, s = 0, float64(sc)
			}
			cuMust(t, testCUDA.Binary(F32, op, out.p, pa, pb, s, n))
			got := cuDownload[float32](t, out, n)
			for i := range got {
				x, y := A[i], B[i]
				if mode == 1 {
					y = sc
				} else if mode == 2 {
					x = sc
				}
				if w := f(x, y); math.Float32bits(got[i]) != math.Float32bits(w) {
					t.Fatalf("op %d mode %d: [%d] = %v, want %v", op, mode, i, got[i], w)
				}
			}
		}
	}
}
