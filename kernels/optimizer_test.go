package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/gomoe/gomoe/bfloat16"
)

// TestAdamUpdateBF16Chunks: the bfloat16 update, which widens the gradient a chunk at a time,
// equals widening it all first and running the float32 AdamUpdate on the master copy, for
// lengths around the chunk size.
func TestAdamUpdateBF16Chunks(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, n := range []int{1, 1023, 1024, 1025, 3001} {
		w32 := make([]float32, n)
		g := make([]bfloat16.BFloat16, n)
		for i := range w32 {
			w32[i] = float32(rng.NormFloat64())
			g[i] = bfloat16.FromFloat32(float32(rng.NormFloat64()))
		}
		p := make([]bfloat16.BFloat16, n)
		m, v := make([]float32, n), make([]float32, n)
		refW, refM, refV := append([]float32(nil), w32...), make([]float32, n), make([]float32, n)
		for step := 1; step <= 2; step++ {
			c1, c2 := 1-math.Pow(0.9, float64(step)), 1-math.Pow(0.999, float64(step))
			if err := AdamUpdateBF16(p, g, w32, m, v, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01); err != nil {
				t.Fatal(err)
			}
			g32 := make([]float32, n)
			for i, x := range g {
				g32[i] = x.Float32()
			}
			if err := AdamUpdate(refW, g32, refM, refV, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01); err != nil {
				t.Fatal(err)
			}
		}
		for i := range refW {
			if w32[i] != refW[i] || m[i] != refM[i] || v[i] != refV[i] || p[i] != bfloat16.FromFloat32(refW[i]) {
				t.Fatalf("n=%d: element %d differs: w %v/%v m %v/%v v %v/%v", n, i, w32[i], refW[i], m[i], refM[i], v[i], refV[i])
			}
		}
	}
}

// TestAdamUpdateSplit: AdamUpdate over a length that splits into several parallel blocks (and,
// on amd64, runs the AVX kernel with a Go tail in each) equals the same formula run serially in
// Go, bitwise, on every element, also around gradients whose square overflows (the kernel
// leaves their group of 8 to the Go loop and takes up the rest again).
func TestAdamUpdateSplit(t *testing.T) {
	rng := rand.New(rand.NewSource(23))
	n := 3*actBlock + 5
	p, g, m, v := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range p {
		p[i], g[i], m[i], v[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64()), float32(rng.NormFloat64()*0.1), float32(rng.Float64()*0.1)
	}
	g[5], g[1000], g[2*actBlock+9], g[n-2] = 2e19, -3e19, 4e19, 2e19
	wp, wm, wv := append([]float32(nil), p...), append([]float32(nil), m...), append([]float32(nil), v...)
	const lr, b1, b2, eps, c1, c2, wd = 1e-3, 0.9, 0.999, 1e-8, 0.1, 0.001, 0.01
	if err := AdamUpdate(p, g, m, v, lr, b1, b2, eps, c1, c2, wd); err != nil {
		t.Fatal(err)
	}
	for i := range wp {
		x, gi := wp[i], g[i]
		mi := float32(float32(float32(b1)*wm[i]) + float32(float32(1-b1)*gi))
		vi := float32(float32(float32(b2)*wv[i]) + float32(float32(1-b2)*float32(gi*gi)))
		den := float32(math.Sqrt(float64(float32(vi / float32(c2)))))
		if math.IsInf(float64(gi*gi), 0) {
			vi = float32(float32(float32(b2)*wv[i]) + float32(float32(float32(1-b2)*gi)*gi))
			den = float32(float32(math.Sqrt(float64(vi))) / float32(math.Sqrt(float64(float32(c2)))))
		}
		step := float32(float32(mi/float32(c1)) / float32(den+float32(eps)))
		want := x - float32(float32(lr)*float32(step+float32(float32(wd)*x)))
		if p[i] != want || m[i] != mi || v[i] != vi {
			t.Fatalf("[%d]: p, m, v = %v %v %v, want %v %v %v", i, p[i], m[i], v[i], want, mi, vi)
		}
	}
}

