package kernels

import (
	"math"
	"math/rand"
	randv2 "math/rand/v2"
	"runtime"
	"testing"
)

// f32 is float32 under another name: the kernels' type switches do not catch it, so a call
// with []f32 runs the Go loops where []float32 runs the vector kernels.
type f32 float32

func asF32(v []float32) []f32 {
	out := make([]f32, len(v))
	for i, x := range v {
		out[i] = f32(x)
	}
	return out
}

func sameBits32(t *testing.T, what string, got []float32, want []f32) {
	t.Helper()
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(float32(want[i])) {
			t.Fatalf("%s[%d]: vector path %v, Go loops %v", what, i, got[i], want[i])
		}
	}
}

// rmsRef64 is RMSNorm and its gradients in float64, plain loops in index order: the
// independent reference. It returns y, dx and dgain and, for dx, the size of the two terms
// whose difference dx is (their cancellation sets dx's attainable accuracy).
func rmsRef64(x, gain, dy []float32, eps float64) (y, dx, dgain, terms []float64) {
	cols := len(gain)
	y, dx, terms = make([]float64, len(x)), make([]float64, len(x)), make([]float64, len(x))
	dgain = make([]float64, cols)
	for o := 0; o < len(x); o += cols {
		var ss, dot float64
		for j := 0; j < cols; j++ {
			ss += float64(x[o+j]) * float64(x[o+j])
			dot += float64(gain[j]) * float64(dy[o+j]) * float64(x[o+j])
		}
		r := 1 / math.Sqrt(ss/float64(cols)+eps)
		c := r * r * r * dot / float64(cols)
		for j := 0; j < cols; j++ {
			a, b := r*float64(gain[j])*float64(dy[o+j]), float64(x[o+j])*c
			y[o+j] = float64(x[o+j]) * r * float64(gain[j])
			dx[o+j], terms[o+j] = a-b, math.Abs(a)+math.Abs(b)
			dgain[j] += float64(dy[o+j]) * float64(x[o+j]) * r
		}
	}
	return y, dx, dgain, terms
}

// rmsTol is the accuracy of the float32 RMSNorm kernels against rmsRef64: half a float32 ulp
// for the final rounding plus float64 roundings (relative 2⁻⁴⁴ of the terms, which covers sums
// of up to a few thousand terms).
func rmsTol(want, terms float64) float64 {
	return math.Abs(want)*0x1p-24 + terms*0x1p-44
}

func TestRMSNormVector(t *testing.T) {
	cases := []struct {
		name       string
		rows, cols int
		scale, eps float64
	}{
		{"cols 1", 5, 1, 1, 1e-6},
		{"cols 7", 9, 7, 3, 1e-6},
		{"cols 8", 9, 8, 1, 0},
		{"cols 9", 70, 9, 0.01, 1e-5},
		{"cols 64", 200, 64, 1, 1e-6},
		{"cols 128 many rows", 3000, 128, 10, 1e-6},
		{"cols 1000", 7, 1000, 1e3, 1e-6},
		{"cols 4099", 3, 4099, 1e-3, 1e-8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(c.rows*7 + c.cols)))
			n := c.rows * c.cols
			x, dy, gain := make([]float32, n), make([]float32, n), make([]float32, c.cols)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * c.scale)
				dy[i] = float32(rng.NormFloat64())
			}
			for j := range gain {
				gain[j] = float32(1 + 0.5*rng.NormFloat64())
			}
			y, dx, dg := make([]float32, n), make([]float32, n), make([]float32, c.cols)
			if err := firstErr(RMSNorm(y, x, gain, c.eps), RMSNormBackward(dx, x, gain, dy, c.eps), RMSNormGainGrad(dg, x, dy, c.eps)); err != nil {
				t.Fatal(err)
			}
			wy, wdx, wdg, terms := rmsRef64(x, gain, dy, c.eps)
			for i := range y {
				if d := math.Abs(float64(y[i]) - wy[i]); d > rmsTol(wy[i], math.Abs(wy[i])) {
					t.Fatalf("y[%d] = %v, want %v", i, y[i], wy[i])
				}
				if d := math.Abs(float64(dx[i]) - wdx[i]); d > rmsTol(wdx[i], terms[i]) {
					t.Fatalf("dx[%d] = %v, want %v (terms %g)", i, dx[i], wdx[i], terms[i])
				}
			}
			for j := range dg {
				var abs float64 // Σ |terms| of column j
				for o := j; o < n; o += c.cols {
					abs += math.Abs(float64(dy[o]) * float64(x[o]))
				}
				abs *= 4 / math.Max(1e-30, c.scale) // r ≈ 1/scale; generous
				if d := math.Abs(float64(dg[j]) - wdg[j]); d > rmsTol(wdg[j], abs) {
					t.Fatalf("dgain[%d] = %v, want %v", j, dg[j], wdg[j])
				}
			}
			// The vector kernels give the Go loops' bits ...
			gy, gdx, gdg := make([]f32, n), make([]f32, n), make([]f32, c.cols)
			X, DY, G := asF32(x), asF32(dy), asF32(gain)
			if err := firstErr(RMSNorm(gy, X, G, c.eps), RMSNormBackward(gdx, X, G, DY, c.eps), RMSNormGainGrad(gdg, X, DY, c.eps)); err != nil {
				t.Fatal(err)
			}
			sameBits32(t, "y", y, gy)
			sameBits32(t, "dx", dx, gdx)
			sameBits32(t, "dgain", dg, gdg)
			// ... and one goroutine the bits of several.
			prev := runtime.GOMAXPROCS(1)
			y1, dx1 := make([]f32, n), make([]f32, n)
			err := firstErr(RMSNorm(y1, X, G, c.eps), RMSNormBackward(dx1, X, G, DY, c.eps))
			runtime.GOMAXPROCS(prev)
			if err != nil {
				t.Fatal(err)
			}
			sameBits32(t, "y GOMAXPROCS=1", y, y1)
			sameBits32(t, "dx GOMAXPROCS=1", dx, dx1)
		})
	}
}

