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