// TestAdamHugeGradient: one gradient beyond √max (g·g overflows, but not (1−b2)·g·g) no longer
// makes v infinite and freezes the weight: over four steps (the first with g = ±2·10¹⁹ in
// float32, ±10¹⁵⁵ in float64 at some elements, then ordinary ones) every element follows the float64 formula within a few
// float32 (10⁻¹² for float64) ulps, in the AVX kernel's groups of 8 and in the Go tail alike. The
// float64 reference runs the huge elements on g/s with eps/s (s = 10¹⁵⁰), which Adam's step does
// not notice, so nothing overflows there either.
func TestAdamHugeGradient(t *testing.T) {
	for _, at := range [][]int{{3, 12, 17}, {12}, {17}} { // AVX groups (the first, the second), the tail
		t.Run(fmt.Sprint("float32", at), func(t *testing.T) { adamHugeCheck[float32](t, at, 2e19, 1, 2e-6) })
		t.Run(fmt.Sprint("float64", at), func(t *testing.T) { adamHugeCheck[float64](t, at, 1e155, 1e150, 1e-12) })
	}
}

func adamHugeCheck[F float32 | float64](t *testing.T, at []int, huge, s, tol float64) {
	const n, lr, b1, b2, eps, wd = 19, 1e-3, 0.9, 0.999, 1e-8, 0.01
	hugeAt := map[int]float64{}
	for j, i := range at {
		hugeAt[i] = huge * float64(1-2*(j%2))
	}
	rng := rand.New(rand.NewSource(5))
	p, m, v := make([]F, n), make([]F, n), make([]F, n)
	rp, rm, rv, sc := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	for i := range p {
		p[i] = F(rng.NormFloat64())
		rp[i], sc[i] = float64(p[i]), 1
		if _, ok := hugeAt[i]; ok {
			sc[i] = s
		}
	}
	for step := 1; step <= 4; step++ {
		c1, c2 := 1-math.Pow(b1, float64(step)), 1-math.Pow(b2, float64(step))
		g := make([]F, n)
		for i := range g {
			g[i] = F(0.5 + 0.1*float64(i))
			if h, ok := hugeAt[i]; ok && step == 1 {
				g[i] = F(h)
			}
		}
		must(t, AdamUpdate(p, g, m, v, lr, b1, b2, eps, c1, c2, wd))
		for i := range rp {
			gi := float64(g[i]) / sc[i]
			rm[i] = b1*rm[i] + (1-b1)*gi
			rv[i] = b2*rv[i] + (1-b2)*gi*gi
			rp[i] -= lr * ((rm[i]/c1)/(math.Sqrt(rv[i]/c2)+eps/sc[i]) + wd*rp[i])
			if d := math.Abs(float64(p[i]) - rp[i]); !(d <= tol*math.Abs(rp[i])) {
				t.Fatalf("step %d: p[%d] = %v, want %v (v = %v)", step, i, p[i], rp[i], v[i])
			}
		}
	}
}

