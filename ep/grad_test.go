package ep

import (
	"fmt"
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
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
						if !(math.Abs(num-p.grad[i]) <= 1e-6*math.Max(1, math.Abs(num))) {
							t.Errorf("d cost/d %s[%d] = %v, central difference %v", p.name, i, p.grad[i], num)
						}
					}
				}
			})
		}
	}
}

// TestLispAccumulates: on the lisp machine the exchanges' DoDiff add into the input's gradient
// (DoDiff's contract), so an input feeding two dispatches, or two combines, gets the sum of
// both. Two ranks, two tokens each, top-1 over four experts, no drops, H = 1, two plans p, p2:
//
//	cost = Σ_ranks Σ DispatchRows(x, p) + Σ DispatchRows(x, p2)          → dx = 2 for every token
//	cost = Σ_ranks Σ CombineRows(r, p) + Σ CombineRows(r, p2), r = DispatchRows(x, p)·c → dx = 2·c
//
// where c = 3 is a constant; overwriting the gradient in place of adding gives half.
func TestLispAccumulates(t *testing.T) {
	ids := [][]int32{{3, 0}, {1, 2}}
	// ids2 routes other tokens to each rank but as many (two) to each: a second plan of the
	// same row counts. Two uses of one plan would be one node (Gorgonia shares equal nodes).
	ids2 := [][]int32{{0, 3}, {2, 1}}
	xs := [][]float64{{1, 10}, {100, 1000}}
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		for _, combine := range []bool{false, true} {
			name := fmt.Sprintf("%v/combine=%v", dt, combine)
			grp, err := NewGroup(2)
			if err != nil {
				t.Fatal(err)
			}
			dx := make([][]float64, 2)
			err = grp.Run(func(c Communicator) error {
				r := c.Rank()
				g := G.NewGraph()
				idn := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 1), G.WithName("ids"), G.WithValue(tensor.New(tensor.WithShape(2, 1), tensor.WithBacking(append([]int32(nil), ids[r]...)))))
				var xv *tensor.Dense
				if dt == tensor.Float64 {
					xv = tensor.New(tensor.WithShape(2, 1), tensor.WithBacking(append([]float64(nil), xs[r]...)))
				} else {
					xv = tensor.New(tensor.WithShape(2, 1), tensor.WithBacking([]float32{float32(xs[r][0]), float32(xs[r][1])}))
				}
				x := G.NewMatrix(g, dt, G.WithShape(2, 1), G.WithName("x"), G.WithValue(xv))
				plan, err := NewPlan(idn, nil, kernels.Geometry{E: 4, A: 1}, c)
				if err != nil {
					return err
				}
				idn2 := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 1), G.WithName("ids2"), G.WithValue(tensor.New(tensor.WithShape(2, 1), tensor.WithBacking(append([]int32(nil), ids2[r]...)))))
				plan2, err := NewPlan(idn2, nil, kernels.Geometry{E: 4, A: 1}, c)
				if err != nil {
					return err
				}
				var a, b *G.Node
				if !combine {
					if a, err = DispatchRows(x, plan); err != nil {
						return err
					}
					if b, err = DispatchRows(x, plan2); err != nil {
						return err
					}
				} else {
					xr, err := DispatchRows(x, plan)
					if err != nil {
						return err
					}
					three := G.NewConstant(3.0)
					if dt == tensor.Float32 {
						three = G.NewConstant(float32(3))
					}
					rr, err := G.Mul(xr, three)
					if err != nil {
						return err
					}
					if a, err = CombineRows(rr, plan); err != nil {
						return err
					}
					if b, err = CombineRows(rr, plan2); err != nil {
						return err
					}
				}
				sa, err := G.Sum(a)
				if err != nil {
					return err
				}
				sb, err := G.Sum(b)
				if err != nil {
					return err
				}
				if _, err := G.Add(sa, sb); err != nil {
					return err
				}
				m := G.NewLispMachine(g)
				defer m.Close()
				if err := m.RunAll(); err != nil {
					return err
				}
				gv, err := x.Grad()
				if err != nil {
					return err
				}
				switch d := gv.Data().(type) {
				case []float64:
					dx[r] = append([]float64(nil), d...)
				case []float32:
					dx[r] = []float64{float64(d[0]), float64(d[1])}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			want := 2.0
			if combine {
				want = 6
			}
			for r := range dx {
				if len(dx[r]) != 2 || dx[r][0] != want || dx[r][1] != want {
					t.Errorf("%s: rank %d dx = %v, want [%v %v]", name, r, dx[r], want, want)
				}
			}
		}
	}
}
