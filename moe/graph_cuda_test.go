//go:build gomoecuda

package moe

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/train"
)

// TestLayerStepGraphReplayGPU: a whole training step of the layer (forward, backward, an SGD
// update of every weight) captured once as a CUDA graph (device.Engine.Capture) and replayed
// with a new input uploaded before each replay gives bitwise the outputs and weights of the
// same steps run eagerly, step after step. Dropless and capacity layers, with shared experts,
// bfloat16 and float32.
func TestLayerStepGraphReplayGPU(t *testing.T) {
	eng := engine(t)
	cases := []Config{
		{Hidden: 64, FFN: 96, Experts: 8, TopK: 2, Dtype: bfloat16.Dtype, AuxLossCoeff: 0.01, ZLossCoeff: 1e-3, Seed: 51},
		{Hidden: 64, FFN: 96, Experts: 8, TopK: 2, CapacityFactor: 1.0, SharedFFN: 32, Dtype: bfloat16.Dtype, Seed: 52},
		{Hidden: 64, FFN: 96, Experts: 16, TopK: 4, Dtype: tensor.Float32, AuxLossCoeff: 0.01, Seed: 53},
	}
	const T, steps = 256, 50
	for i, cfg := range cases {
		t.Run(fmt.Sprintf("%d-%v", i, cfg.Dtype), func(t *testing.T) {
			rigs := [2]*devRig{newRig(t, cfg, T, 11), newRig(t, cfg, T, 11)}
			var ms [2]G.VM
			var opts [2]*train.SGD
			for k, r := range rigs {
				if err := eng.Bind(append(G.Nodes{r.target}, r.params...)...); err != nil {
					t.Fatal(err)
				}
				ms[k] = G.NewTapeMachine(r.g, G.WithEngine(eng))
				defer ms[k].Close()
				opts[k] = &train.SGD{LR: 1e-5} // the cost sums over T·H outputs: a larger rate diverges
				defer opts[k].Release()
			}
			input := func(s int) *tensor.Dense {
				rng := rand.New(rand.NewSource(int64(100 + s)))
				xs := make([]float64, T*cfg.Hidden)
				for j := range xs {
					xs[j] = rng.NormFloat64()
				}
				return denseOf(cfg.Dtype, xs, T, cfg.Hidden)
			}
			vgs := func(r *devRig) []G.ValueGrad {
				var out []G.ValueGrad
				for _, p := range r.l.Learnables() {
					out = append(out, p)
				}
				return out
			}
			bitsOf := func(v G.Value) []uint64 {
				h := hostF64(t, v)
				b := make([]uint64, len(h))
				for j, f := range h {
					b[j] = math.Float64bits(f)
				}
				return b
			}
			same := func(what string, s int, a, b G.Value) {
				t.Helper()
				x, y := bitsOf(a), bitsOf(b)
				for j := range x {
					if x[j] != y[j] {
						t.Fatalf("step %d: %s[%d] replayed %v, eager %v", s, what, j, math.Float64frombits(y[j]), math.Float64frombits(x[j]))
					}
				}
			}
			var graph interface {
				Replay() error
				Nodes() int
				Close() error
			}
			defer func() {
				if graph != nil {
					if err := graph.Close(); err != nil {
						t.Error(err)
					}
				}
			}()
			for s := 0; s < steps; s++ {
				in := input(s)
				for _, r := range rigs {
					if err := eng.Upload(r.x.Value().(tensor.Tensor), in); err != nil {
						t.Fatal(err)
					}
				}
				// The eager run.
				var yEager []uint64
				rigs[0].clearReads()
				if err := train.Step(ms[0], opts[0], rigs[0].l.Learnables(), func() error {
					yEager = bitsOf(rigs[0].y.Value())
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				// The graph run: eager at step 0 (the pool, the optimiser's master copies and
				// the GEMM parameters are made), captured at step 1 and replayed from then on.
				r := rigs[1]
				var yGraph []uint64
				switch {
				case s == 0:
					r.clearReads()
					if err := train.Step(ms[1], opts[1], r.l.Learnables(), func() error {
						yGraph = bitsOf(r.y.Value())
						return nil
					}); err != nil {
						t.Fatal(err)
					}
				default:
					if s == 1 {
						r.clearReads()
						g, err := eng.Capture(func() error {
							if err := ms[1].RunAll(); err != nil {
								return err
							}
							return opts[1].Step(vgs(r))
						})
						ms[1].Reset()
						if err != nil {
							t.Fatalf("capture: %v", err)
						}
						graph = g
						t.Logf("captured %d device operations", g.Nodes())
					}
					if err := graph.Replay(); err != nil {
						t.Fatal(err)
					}
					yGraph = bitsOf(r.y.Value()) // the value bound in the capture, rewritten by each replay
				}
				if err := eng.Status(); err != nil {
					t.Fatal(err)
				}
				for j := range yEager {
					if yEager[j] != yGraph[j] {
						t.Fatalf("step %d: Y[%d] replayed %v, eager %v", s, j, math.Float64frombits(yGraph[j]), math.Float64frombits(yEager[j]))
					}
				}
				for k, p := range rigs[0].l.Learnables() {
					same(p.Name(), s, p.Value(), r.l.Learnables()[k].Value())
				}
			}
		})
	}
}
