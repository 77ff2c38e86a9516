package kernels

import (
	"fmt"
	"math/rand"
	"testing"
)

// BenchmarkGroupedMatMul times the forward, row-backward and weight-backward kernels in
// float32 at small MoE shapes and reports GFLOP/s (2·rows·H·N per kernel).
func BenchmarkGroupedMatMul(b *testing.B) {
	shapes := []struct{ T, K, E, H, N int }{
		{1024, 2, 8, 128, 256},
		{4096, 8, 64, 256, 128},
	}
	for _, s := range shapes {
		rng := rand.New(rand.NewSource(1))
		g := Geometry{T: s.T, K: s.K, E: s.E, A: 1}
		ids := gmmRandIDs(rng, s.T, s.K, s.E, -1)
		flat := make([]int32, g.PlanLen())
		if err := BuildPlan[float32](flat, g, ids, nil); err != nil {
			b.Fatal(err)
		}
		p, _ := g.View(flat)
		R := g.Rows()
		xp := gmmConv[float32](gmmRand(rng, R*s.H))
		w := gmmConv[float32](gmmRand(rng, s.E*s.H*s.N))
		dz := gmmConv[float32](gmmRand(rng, R*s.N))
		z, dxp, dw := make([]float32, R*s.N), make([]float32, R*s.H), make([]float32, s.E*s.H*s.N)
		flops := 2 * float64(s.T*s.K) * float64(s.H) * float64(s.N)
		for _, k := range []struct {
			name string
			f    func() error
		}{
			{"fwd", func() error { return GroupedMatMulForward(z, xp, w, p, s.H, s.N) }},
			{"bwd_rows", func() error { return GroupedMatMulBackwardRows(dxp, dz, w, p, s.H, s.N, false) }},
			{"bwd_weights", func() error { return GroupedMatMulBackwardWeights(dw, xp, dz, p, s.H, s.N, false) }},
		} {
			name := fmt.Sprintf("T%d_K%d_E%d_H%d_N%d/%s", s.T, s.K, s.E, s.H, s.N, k.name)
			b.Run(name, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if err := k.f(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
