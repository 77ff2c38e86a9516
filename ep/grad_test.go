package ep

import (
	"fmt"
	"math"
	"testing"

	"gorgonia.org/tensor"
)

// TestExpertParallelLispMachine runs the expert-parallel layer through the lisp machine, whose
// gradients come from the ops' DoDiff, and compares with the single-rank layer on the tape
// machine (SymDiff).
func TestExpertParallelLispMachine(t *testing.T) {
	for _, c := range layerCases {
		t.Run(c.name, func(t *testing.T) {
			in := makeInputs(c, 2)
			want, err := singleRank(c, in, tensor.Float64, tape)
			if err != nil {
				t.Fatal(err)
			}
			got, err := expertParallel(c, in, tensor.Float64, lisp)
			if err != nil {
				t.Fatal(err)
			}
			eq := closeTo(0)
			eq(t, "y", got.y, want.y)
			eq(t, "dx", got.dx, want.dx)
			eq(t, "dprobs", got.dprobs, want.dprobs)
			eq(t, "dw1", got.dw1, want.dw1)
			eq(t, "dw2", got.dw2, want.dw2)
		})
	}
}

// TestExpertParallelGradCheck compares the gradients of the expert-parallel layer (both
// machines) with a float64 central difference of the total cost Σ_ranks Σ y⊙rw, taken over
// every input of every rank.
func TestExpertParallelGradCheck(t *testing.T) {
	cases := []layerCase{
		{name: "N2-ffn", N: 2, T: 3, K: 2, E: 4, H: 3, F: 2, A: 2, drop: 0.15},
		{name: "N4-rowwise", N: 4, T: 2, K: 2, E: 4, H: 2, A: 1, rowwise: true},
	}
	for _, c := range cases {
		for _, mk := range []machineKind{tape, lisp} {
			t.Run(fmt.Sprintf("%s/machine%d", c.name, mk), func(t *testing.T) {
				in := makeInputs(c, 3)
				res, err := expertParallel(c, in, tensor.Float64, mk)
				if err != nil {
					t.Fatal(err)
				}
				cost := func() float64 {
					r, err := expertParallel(c, in, tensor.Float64, tape)
					if err != nil {
						t.Fatal(err)
					}
					var s float64
					for i, y := range r.y {
						s += y * in.rw[i]
					}
					return s
				}
				params := []struct {
					name string
					v    []float64
					grad []float64
				}{{"x", in.x, res.dx}, {"probs", in.probs, res.dprobs}}
				if !c.rowwise {
					params = append(params, struct {
						name string
						v    []float64
						grad []float64
					}{"w1", in.w1, res.dw1}, struct {
						name string
						v    []float64
						grad []float64
					}{"w2", in.w2, res.dw2})
				}
				const h = 1e-6
				for _, p := range params {
					for i := range p.v {
						old := p.v[i]
						p.v[i] = old + h
						up := cost()
						p.v[i] = old - h
						down := cost()
						p.v[i] = old
						num := (up - down) / (2 * h)
						if math.Abs(num-p.grad[i]) > 1e-6*math.Max(1, math.Abs(num)) {
							t.Errorf("d cost/d %s[%d] = %v, central difference %v", p.name, i, p.grad[i], num)
						}
					}
				}
			})
		}
	}
}
