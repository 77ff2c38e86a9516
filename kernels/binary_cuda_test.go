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

// The GPU kernels against their CPU twins: element-wise arithmetic, bit for bit.

// TestCUDABinary: add, sub, mul and div in float32 and bfloat16 (computed in float32, rounded
// once), with two tensors, a scalar b and a scalar a, equal Go's float32 arithmetic bit for bit;
// also with every pointer one element off 16-byte alignment (the kernels' one-at-a-time path)
// and with only the output off. Add also runs through the engine's Add kernel.
func TestCUDABinary(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	const n = 4099
	a, b := trRand(rng, n+1, 2), trRand(rng, n+1, 2)
	for _, d := range []DType{F32, BF16} {
		A, B := f32s(a), f32s(b) // the inputs as the kernel sees them, in float32
		round := func(x float32) float32 { return x }
		if d == BF16 {
			round = func(x float32) float32 { return bfloat16.FromFloat32(x).Float32() }
			for i := range A {
				A[i], B[i] = round(A[i]), round(B[i])
			}
		}
		ba, bb := cuUploadAny(t, cuElems(d, asF64(A))), cuUploadAny(t, cuElems(d, asF64(B)))
		out := cuAlloc(t, int64(d.Size()*(n+1)))
		es := cu.DevicePtr(d.Size())
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
			// offIn, offOut: elements the inputs and the output start past their buffers' bases.
			for _, off := range [][2]int{{0, 0}, {1, 1}, {0, 1}} {
				for mode := 0; mode < 4; mode++ {
					if mode == 3 && op != OpAdd {
						continue
					}
					pa, pb, s := ba.p+es*cu.DevicePtr(off[0]), bb.p+es*cu.DevicePtr(off[0]), 0.0
					po := out.p + es*cu.DevicePtr(off[1])
					const sc = float32(1.25)
					switch mode {
					case 1:
						pb, s = 0, float64(sc)
					case 2:
						pa, s = 0, float64(sc)
					}
					if mode == 3 {
						cuMust(t, testCUDA.Add(d, po, pa, pb, n))
					} else {
						cuMust(t, testCUDA.Binary(d, op, po, pa, pb, s, n))
					}
					got := cuWiden(cuDownloadAs(t, d, out, n+1)).([]float32)[off[1]:]
					for i := 0; i < n; i++ {
						x, y := A[i+off[0]], B[i+off[0]]
						if mode == 1 {
							y = sc
						} else if mode == 2 {
							x = sc
						}
						if w := round(f(x, y)); math.Float32bits(got[i]) != math.Float32bits(w) {
							t.Fatalf("%v op %d mode %d offsets %v: [%d] = %v, want %v", d, op, mode, off, i, got[i], w)
						}
					}
				}
			}
		}
	}
}
