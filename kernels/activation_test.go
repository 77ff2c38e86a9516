package kernels

import (
	"math"
	"math/rand"
	"testing"
)

// TestActivationsFloat32: float32 SwiGLU and Sigmoid (the vector sigmoid on amd64) against the
// float64 formulas: the forward within 4·2⁻²⁴ relative, the backward within 6·2⁻²⁴ of the
// magnitude of its terms (da's 1 + a·σ(−a) may cancel), on odd lengths (the vector tail) and
// a length that splits over goroutines.
func TestActivationsFloat32(t *testing.T) {
	rng := rand.New(rand.NewSource(17))
	const u = 0x1p-24
	for _, n := range []int{0, 1, 7, 9, 10007, 3 * actBlock} {
		a, b, dy := make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range a {
			a[i], b[i], dy[i] = float32(rng.NormFloat64()*4), float32(rng.NormFloat64()), float32(rng.NormFloat64())
		}
		if n > 8 {
			a[3], a[5] = 95, -95
		}
		for _, kind := range []Activation{SwiGLU, Sigmoid} {
			y := make([]float32, n)
			if err := ActivationForward(kind, y, a, b); err != nil {
				t.Fatal(err)
			}
			for i := range y {
				x := float64(a[i])
				want := sigmoid(x)
				if kind == SwiGLU {
					want *= x * float64(b[i])
				}
				if math.Abs(float64(y[i])-want) > 4*u*math.Abs(want)+0x1p-147 {
					t.Fatalf("%v n=%d: y[%d] = %v, want %v (a=%v)", kind, n, i, y[i], want, x)
				}
			}
			if kind != SwiGLU {
				continue
			}
			for w := 0; w < 2; w++ {
				g := make([]float32, n)
				if err := ActivationBackward(kind, w, g, a, b, y, dy); err != nil {
					t.Fatal(err)
				}
				for i := range g {
					x, s := float64(a[i]), sigmoid(float64(a[i]))
					want := float64(dy[i]) * x * s
					mag := math.Abs(want)
					if w == 0 {
						want = float64(dy[i]) * float64(b[i]) * s * (1 + x*sigmoid(-x))
						mag = math.Abs(float64(dy[i])*float64(b[i])*s) * (1 + math.Abs(x*sigmoid(-x)))
					}
					if math.Abs(float64(g[i])-want) > 6*u*mag+0x1p-147 {
						t.Fatalf("SwiGLU d%d n=%d: [%d] = %v, want %v (a=%v)", w, n, i, g[i], want, x)
					}
				}
			}
		}
	}
}
