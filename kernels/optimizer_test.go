package kernels

import (
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
// Go, bitwise, on every element.
func TestAdamUpdateSplit(t *testing.T) {
	rng := rand.New(rand.NewSource(23))
	n := 3*actBlock + 5
	p, g, m, v := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range p {
		p[i], g[i], m[i], v[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64()), float32(rng.NormFloat64()*0.1), float32(rng.Float64()*0.1)
	}
	wp, wm, wv := append([]float32(nil), p...), append([]float32(nil), m...), append([]float32(nil), v...)
	const lr, b1, b2, eps, c1, c2, wd = 1e-3, 0.9, 0.999, 1e-8, 0.1, 0.001, 0.01
	if err := AdamUpdate(p, g, m, v, lr, b1, b2, eps, c1, c2, wd); err != nil {
		t.Fatal(err)
	}
	for i := range wp {
		x, gi := wp[i], g[i]
		mi := float32(float32(float32(b1)*wm[i]) + float32(float32(1-b1)*gi))
		vi := float32(float32(float32(b2)*wv[i]) + float32(float32(1-b2)*float32(gi*gi)))
		step := float32(float32(mi/float32(c1)) / float32(float32(math.Sqrt(float64(float32(vi/float32(c2)))))+float32(eps)))
		want := x - float32(float32(lr)*float32(step+float32(float32(wd)*x)))
		if p[i] != want || m[i] != mi || v[i] != vi {
			t.Fatalf("[%d]: p, m, v = %v %v %v, want %v %v %v", i, p[i], m[i], v[i], want, mi, vi)
		}
	}
}