// TestSGDUpdateHand checks SGDUpdate and SGDUpdateBF16 against values computed by hand,
// p − lr·(g + wd·p), on dyadic inputs whose results are exact in float32, float64 and
// bfloat16 (so the expected values do not depend on rounding).
func TestSGDUpdateHand(t *testing.T) {
	p := []float64{1, -2, 0.5, 4}
	g := []float64{0.5, 1, -0.25, 0}
	const lr, wd = 0.5, 0.25
	// 1 − 0.5·(0.5 + 0.25) = 0.625; −2 − 0.5·(1 − 0.5) = −2.25;
	// 0.5 − 0.5·(−0.25 + 0.125) = 0.5625; 4 − 0.5·(0 + 1) = 3.5.
	want := []float64{0.625, -2.25, 0.5625, 3.5}
	// Without weight decay: p − lr·g.
	wantNoWD := []float64{0.75, -2.5, 0.625, 4}

	for _, c := range []struct {
		wd   float64
		want []float64
	}{{wd, want}, {0, wantNoWD}} {
		p64 := append([]float64(nil), p...)
		if err := SGDUpdate(p64, g, lr, c.wd); err != nil {
			t.Fatal(err)
		}
		p32, g32 := make([]float32, len(p)), make([]float32, len(g))
		for i := range p {
			p32[i], g32[i] = float32(p[i]), float32(g[i])
		}
		if err := SGDUpdate(p32, g32, lr, c.wd); err != nil {
			t.Fatal(err)
		}
		pb, gb, w32 := make([]bfloat16.BFloat16, len(p)), make([]bfloat16.BFloat16, len(g)), make([]float32, len(p))
		for i := range p {
			pb[i], gb[i], w32[i] = bfloat16.FromFloat32(float32(p[i])), bfloat16.FromFloat32(float32(g[i])), float32(p[i])
		}
		if err := SGDUpdateBF16(pb, gb, w32, lr, c.wd); err != nil {
			t.Fatal(err)
		}
		for i, w := range c.want {
			if p64[i] != w || float64(p32[i]) != w || float64(w32[i]) != w || float64(pb[i].Float32()) != w {
				t.Errorf("wd=%g [%d]: float64 %v, float32 %v, bf16 master %v, bf16 %v; want %v", c.wd, i, p64[i], p32[i], w32[i], pb[i].Float32(), w)
			}
		}
	}

	// The step reads the float32 master copy, not the bfloat16 weights, and the master copy
	// keeps the bits bfloat16 cannot hold: 1.5 + 2⁻¹⁰ − 0.5·0.5 = 1.25 + 2⁻¹⁰ in w32, which
	// rounds to 1.25 in bfloat16 (8 significant bits).
	pb := []bfloat16.BFloat16{bfloat16.FromFloat32(3)}
	w32 := []float32{1.5 + 1.0/1024}
	gb := []bfloat16.BFloat16{bfloat16.FromFloat32(0.5)}
	if err := SGDUpdateBF16(pb, gb, w32, 0.5, 0); err != nil {
		t.Fatal(err)
	}
	if w32[0] != 1.25+1.0/1024 || pb[0].Float32() != 1.25 {
		t.Errorf("master step: master %v, bf16 %v; want %v and 1.25", w32[0], pb[0].Float32(), 1.25+1.0/1024)
	}

	if err := SGDUpdateBF16(pb, gb, make([]float32, 2), 0.5, 0); err == nil {
		t.Error("SGDUpdateBF16 with a master copy of another length: no error")
	}
}

// TestAdamOverflowingSquareMatchesLoop: AdamUpdate (the AVX groups on amd64) gives the Go loop's
// bits where g·g overflows but v/c2 does not (v = −Inf: the loop's ((1−b2)·g)·g keeps v at −Inf,
// while (1−b2)·(g·g) = +Inf would make it NaN), in the first group, a later one and the tail.
func TestAdamOverflowingSquareMatchesLoop(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, tc := range []struct {
		g, v float32
	}{
		{-5.8200955e19, -inf},
		{3e19, -inf},
		{2e19, float32(math.NaN())},
	} {
		for _, at := range []int{0, 5, 9, 16} {
			const n = 17
			p, g, m, v := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
			for i := range p {
				p[i], g[i], m[i], v[i] = 0.5+float32(i), 0.25*float32(i), 0.125, 1
			}
			g[at], v[at] = tc.g, tc.v
			wp, wm, wv := append([]float32(nil), p...), append([]float32(nil), m...), append([]float32(nil), v...)
			const lr, b1, b2, eps, c1, c2, wd = 1e-2, 0.9, 0.999, 1e-8, 0.1, 0.001, 0.01
			must(t, AdamUpdate(p, g, m, v, lr, b1, b2, eps, c1, c2, wd))
			adamElems(wp, g, wm, wv, float32(lr), float32(b1), float32(b2), float32(eps), float32(c1), float32(c2), float32(wd), float32(1-b1), float32(1-b2))
			for i := range p {
				if math.Float32bits(v[i]) != math.Float32bits(wv[i]) || math.Float32bits(m[i]) != math.Float32bits(wm[i]) ||
					(math.Float32bits(p[i]) != math.Float32bits(wp[i]) && !(p[i] != p[i] && wp[i] != wp[i])) {
					t.Fatalf("g=%v v=%v at %d: element %d: p, m, v = %v, %v, %v, want %v, %v, %v", tc.g, tc.v, at, i, p[i], m[i], v[i], wp[i], wm[i], wv[i])
				}
			}
		}
	}
}
