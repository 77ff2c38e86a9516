package main

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
)

// TestEvalPartialBatch: in capacity mode the last, partial evaluation batch is scored as a
// batch of its own positions only. The reference scores the full batches and the tail as two
// spans that each split into whole batches. It used to fill the tail up to the batch size with
// rows of zeros, which competed with its tokens for the experts' slots, whose number followed
// the full batch size.
func TestEvalPartialBatch(t *testing.T) {
	for _, drop := range []string{"probs", "position"} {
		cfg := smallConfig(t)
		cfg.Block.Capacity, cfg.Block.Drop = 0.5, drop
		dev, err := trainutil.OpenDevice("cpu")
		if err != nil {
			t.Fatal(err)
		}
		m, err := newModel(G.NewGraph(), cfg, cfg.Batch)
		if err != nil {
			t.Fatal(err)
		}
		const n, batch = 130, 50
		W := cfg.Context
		rng := rand.New(rand.NewPCG(3, 4))
		text := make([]uint8, W+n)
		for i := range text {
			text[i] = uint8(rng.IntN(vocab))
		}
		// evaluator scores size positions in batches of b.
		evaluator := func(size, b int) *forward {
			c := cfg
			c.EvalBatch = b
			ev, err := newEvaluator(c, dev, m, size)
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}
		score := func(from, to, b int) float64 {
			ev := evaluator(to-from, b)
			defer ev.close()
			bits, err := ev.bits(text, from, to)
			if err != nil {
				t.Fatal(err)
			}
			return bits * float64(to-from)
		}
		all := score(W, W+n, batch)
		head, tail := score(W, W+100, batch), score(W+100, W+n, n-100)
		if !(math.Abs(all-(head+tail)) <= 1e-9*all) {
			t.Errorf("drop %s: %v bits in all, want the whole batches' and the tail's alone: %v + %v", drop, all, head, tail)
		}
		// A span whose last batch is not the size the evaluator was built for is scored
		// with the full-size model (its tail model would overflow).
		ev := evaluator(n, batch)
		if _, err := ev.bits(text, W, W+90); err != nil { // a last batch of 40, where the tail model has 30 rows
			t.Errorf("drop %s: a span of another tail: %v", drop, err)
		}
		ev.close()
	}
}
