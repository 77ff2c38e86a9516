package main

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
)

// TestEvalPartialBatch: in capacity mode the last, partial evaluation batch is scored as a
// batch of its own images only. The reference scores the full batches and the tail as two
// test sets that each split into whole batches. It used to fill the tail up to the batch size
// with blank rows, which competed with its images for the experts' slots, whose number
// followed the full batch size.
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
		rng := rand.New(rand.NewPCG(3, 4))
		all := &dataset{x: make([]float32, n*pixels), y: make([]uint8, n)}
		for i := range all.x {
			all.x[i] = float32(rng.NormFloat64())
		}
		for i := range all.y {
			all.y[i] = uint8(rng.IntN(classes))
		}
		part := func(lo, hi int) *dataset {
			return &dataset{x: all.x[lo*pixels : hi*pixels], y: all.y[lo:hi]}
		}
		score := func(d *dataset, b int) (right, loss float64) {
			c := cfg
			c.EvalBatch = b
			ev, err := newEvaluator(c, dev, m, d)
			if err != nil {
				t.Fatal(err)
			}
			defer ev.close()
			acc, l, err := ev.eval()
			if err != nil {
				t.Fatal(err)
			}
			return acc * float64(d.len()), l * float64(d.len())
		}
		right, loss := score(all, batch)
		r1, l1 := score(part(0, 100), batch)
		r2, l2 := score(part(100, n), n-100)
		if math.Round(right) != math.Round(r1+r2) || math.Abs(loss-(l1+l2)) > 1e-9*math.Abs(loss) {
			t.Errorf("drop %s: %v right, loss sum %v; want the whole batches' and the tail's alone: %v + %v right, %v + %v",
				drop, right, loss, r1, r2, l1, l2)
		}
	}
}
