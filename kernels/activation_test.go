package kernels

import (
	"math"
	"math/rand"
	"testing"
)

// TestActivationsFloat32: float32 SwiGLU, Sigmoid and GELU (the vector sigmoid on amd64)
// against the float64 formulas: the forward within 4·2⁻²⁴ relative (plus 4 subnormal steps),
// the backward within 6·2⁻²⁴ (GELU 8·2⁻²⁴) of the magnitude of its terms (the sums may
// cancel), on odd lengths (the vector tail) and a length that splits over goroutines; a
// reaches ±95 (where σ is below float32's normal range). GELU's reference is x·σ(2u) in
// float64; without the vector sigmoid the kernels' own tanh formula is the reference.
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
		for _, kind := range []Activation{SwiGLU, Sigmoid, GELU} {
			y := make([]float32, n)
			if err := ActivationForward(kind, y, a, b); err != nil {
				t.Fatal(err)
			}
			for i := range y {
				x := float64(a[i])
				want := sigmoid(x)
				switch kind {
				case SwiGLU:
					want *= x * float64(b[i])
				case GELU: // 0.5·x·(1 + tanh(u)) = x·σ(2u), without tanh's cancellation
					want = x * sigmoid(2*geluC*(x+geluA*x*x*x))
					if !hasSigmoidAsm { // the float64 tanh formula runs, cancellation and all
						want = 0.5 * x * (1 + math.Tanh(geluC*(x+geluA*x*x*x)))
					}
				}
				if math.Abs(float64(y[i])-want) > 4*u*math.Abs(want)+0x1p-147 {
					t.Fatalf("%v n=%d: y[%d] = %v, want %v (a=%v)", kind, n, i, y[i], want, x)
				}
			}
			if kind == GELU {
				g := make([]float32, n)
				if err := ActivationBackward(kind, 0, g, a, b, y, dy); err != nil {
					t.Fatal(err)
				}
				for i := range g {
					x := float64(a[i])
					u2 := 2 * geluC * (x + geluA*x*x*x)
					sp, sn := sigmoid(u2), sigmoid(-u2)
					r := 2 * x * sp * sn * geluC * (1 + 3*geluA*x*x)
					want := float64(dy[i]) * (sp + r)
					mag := math.Abs(float64(dy[i])) * (sp + math.Abs(r))
					if !hasSigmoidAsm {
						th := math.Tanh(geluC * (x + geluA*x*x*x))
						want = float64(dy[i]) * (0.5*(1+th) + 0.5*x*(1-th*th)*geluC*(1+3*geluA*x*x))
					}
					if math.Abs(float64(g[i])-want) > 8*u*mag+0x1p-147 {
						t.Fatalf("GELU d n=%d: [%d] = %v, want %v (a=%v)", n, i, g[i], want, x)
					}
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
