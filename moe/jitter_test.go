package moe

import (
	"math/rand"
	"testing"

	"github.com/gomoe/gomoe/internal/reftest"
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
