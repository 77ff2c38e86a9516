package moe

import (
	"math/rand"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/reftest"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func TestJitter(t *testing.T) {
	const T, H = 6, 3
	cfg := Config{Hidden: H, FFN: 2, Experts: 3, TopK: 2, Dtype: tensor.Float64, Seed: 4}
	rng := rand.New(rand.NewSource(7))
	x, rnd := randVec(rng, T*H), randVec(rng, T*H)
	_, plain := runLayer(t, cfg, T, x, rnd, nil)
	cfg.JitterEps = 1e-3
	_, j1 := runLayer(t, cfg, T, x, rnd, nil)
	_, j2 := runLayer(t, cfg, T, x, rnd, nil)
	if d := reftest.MaxDiff(j1.y, j2.y); d != 0 {
		t.Errorf("same seed, same graph: outputs differ by %g", d)
	}
	d := reftest.MaxDiff(j1.y, plain.y)
	if d == 0 || d > 0.05 {
		t.Errorf("jitter 1e-3 changed the output by %g, want a small non-zero change", d)
	}
}

// TestJitterNoiseIndependentOfWeights: the jitter noise is a stream of its own, not the one
// New draws the weights from. The noise of the first run used to be math/rand's source
// seeded with Config.Seed, the router's own source (noise[i] > 1 exactly where router[i] < 0
// until the first rejected normal draw: the top bit of each draw sets both), and the noise of
// a layer's n-th run was the weight stream of a layer seeded Seed+n. The references are
// math/rand's streams themselves.
func TestJitterNoiseIndependentOfWeights(t *testing.T) {
	const T, H, E, eps = 64, 16, 16, 0.1
	cfg := Config{Hidden: H, FFN: 2, Experts: E, TopK: 2, Dtype: tensor.Float64, JitterEps: eps, Seed: 11}
	g := G.NewGraph()
	l, err := New(g, "moe", cfg)
	if err != nil {
		t.Fatal(err)
	}
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("x"), G.WithValue(denseOf(tensor.Float64, make([]float64, T*H), T, H)))
	if _, err := l.Forward(x); err != nil {
		t.Fatal(err)
	}
	var noiseN *G.Node
	for _, n := range g.AllNodes() {
		if n.Op() != nil && strings.HasPrefix(n.Op().String(), "op.JitterNoise") {
			noiseN = n
		}
	}
	if noiseN == nil {
		t.Fatal("no JitterNoise node in the layer's graph")
	}
	var nv G.Value
	G.Read(noiseN, &nv)
	m := G.NewTapeMachine(g)
	defer m.Close()
	for run := int64(0); run < 3; run++ {
		if err := m.RunAll(); err != nil {
			t.Fatal(err)
		}
		m.Reset()
		noise := f64s(nv)
		for i, v := range noise {
			if !(v >= 1-eps && v < 1+eps) {
				t.Fatalf("run %d: noise[%d] = %v, outside [1-ε, 1+ε)", run, i, v)
			}
		}
		// The weight stream of a layer seeded Seed+run, as the noise would draw it.
		for _, s := range []int64{cfg.Seed, cfg.Seed + run} {
			if run == 0 && s != cfg.Seed {
				continue
			}
			rng := rand.New(rand.NewSource(s))
			same := 0
			for _, v := range noise {
				if v == 1-eps+2*eps*rng.Float64() {
					same++
				}
			}
			if same > 0 {
				t.Errorf("run %d: %d noise values are math/rand's stream of seed %d, the weights' stream of a layer with that Seed", run, same, s)
			}
		}
	}
}