// TestDot64Vector checks the vector lanes of dot64 and dot3_64 bitwise against their Go loops
// and against float64 sums in index order.
func TestDot64Vector(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 100, 1024, 4099} {
		rng := rand.New(rand.NewSource(int64(n)))
		a, b, c := make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range a {
			a[i], b[i], c[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64()*100), float32(rng.NormFloat64()*1e-3)
		}
		var want2, want3, abs2, abs3 float64
		for i := range a {
			p := float64(a[i]) * float64(b[i])
			want2, abs2 = want2+p, abs2+math.Abs(p)
			want3, abs3 = want3+p*float64(c[i]), abs3+math.Abs(p*float64(c[i]))
		}
		got2, got3 := dot64(a, b), dot3_64(a, b, c)
		if !(math.Abs(got2-want2) <= abs2*0x1p-48) || !(math.Abs(got3-want3) <= abs3*0x1p-48) {
			t.Fatalf("n=%d: dot64 %v (want %v), dot3_64 %v (want %v)", n, got2, want2, got3, want3)
		}
		A, B, C := asF32(a), asF32(b), asF32(c)
		if g2, g3 := dot64(A, B), dot3_64(A, B, C); g2 != got2 || g3 != got3 {
			t.Fatalf("n=%d: vector dot64 %v, dot3_64 %v; Go loops %v, %v", n, got2, got3, g2, g3)
		}
	}
}

// The RMSNorm kernels (rmsnorm.go) against hand-computed values and, for the gradients, a
// central difference of the forward pass.

func TestRMSNormHandValue(t *testing.T) {
	// Row (3, 4): mean square 12.5; gain (1, 2).
	r := 1 / math.Sqrt(12.5)
	y2 := make([]float32, 2)
	if err := RMSNorm(y2, []float32{3, 4}, []float32{1, 2}, 0); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "RMSNorm", nnF64(y2), []float64{3 * r, 8 * r}, 1e-6)
}

// TestRMSNormGradients checks RMSNormBackward and RMSNormGainGrad against a central
// difference of Σ dy·RMSNorm(x, gain).
func TestRMSNormGradients(t *testing.T) {
	rng := randv2.New(randv2.NewPCG(5, 6))
	const rows, cols, eps = 3, 5, 1e-3
	x, g, dy := nnRand(rng, rows*cols, 1), nnRand(rng, cols, 1), nnRand(rng, rows*cols, 1)
	f := func() float64 {
		y := make([]float64, len(x))
		if err := RMSNorm(y, x, g, eps); err != nil {
			t.Fatal(err)
		}
		var s float64
		for i := range y {
			s += y[i] * dy[i]
		}
		return s
	}
	num := func(v []float64) []float64 {
		out := make([]float64, len(v))
		for i := range v {
			o := v[i]
			v[i] = o + 1e-6
			p := f()
			v[i] = o - 1e-6
			m := f()
			v[i] = o
			out[i] = (p - m) / 2e-6
		}
		return out
	}
	dx := make([]float64, len(x))
	if err := RMSNormBackward(dx, x, g, dy, eps); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "RMSNormBackward", dx, num(x), 1e-7)
	dg := make([]float64, cols)
	if err := RMSNormGainGrad(dg, x, dy, eps); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "RMSNormGainGrad", dg, num(g), 1e-7)
}

func nnRand(rng *randv2.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64() * scale
	}
	return v
}

func nnF64(v []float32) []float64 {
	o := make([]float64, len(v))
	for i, x := range v {
		o[i] = float64(x)
	}
	return o
}
