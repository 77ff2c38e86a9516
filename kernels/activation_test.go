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
				if !(math.Abs(float64(y[i])-want) <= 4*u*math.Abs(want)+0x1p-147) {
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
					if !(math.Abs(float64(g[i])-want) <= 8*u*mag+0x1p-147) {
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
					if !(math.Abs(float64(g[i])-want) <= 6*u*mag+0x1p-147) {
						t.Fatalf("SwiGLU d%d n=%d: [%d] = %v, want %v (a=%v)", w, n, i, g[i], want, x)
					}
				}
			}
		}
	}
}

// TestActivationsSaturated: far out, every activation has saturated, and the results are its
// limits, never NaN: GELU and SwiGLU (b = 1) give x for large positive x and 0 for large
// negative x, with derivative 1 and 0; Sigmoid gives 1 and 0 with derivative 0. Before, float32
// GELU gave NaN from |x| ≈ 2e13 (its float32 argument 2u overflowed) and float64 GELU's
// derivative from |x| ≈ 3.7e154 ((3·0.044715·x)·x overflowed beside tanh's 1 − th² = 0).
func TestActivationsSaturated(t *testing.T) {
	type point struct{ x, y, dx, db float64 }
	ends := func(round func(float64) float64, xs ...float64) []point {
		var ps []point
		for _, x := range xs {
			x = round(x)
			ps = append(ps, point{x, x, 1, x}, point{-x, 0, 0, 0})
		}
		return ps
	}
	cases := []struct {
		name string
		f32  bool
		pts  []point
	}{
		{"float32", true, ends(func(x float64) float64 { return float64(float32(x)) }, 1e12, 2e13, 1e20, 1e30, math.MaxFloat32)},
		{"float64", false, ends(func(x float64) float64 { return x }, 1e12, 2e13, 1e20, 1e150, 3.6e154, 3.7e154, 1e200, math.MaxFloat64)},
	}
	for _, c := range cases {
		for _, kind := range []Activation{GELU, SwiGLU, Sigmoid} {
			n := len(c.pts)
			a, b, dy := make([]float64, n), make([]float64, n), make([]float64, n)
			for i, p := range c.pts {
				a[i], b[i], dy[i] = p.x, 1, 1
			}
			var y, g0, g1 []float64
			if c.f32 {
				y, g0, g1 = saturatedRun(t, kind, to32(a), to32(b), to32(dy))
			} else {
				y, g0, g1 = saturatedRun(t, kind, a, b, dy)
			}
			for i, p := range c.pts {
				wy, wd, wb := p.y, p.dx, p.db
				if kind == Sigmoid {
					wy, wd = p.dx, 0 // σ's limits are 1 and 0, and y·(1−y) = 0 at both
				}
				if y[i] != wy || g0[i] != wd || (kind == SwiGLU && g1[i] != wb) {
					t.Errorf("%s %v at x=%g: y=%g da=%g db=%g, want %g %g %g", c.name, kind, p.x, y[i], g0[i], g1[i], wy, wd, wb)
				}
			}
		}
	}
}

// saturatedRun runs kind's forward and the backward of each input on a, b, dy and returns
// them widened to float64 (g1 is zeros for one-input kinds).
func saturatedRun[F float32 | float64](t *testing.T, kind Activation, a, b, dy []F) (y, g0, g1 []float64) {
	t.Helper()
	n := len(a)
	yv := make([]F, n)
	if err := ActivationForward(kind, yv, a, b); err != nil {
		t.Fatal(err)
	}
	var gs [2][]float64
	for w := 0; w < kind.Inputs(); w++ {
		g := make([]F, n)
		if err := ActivationBackward(kind, w, g, a, b, yv, dy); err != nil {
			t.Fatal(err)
		}
		gs[w] = to64(g)
	}
	if gs[1] == nil {
		gs[1] = make([]float64, n) // no input b: zeros, so callers index it freely
	}
	return to64(yv), gs[0], gs[1]
}

// TestGELUBackwardInfinite: GELU's gradient at x = ±Inf is dy·1 and dy·0, as the float64 loop
// and the CUDA twin compute it (tanh has saturated: the second term is skipped). The float32
// path with the vector sigmoid gave NaN at both: its second term multiplied 2x = ±Inf by a
// sigmoid of 0.
func TestGELUBackwardInfinite(t *testing.T) {
	inf := math.Inf(1)
	a, dy, want := []float64{inf, -inf, inf}, []float64{1, 1, -3}, []float64{1, 0, -3}
	for _, f32 := range []bool{true, false} {
		var got []float64
		if f32 {
			out := make([]float32, len(a))
			if err := ActivationBackward(GELU, 0, out, to32(a), nil, nil, to32(dy)); err != nil {
				t.Fatal(err)
			}
			got = to64(out)
		} else {
			got = make([]float64, len(a))
			if err := ActivationBackward(GELU, 0, got, a, nil, nil, dy); err != nil {
				t.Fatal(err)
			}
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("float32=%v: GELU gradient at x=%v with dy=%v is %v, want %v", f32, a[i], dy[i], got[i], want[i])
			}
		}
	}
}
