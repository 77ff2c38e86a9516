package moe

import (
	"math"
	"math/rand"
	"runtime"
	"testing"

	"gorgonia.org/tensor"
)

// TestLayerDeterministic: the output and every gradient are bitwise identical across runs and
// across GOMAXPROCS values, at a shape where the grouped matmul splits segments into row
// blocks and gonum's gemm runs its parallel path.
func TestLayerDeterministic(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const T = 320
	cfg := Config{Hidden: 64, FFN: 128, Experts: 2, TopK: 2, SharedFFN: 64, AuxLossCoeff: 0.01, ZLossCoeff: 0.001, Dtype: tensor.Float32, Seed: 1}
	rng := rand.New(rand.NewSource(1))
	x, rnd := randVec(rng, T*cfg.Hidden), randVec(rng, T*cfg.Hidden)
	run := func(procs int) layerResult {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		_, r := runLayer(t, cfg, T, x, rnd, nil)
		return r
	}
	ref := run(1)
	for _, procs := range []int{1, 2, 3} {
		got := run(procs)
		for _, c := range []struct {
			what   string
			ga, gb []float64
		}{{"y", got.y, ref.y}, {"dx", got.dx, ref.dx}, {"drouter", got.drouter, ref.drouter}, {"dw1", got.dw1, ref.dw1}, {"dw3", got.dw3, ref.dw3}, {"dw2", got.dw2, ref.dw2}, {"dshared1", got.ds1, ref.ds1}} {
			for i := range c.gb {
				if math.Float64bits(c.ga[i]) != math.Float64bits(c.gb[i]) {
					t.Fatalf("GOMAXPROCS=%d: %s[%d] = %v, GOMAXPROCS=1 gave %v", procs, c.what, i, c.ga[i], c.gb[i])
				}
			}
		}
	}
}
